//! A fenced site: a former primary that was replaced — demoted, or it learned that another
//! site leads at a higher epoch (SPEC §5). It refuses every write on every surface, whatever
//! its maintenance setting says, and forwards none: it is not the primary, and the site it
//! would forward to may be itself.
//!
//! Trade-off: fencing is checked before maintenance mode, exempt networks and operator
//! routes, so none of them can reopen a fenced site. Of the allowlist, only the rows that are
//! reads carried by a write method still run ([`rules::FENCED_READS`]: clone, LFS download,
//! compare, a GraphQL query the gate parsed), and only when the gate could judge the body:
//! what maintenance mode lets through without a body (nginx's `auth_request`) is refused
//! here. The answer is always 503 with `Retry-After` (the site will not take writes again
//! until it is repointed, and clients should go elsewhere), with the same sentence on every
//! surface.

use super::rules::{self, ids};
use super::{Decision, Fenced, GateConfig, GitProtocol, Verdict};
use serde::Serialize;
use std::borrow::Cow;

/// Whether a write the allowlist passed under `rule` may still run on a fenced site.
pub(crate) fn is_read(rule: &str) -> bool {
    rules::FENCED_READS.contains(&rule)
}

/// The HTTP refusal: 503 JSON `{"message": "<sentence>"}` with `Retry-After`.
pub(crate) fn http(fenced: &Fenced, cfg: &GateConfig, why: &str) -> Decision {
    let message = fenced.message();
    refusal(
        503,
        "application/json",
        json(&Body { message: &message }),
        message,
        Some(cfg.fenced_retry_after()),
        why,
    )
}

/// A push: over SSH the 401 `{"status":false,...}` gitlab-shell shows, over HTTP a 503
/// `text/plain` git shows after `remote:`.
pub(crate) fn git_push(protocol: GitProtocol, fenced: &Fenced, cfg: &GateConfig) -> Decision {
    let message = fenced.message();
    let why = "git push to a fenced site";
    match protocol {
        GitProtocol::Ssh => {
            #[derive(Serialize)]
            struct Ssh<'a> {
                status: bool,
                message: &'a str,
            }
            let body = json(&Ssh {
                status: false,
                message: &message,
            });
            refusal(401, "application/json", body, message, None, why)
        }
        GitProtocol::Http => {
            let body = message.clone();
            let retry = Some(cfg.fenced_retry_after());
            refusal(503, "text/plain", body, message, retry, why)
        }
    }
}

/// The refusal of a named action: the HTTP answer (actions are answered as JSON clients).
pub(crate) fn action(fenced: &Fenced, cfg: &GateConfig, name: &str) -> Decision {
    http(fenced, cfg, &format!("{name} on a fenced site"))
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
}

fn json<T: Serialize>(v: &T) -> String {
    // Serialising a struct of strings and booleans cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn refusal(
    status: u16,
    content_type: &'static str,
    body: String,
    message: String,
    retry_after: Option<u32>,
    why: &str,
) -> Decision {
    let reason = format!("{why}: {message}");
    Decision {
        verdict: Verdict::Deny,
        status,
        content_type: Cow::Borrowed(content_type),
        message: Some(Cow::Owned(message)),
        body: Some(Cow::Owned(body)),
        location: None,
        retry_after,
        granted_scopes: Vec::new(),
        rule: ids::FENCED,
        reason: reason.into(),
    }
}
