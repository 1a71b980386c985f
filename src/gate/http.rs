//! HTTP requests: the read-only middleware of SPEC §3. Reads pass, writes go through the
//! allowlist, and a refused write gets the answer its client understands — 403 JSON for API
//! and LFS clients, a 301 back to the page for browsers, or 503 with `Retry-After` in 503
//! mode.
//!
//! Trade-off: the hot path (a read, or any request on a primary outside maintenance) looks
//! at the method and the mode only and allocates nothing; paths are normalised only for
//! writes, and bodies are parsed only for the two rows that need them. On a secondary the
//! allowlist says what may run locally, and every other write is proxied to the primary
//! outside maintenance mode (GitLab secondaries forward writes) and refused in it.

use super::fence;
use super::form::{self, media_type};
use super::git;
use super::path::{self, NormalPath};
use super::rules::{self, ids, Check, Condition, Method, GRAPHQL_ROUTE};
use super::{
    graphql, lfs, Decision, DenyMode, GateConfig, GateError, GitProtocol, HttpRequest, SiteRole,
    SiteView, Verdict, DEFAULT_MAINTENANCE_MESSAGE, MAX_HEADER_BYTES, MAX_PATH_BYTES,
    READ_ONLY_JSON_BODY, READ_ONLY_MESSAGE,
};
use crate::types::truncate_chars;
use serde::Serialize;
use std::borrow::Cow;

const APPLICATION_JSON: &str = "application/json";
const GIT_LFS_JSON: &str = "application/vnd.git-lfs+json";

pub(crate) fn decide(
    req: &HttpRequest,
    site: &SiteView,
    cfg: &GateConfig,
) -> Result<Decision, GateError> {
    validate(req)?;
    let fenced = site.fenced.as_ref();
    if fenced.is_none() && site.role == SiteRole::Primary && !site.maintenance {
        return Ok(Decision::allow(
            ids::MAINTENANCE_OFF,
            "maintenance mode is off on the primary",
        ));
    }
    // Exempt networks lift maintenance mode, never a fence.
    let exempt = fenced.is_none()
        && site.maintenance
        && req
            .client_ip
            .is_some_and(|ip| cfg.exempt_cidrs.iter().any(|c| c.contains(ip)));
    if exempt && site.role == SiteRole::Primary {
        return Ok(Decision::allow(
            ids::EXEMPT_CIDR,
            "the client's address is exempt from maintenance mode",
        ));
    }
    let method = Method::parse(&req.method);
    // Both disguised writes carry a query string; every other read passes untouched.
    let read = method.is_read();
    if read && !req.path.contains('?') {
        return Ok(Decision::allow(ids::READ, "reads are never blocked"));
    }
    // From here: a write (or a read with a query string), on a primary in maintenance mode
    // or on a secondary.
    let maintenance = site.maintenance && !exempt;
    let norm = path::normalise(&req.path);
    let root = cfg.root();
    let below_root = norm.under_root(root);
    let route = below_root.unwrap_or(&norm.path);

    let push = if read {
        is_push_discovery(method, route, norm.query)
    } else {
        route.ends_with("/git-receive-pack")
    };
    if push {
        // A push over smart HTTP: answer the way git shows it to the user.
        if let Some(f) = fenced {
            return Ok(fence::git_push(GitProtocol::Http, f, cfg));
        }
        return Ok(git::push(GitProtocol::Http, false, site.role, maintenance));
    }

    let outcome = match (norm.suspicious, below_root) {
        _ if read => match graphql_get_mutation(below_root, &norm) {
            Some(outcome) => outcome,
            None => return Ok(Decision::allow(ids::READ, "reads are never blocked")),
        },
        (Some(why), _) => Outcome::Write {
            rule: ids::DENY_WRITE,
            reason: format!("write to a path that matches no allowlist route: {why}").into(),
        },
        (None, None) => Outcome::Write {
            rule: ids::DENY_WRITE,
            reason: "write to a path outside the relative URL root".into(),
        },
        (None, Some(route)) => allowlist(method, route, &norm, req, site, cfg),
    };

    if let Some(f) = fenced {
        return Ok(match outcome {
            Outcome::Allowed { rule, reason } if fence::is_read(rule) => {
                Decision::allow(rule, reason)
            }
            Outcome::Allowed { reason, .. } | Outcome::Write { reason, .. } => {
                fence::http(f, cfg, &format!("write to a fenced site ({reason})"))
            }
            Outcome::PrimaryOnly { why } => {
                fence::http(f, cfg, &format!("write to a fenced site ({why})"))
            }
        });
    }

    let (rule, reason): (&'static str, Cow<'static, str>) = match outcome {
        Outcome::Allowed { rule, reason } => return Ok(Decision::allow(rule, reason)),
        Outcome::PrimaryOnly { why } if maintenance => (
            ids::DENY_PRIMARY_ONLY,
            format!("{why}: only the primary site accepts it").into(),
        ),
        Outcome::PrimaryOnly { why } => (ids::PROXY_TO_PRIMARY, why.into()),
        Outcome::Write { rule, reason } => (rule, reason),
    };
    if maintenance {
        return Ok(refuse(rule, reason, req, route, site, cfg));
    }
    // A secondary outside maintenance mode (or an exempt client on a secondary).
    let proxy_rule = if exempt {
        ids::EXEMPT_CIDR
    } else {
        ids::PROXY_TO_PRIMARY
    };
    Ok(Decision::proxy(
        proxy_rule,
        format!("secondary site: forward the write to the primary ({reason})"),
    ))
}

/// The first request of a push over smart HTTP: `GET …/info/refs?service=git-receive-pack`.
/// It changes nothing itself, but it is where git shows a refusal to the user (the `text/plain`
/// body of a failed discovery, after `remote:`), and where GitLab itself refuses a push in
/// maintenance mode; a refusal of the `POST …/git-receive-pack` that follows is shown by git
/// only as "HTTP 403". So it is judged as the push it starts.
fn is_push_discovery(method: Method, route: &str, query: &str) -> bool {
    matches!(method, Method::Get | Method::Head)
        && route.ends_with("/info/refs")
        && form::values(query, "service").any(|s| s == "git-receive-pack")
}

/// A GraphQL operation in a `GET`'s query string that is not a plain query: a mutation (or
/// one the gate cannot tell from a mutation). GitLab refuses to run mutations sent by `GET`,
/// but an application behind the gating proxy may not, so in maintenance mode it is judged as
/// the write it would be. `None`: an ordinary read.
fn graphql_get_mutation(below_root: Option<&str>, norm: &NormalPath<'_>) -> Option<Outcome> {
    // The resolved path, suspicious or not: a front end may route `/api/./graphql` there.
    if below_root != Some(GRAPHQL_ROUTE) {
        return None;
    }
    match graphql::check(None, None, norm.query) {
        Check::Pass { .. } => None,
        Check::Block { rule, reason } => Some(Outcome::Write {
            rule,
            reason: format!("{reason}, sent in a GET request's query string").into(),
        }),
    }
}

enum Outcome {
    Allowed {
        rule: &'static str,
        reason: Cow<'static, str>,
    },
    /// A settings row matched on a secondary.
    PrimaryOnly { why: &'static str },
    /// No row allows it: an ordinary write.
    Write {
        rule: &'static str,
        reason: Cow<'static, str>,
    },
}

/// Applies the allowlist to a write whose path is clean and below the root.
fn allowlist(
    method: Method,
    route: &str,
    norm: &NormalPath<'_>,
    req: &HttpRequest,
    site: &SiteView,
    cfg: &GateConfig,
) -> Outcome {
    let Some(row) = rules::find(method, route) else {
        if cfg.extra_allowlist.iter().any(|r| r.matches(method, route)) {
            return Outcome::Allowed {
                rule: ids::ALLOW_EXTRA,
                reason: "allowed by an operator allowlist route".into(),
            };
        }
        return Outcome::Write {
            rule: ids::DENY_WRITE,
            reason: "write to a route that is not on the allowlist".into(),
        };
    };
    let body_check = |check: fn(Option<&[u8]>, &HttpRequest, &str) -> Check| {
        let body = req.body.as_deref();
        if body.is_some_and(|b| b.len() > cfg.max_body_bytes) {
            return Outcome::Write {
                rule: ids::DENY_BODY_TOO_LARGE,
                reason: format!(
                    "{}: the body is larger than {} bytes and cannot be inspected",
                    row.why, cfg.max_body_bytes
                )
                .into(),
            };
        }
        match check(body, req, norm.query) {
            Check::Pass { rule, reason } => Outcome::Allowed { rule, reason },
            Check::Block { rule, reason } => Outcome::Write { rule, reason },
        }
    };
    match row.condition {
        Condition::None => Outcome::Allowed {
            rule: row.id,
            reason: row.why.into(),
        },
        Condition::PrimaryOnly if site.role == SiteRole::Primary => Outcome::Allowed {
            rule: row.id,
            reason: row.why.into(),
        },
        Condition::PrimaryOnly => Outcome::PrimaryOnly { why: row.why },
        Condition::LfsBatchBody => body_check(|b, _, q| lfs::check(b, q)),
        Condition::GraphqlBody => {
            body_check(|b, r, q| graphql::check(b, r.content_type.as_deref(), q))
        }
    }
}

/// The refusal the client understands.
fn refuse(
    rule: &'static str,
    reason: Cow<'static, str>,
    req: &HttpRequest,
    route: &str,
    site: &SiteView,
    cfg: &GateConfig,
) -> Decision {
    let kind = if is_json_client(req, route) {
        Client::Json
    } else {
        Client::Html
    };
    deny(rule, reason, kind, req.referer.as_deref(), site, cfg)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    Json,
    Html,
}

/// Builds a refusal in the configured deny mode. Shared with named actions.
pub(crate) fn deny(
    rule: &'static str,
    reason: Cow<'static, str>,
    client: Client,
    referer: Option<&str>,
    site: &SiteView,
    cfg: &GateConfig,
) -> Decision {
    let base = Decision {
        verdict: Verdict::Deny,
        status: 403,
        content_type: Cow::Borrowed(APPLICATION_JSON),
        message: Some(Cow::Borrowed(READ_ONLY_MESSAGE)),
        body: Some(Cow::Borrowed(READ_ONLY_JSON_BODY)),
        location: None,
        retry_after: None,
        granted_scopes: Vec::new(),
        rule,
        reason,
    };
    match (cfg.deny_mode, client) {
        (DenyMode::Unavailable503 { retry_after_secs }, _) => {
            let message = site
                .message
                .as_deref()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or(DEFAULT_MAINTENANCE_MESSAGE);
            Decision {
                status: 503,
                message: Some(Cow::Owned(message.to_string())),
                body: Some(Cow::Owned(json_message(message))),
                retry_after: Some(retry_after_secs),
                ..base
            }
        }
        (DenyMode::Forbidden403, Client::Json) => base,
        (DenyMode::Forbidden403, Client::Html) => Decision {
            status: 301,
            content_type: Cow::Borrowed(""),
            body: None,
            location: Some(redirect_target(referer, cfg.root())),
            ..base
        },
    }
}

fn json_message(message: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        message: &'a str,
    }
    // Serialising a struct of one string cannot fail; fall back to the fixed body anyway.
    serde_json::to_string(&Body { message }).unwrap_or_else(|_| READ_ONLY_JSON_BODY.to_string())
}

/// Back to the page the user came from, else the root page. A Referer that could smuggle a
/// header (control characters) or is not an http(s) URL or an absolute path is ignored.
fn redirect_target(referer: Option<&str>, root: &str) -> String {
    let usable = referer.filter(|r| {
        !r.is_empty()
            && !r.bytes().any(|b| b.is_ascii_control() || b == b' ')
            && (starts_with_ignore_case(r, "https://")
                || starts_with_ignore_case(r, "http://")
                || (r.starts_with('/') && !r.starts_with("//") && !r.starts_with("/\\")))
    });
    match usable {
        Some(r) => r.to_string(),
        None => format!("{root}/"),
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// JSON clients: `Accept` or `Content-Type` naming JSON or LFS JSON, or an `/api/` path.
fn is_json_client(req: &HttpRequest, route: &str) -> bool {
    let json =
        |m: &str| m.eq_ignore_ascii_case(APPLICATION_JSON) || m.eq_ignore_ascii_case(GIT_LFS_JSON);
    req.accept
        .as_deref()
        .is_some_and(|a| a.split(',').map(media_type).any(json))
        || req
            .content_type
            .as_deref()
            .map(media_type)
            .is_some_and(json)
        || route == "/api"
        || route.starts_with("/api/")
}

fn validate(req: &HttpRequest) -> Result<(), GateError> {
    let m = &req.method;
    if m.is_empty() || m.len() > 32 || !m.bytes().all(is_tchar) {
        return Err(GateError::InvalidInput(format!(
            "HTTP method {:?} is not a valid token",
            truncate_chars(m, 40)
        )));
    }
    if req.path.len() > MAX_PATH_BYTES {
        return Err(GateError::InvalidInput(format!(
            "request path is {} bytes, longer than {MAX_PATH_BYTES}",
            req.path.len()
        )));
    }
    for (name, value) in [
        ("Accept", &req.accept),
        ("Content-Type", &req.content_type),
        ("Referer", &req.referer),
    ] {
        if let Some(v) = value.as_ref().filter(|v| v.len() > MAX_HEADER_BYTES) {
            return Err(GateError::InvalidInput(format!(
                "{name} header is {} bytes, longer than {MAX_HEADER_BYTES}",
                v.len()
            )));
        }
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_clients_are_recognised() {
        let req = |accept: Option<&str>, ct: Option<&str>| HttpRequest {
            accept: accept.map(str::to_string),
            content_type: ct.map(str::to_string),
            ..HttpRequest::default()
        };
        assert!(is_json_client(&req(Some("application/json"), None), "/x"));
        assert!(is_json_client(
            &req(Some("text/plain, Application/JSON;q=0.9, */*"), None),
            "/x"
        ));
        assert!(is_json_client(
            &req(None, Some("application/vnd.git-lfs+json; charset=utf-8")),
            "/x"
        ));
        assert!(is_json_client(&req(None, None), "/api/v4/projects"));
        assert!(!is_json_client(
            &req(
                Some("text/html,*/*"),
                Some("application/x-www-form-urlencoded")
            ),
            "/x"
        ));
        assert!(!is_json_client(&req(None, None), "/apix"));
    }

    #[test]
    fn redirects_go_back_or_to_the_root() {
        assert_eq!(
            redirect_target(Some("https://gl.example/g/p"), ""),
            "https://gl.example/g/p"
        );
        assert_eq!(
            redirect_target(Some("/g/p/-/issues"), "/gitlab"),
            "/g/p/-/issues"
        );
        assert_eq!(redirect_target(None, ""), "/");
        assert_eq!(redirect_target(None, "/gitlab"), "/gitlab/");
        for bad in [
            "",
            "javascript:alert(1)",
            "//evil.example/",
            "/x\r\nSet-Cookie: a=b",
            "/\\evil",
        ] {
            assert_eq!(redirect_target(Some(bad), "/gitlab"), "/gitlab/", "{bad:?}");
        }
    }

    #[test]
    fn messages_are_json_escaped() {
        assert_eq!(
            json_message("say \"hi\"\n"),
            r#"{"message":"say \"hi\"\n"}"#
        );
    }

    #[test]
    fn methods_must_be_tokens() {
        for bad in ["", "GE T", "GET\r\n", "Ä", &"X".repeat(33)] {
            let req = HttpRequest {
                method: bad.to_string(),
                path: "/".into(),
                ..HttpRequest::default()
            };
            assert!(
                matches!(validate(&req), Err(GateError::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert_eq!(truncate_chars("abcdef", 3), "abc");
    }
}
