//! Tests of the gate as a whole, through [`decide`]: SPEC §3's HTTP table row by row on
//! every kind of site, the refusal answers, git, registry, actions, crafted paths, bad
//! input, and property tests for the invariants that matter most (reads are never refused;
//! a write on a read-only site only ever passes under a named allowlist rule).
//!
//! Trade-off: expectations are written out by hand — paths, rule ids, statuses, bodies — and
//! never derived from the table under test, so a wrong row makes a test fail instead of
//! agreeing with itself. The property tests' oracle re-implements the path checks naively
//! for the same reason.

use super::*;
use proptest::prelude::*;

const ROOTS: [&str; 2] = ["", "/gitlab"];

fn site(role: SiteRole, maintenance: bool) -> SiteView {
    SiteView {
        role,
        maintenance,
        message: None,
        fenced: None,
    }
}

fn sites() -> [SiteView; 4] {
    [
        site(SiteRole::Primary, false),
        site(SiteRole::Primary, true),
        site(SiteRole::Secondary, false),
        site(SiteRole::Secondary, true),
    ]
}

fn cfg(root: &str) -> GateConfig {
    GateConfig {
        relative_url_root: root.to_string(),
        ..GateConfig::default()
    }
}

fn req(method: &str, path: &str) -> HttpRequest {
    HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        ..HttpRequest::default()
    }
}

fn with_body(mut r: HttpRequest, body: &str, ct: &str) -> HttpRequest {
    r.body = Some(body.as_bytes().to_vec());
    r.content_type = Some(ct.to_string());
    r
}

fn run(r: &HttpRequest, s: &SiteView, c: &GateConfig) -> Decision {
    match decide(&Request::Http(r.clone()), s, c) {
        Ok(d) => d,
        Err(e) => panic!("{} {}: {e}", r.method, r.path),
    }
}

#[track_caller]
fn expect(d: &Decision, verdict: Verdict, status: u16, rule: &str, ctx: &str) {
    assert_eq!(
        (d.verdict, d.status, d.rule),
        (verdict, status, rule),
        "{ctx}: {d:?}"
    );
}

// ---------------------------------------------------------------------------------------
// SPEC §3 HTTP table
// ---------------------------------------------------------------------------------------

/// One allowlisted request: what it looks like and the rule that must allow it.
struct Allowed {
    method: &'static str,
    path: &'static str,
    /// (body, content type) when the row inspects bodies.
    body: Option<(&'static str, &'static str)>,
    rule: &'static str,
    primary_only: bool,
    /// A write method the row does not allow on the same path.
    other_method: Option<&'static str>,
}

const fn ok(method: &'static str, path: &'static str, rule: &'static str) -> Allowed {
    Allowed {
        method,
        path,
        body: None,
        rule,
        primary_only: false,
        other_method: Some("PATCH"),
    }
}

const GQL_QUERY: &str = r#"{"query":"query { currentUser { username } }"}"#;
const GQL_GEO: &str = r#"{"query":"mutation { geoRegistriesUpdate(input: {registryId: \"1\", action: RESYNC}) { errors } }"}"#;
const LFS_DOWNLOAD: &str = r#"{"operation":"download","objects":[{"oid":"1234","size":1}]}"#;

fn allowed_table() -> Vec<Allowed> {
    let settings = |method, path, rule| Allowed {
        primary_only: true,
        other_method: Some("DELETE"),
        ..ok(method, path, rule)
    };
    let any_write = |method, path| Allowed {
        other_method: None,
        ..ok(method, path, "allow.internal_api")
    };
    vec![
        settings(
            "POST",
            "/admin/application_settings/general",
            "allow.admin_settings",
        ),
        settings(
            "PUT",
            "/admin/application_settings/general",
            "allow.admin_settings",
        ),
        settings(
            "PUT",
            "/api/v4/application/settings?maintenance_mode=false",
            "allow.api_settings",
        ),
        settings("POST", "/api/v4/application/settings", "allow.api_settings"),
        settings(
            "PUT",
            "/api/v4/application/settings/x",
            "allow.api_settings",
        ),
        ok("POST", "/users/sign_in", "allow.sign_in"),
        ok("POST", "/oauth/token", "allow.oauth_token"),
        ok("POST", "/users/auth/geo/sign_in", "allow.geo_sign_in"),
        ok("POST", "/users/auth/saml/callback", "allow.auth_callback"),
        ok("POST", "/users/auth/openid_connect", "allow.auth_callback"),
        ok("POST", "/users/sign_out", "allow.sign_out"),
        ok("POST", "/users/auth/geo/sign_out", "allow.geo_sign_out"),
        ok("POST", "/admin/session", "allow.admin_session"),
        ok(
            "POST",
            "/admin/session/destroy",
            "allow.admin_session_destroy",
        ),
        ok("POST", "/group/project/-/compare", "allow.compare"),
        ok(
            "POST",
            "/group/sub/project/compare?from=a&to=b",
            "allow.compare",
        ),
        ok(
            "POST",
            "/group/project.git/git-upload-pack",
            "allow.git_upload_pack",
        ),
        Allowed {
            body: Some((LFS_DOWNLOAD, "application/vnd.git-lfs+json")),
            ..ok(
                "POST",
                "/group/project.git/info/lfs/objects/batch",
                "allow.lfs_batch",
            )
        },
        any_write("POST", "/api/v4/internal/allowed"),
        any_write("PUT", "/api/v4/internal/lfs"),
        any_write("PATCH", "/api/v4/internal/x"),
        any_write("DELETE", "/api/v4/internal/kubernetes/agent"),
        any_write("PROPFIND", "/api/v4/internal/allowed"),
        Allowed {
            rule: "allow.internal_api_v3",
            ..any_write("POST", "/api/v3/internal/allowed")
        },
        ok("POST", "/admin/sidekiq", "allow.sidekiq"),
        ok("POST", "/admin/sidekiq/queues/default", "allow.sidekiq"),
        ok("POST", "/admin/geo", "allow.admin_geo"),
        ok("POST", "/admin/geo/sites/2/replication", "allow.admin_geo"),
        ok(
            "POST",
            "/api/v4/geo_replication/designs/1/resync",
            "allow.geo_replication",
        ),
        ok("POST", "/api/v4/geo/status", "allow.geo_status"),
        ok("POST", "/api/v4/geo/graphql", "allow.geo_graphql"),
        ok("POST", "/jwt/auth", "allow.jwt_auth"),
        Allowed {
            body: Some((GQL_QUERY, "application/json")),
            ..ok("POST", "/api/graphql", "allow.graphql")
        },
        Allowed {
            body: Some((GQL_GEO, "application/json")),
            ..ok(
                "POST",
                "/api/graphql",
                "allow.graphql.geo_registries_update",
            )
        },
        ok("POST", "/api/graphql", "graphql.no_body"),
    ]
}

#[test]
fn every_allowlist_row_on_every_site_with_and_without_root() {
    let table = allowed_table();
    // Every built-in row is exercised by at least one case.
    for row in rules::ALLOWLIST {
        assert!(
            table.iter().any(|c| c.rule == row.id),
            "row {} has no case",
            row.id
        );
    }
    for case in &table {
        for root in ROOTS {
            let c = cfg(root);
            let mut r = req(case.method, &format!("{root}{}", case.path));
            if let Some((body, ct)) = case.body {
                r = with_body(r, body, ct);
            }
            for s in sites() {
                let ctx = format!(
                    "{} {} on {:?} maintenance={}",
                    r.method, r.path, s.role, s.maintenance
                );
                let d = run(&r, &s, &c);
                match (s.role, s.maintenance) {
                    (SiteRole::Primary, false) => {
                        expect(&d, Verdict::Allow, 200, "maintenance_off", &ctx)
                    }
                    (SiteRole::Primary, true) => expect(&d, Verdict::Allow, 200, case.rule, &ctx),
                    (SiteRole::Secondary, false) if case.primary_only => {
                        expect(&d, Verdict::ProxyToPrimary, 200, "proxy_to_primary", &ctx)
                    }
                    (SiteRole::Secondary, true) if case.primary_only => {
                        let status = if case.path.starts_with("/api/") {
                            403
                        } else {
                            301
                        };
                        expect(&d, Verdict::Deny, status, "deny.primary_only", &ctx);
                        assert!(d.reason.contains("only the primary"), "{ctx}: {}", d.reason);
                        assert_refusal_answer(&d, root, &ctx);
                    }
                    (SiteRole::Secondary, _) => expect(&d, Verdict::Allow, 200, case.rule, &ctx),
                }
                if d.verdict == Verdict::Allow {
                    assert_eq!(
                        (d.body.as_deref(), d.location.as_deref()),
                        (None, None),
                        "{ctx}"
                    );
                }
            }
            // Another write method on the same route is an ordinary write.
            if let Some(m) = case.other_method {
                let mut other = r.clone();
                other.method = m.to_string();
                let d = run(&other, &site(SiteRole::Primary, true), &c);
                assert_eq!(
                    (d.verdict, d.rule),
                    (Verdict::Deny, "deny.write"),
                    "{m} {}",
                    other.path
                );
            }
        }
        // With a root configured, the same route outside the root is not GitLab's.
        let d = run(
            &req(case.method, case.path),
            &site(SiteRole::Primary, true),
            &cfg("/gitlab"),
        );
        assert_eq!(
            (d.verdict, d.rule),
            (Verdict::Deny, "deny.write"),
            "{} outside the root",
            case.path
        );
    }
}

/// The answer a refused HTTP write carries, by status, in the default deny mode.
#[track_caller]
fn assert_refusal_answer(d: &Decision, root: &str, ctx: &str) {
    const PUSH: &str = "Git push is not allowed because this GitLab instance is currently in (read-only) maintenance mode.";
    const MSG: &str = "You cannot perform write operations on a read-only instance";
    let got = (
        &*d.content_type,
        d.body.as_deref(),
        d.message.as_deref(),
        d.location.as_deref(),
    );
    match (d.status, d.rule) {
        (403, "git.push.maintenance") => {
            assert_eq!(got, ("text/plain", Some(PUSH), Some(PUSH), None), "{ctx}")
        }
        (403, _) => assert_eq!(
            got,
            (
                "application/json",
                Some(
                    r#"{"message":"You cannot perform write operations on a read-only instance"}"#
                ),
                Some(MSG),
                None
            ),
            "{ctx}"
        ),
        (301, _) => assert_eq!(
            got,
            ("", None, Some(MSG), Some(format!("{root}/").as_str())),
            "{ctx}"
        ),
        other => panic!("{ctx}: unexpected refusal {other:?}"),
    }
    assert_eq!(d.retry_after, None, "{ctx}");
}

/// Writes the allowlist does not cover: (method, path, rule, status on a read-only site).
const DENIED: &[(&str, &str, &str, u16)] = &[
    ("POST", "/users", "deny.write", 301),
    ("POST", "/users/sign_up", "deny.write", 301),
    ("POST", "/api/v4/projects", "deny.write", 403),
    ("PUT", "/api/v4/projects/1", "deny.write", 403),
    ("DELETE", "/api/v4/projects/1", "deny.write", 403),
    ("POST", "/api/v4/projects/1/issues", "deny.write", 403),
    (
        "PATCH",
        "/admin/application_settings/general",
        "deny.write",
        301,
    ),
    (
        "POST",
        "/admin/application_settings/network",
        "deny.write",
        301,
    ),
    ("POST", "/admin/application_settings", "deny.write", 301),
    ("POST", "/api/v4/jobs/request", "deny.write", 403),
    ("PATCH", "/api/v4/jobs/1/trace", "deny.write", 403),
    ("PUT", "/api/v4/jobs/1", "deny.write", 403),
    ("POST", "/group/project/-/pipelines", "deny.write", 301),
    ("POST", "/api/v4/projects/1/pipeline", "deny.write", 403),
    (
        "POST",
        "/api/v4/projects/1/pipelines/2/retry",
        "deny.write",
        403,
    ),
    (
        "PUT",
        "/api/v4/projects/1/packages/npm/pkg",
        "deny.write",
        403,
    ),
    ("POST", "/api/v4/features/my_flag", "deny.write", 403),
    (
        "POST",
        "/api/v4/projects/1/alert_management_alerts",
        "deny.write",
        403,
    ),
    (
        "PUT",
        "/group/project.git/gitlab-lfs/objects/abc/1",
        "deny.write",
        301,
    ),
    ("PROPFIND", "/users/sign_in", "deny.write", 301),
    ("post", "/users/sign_in", "deny.write", 301),
    ("DELETE", "/users/sign_out", "deny.write", 301),
    ("POST", "/api/v4/internal_tools", "deny.write", 403),
    ("POST", "/admin/geographic", "deny.write", 301),
    ("POST", "/admin/sidekiqx", "deny.write", 301),
    ("POST", "/compare", "deny.write", 301),
    ("POST", "/.git/git-upload-pack", "deny.write", 301),
    ("POST", "/api/graphqlx", "deny.write", 403),
    ("POST", "/users/auth", "deny.write", 301),
    // Paths that end like an allowlisted route but are not that route (GitLab asks its
    // router; the gate asks the route's shape).
    (
        "POST",
        "/root/proj/-/repository/files/compare",
        "deny.write",
        301,
    ),
    (
        "POST",
        "/root/proj/-/blob/master/compare",
        "deny.write",
        301,
    ),
    (
        "POST",
        "/root/proj/-/create/master/compare",
        "deny.write",
        301,
    ),
    ("POST", "/root/proj/new/master/compare", "deny.write", 301),
    ("POST", "/proj/compare", "deny.write", 301),
    (
        "POST",
        "/api/v4/projects/1/repository/files/compare",
        "deny.write",
        403,
    ),
    (
        "POST",
        "/root/proj/new/master/app/info/lfs/objects/batch",
        "deny.write",
        301,
    ),
    (
        "POST",
        "/root/proj/-/create/master/app.git/info/lfs/objects/batch",
        "deny.write",
        301,
    ),
    (
        "POST",
        "/root/proj/info/lfs/objects/batch",
        "deny.write",
        301,
    ),
    ("POST", "/root/proj/git-upload-pack", "deny.write", 301),
    (
        "POST",
        "/root/proj/-/create/master/x.git/git-upload-pack",
        "deny.write",
        301,
    ),
    (
        "POST",
        "/root/proj/-/api/v4/internal/allowed",
        "deny.write",
        301,
    ),
    ("POST", "/x/api/v4/internal/allowed", "deny.write", 301),
    ("PUT", "/api/v3/internalx", "deny.write", 403),
    (
        "POST",
        "/group/project.git/git-receive-pack",
        "git.push.maintenance",
        403,
    ),
];

#[test]
fn writes_off_the_allowlist_are_refused_in_maintenance_and_proxied_from_secondaries() {
    for &(method, path, rule, status) in DENIED {
        for root in ROOTS {
            let c = cfg(root);
            let r = req(method, &format!("{root}{path}"));
            let ctx = format!("{method} {root}{path}");
            expect(
                &run(&r, &site(SiteRole::Primary, false), &c),
                Verdict::Allow,
                200,
                "maintenance_off",
                &ctx,
            );
            for role in [SiteRole::Primary, SiteRole::Secondary] {
                let d = run(&r, &site(role, true), &c);
                expect(&d, Verdict::Deny, status, rule, &ctx);
                assert_refusal_answer(&d, root, &ctx);
            }
            let proxied = if rule == "git.push.maintenance" {
                "git.push.proxy"
            } else {
                "proxy_to_primary"
            };
            expect(
                &run(&r, &site(SiteRole::Secondary, false), &c),
                Verdict::ProxyToPrimary,
                200,
                proxied,
                &ctx,
            );
        }
    }
}

/// Cases of GitLab's own read-only middleware spec, on a site in maintenance mode:
/// (method, path, body, allowed).
#[test]
fn gitlab_read_only_middleware_cases() {
    const UPLOAD: &str = r#"{"operation":"upload","objects":[{"oid":"1234","size":1}]}"#;
    let cases: &[(&str, &str, Option<&str>, bool)] = &[
        ("POST", "/api/v4/internal/allowed", None, true),
        ("POST", "/api/v4/internal/lfs_authenticate", None, true),
        ("POST", "/root/gitlab-ce.git/git-upload-pack", None, true),
        ("POST", "/root/gitlab-ce/-/compare", None, true),
        ("POST", "/root/gitlab-ce/compare", None, true),
        (
            "POST",
            "/root/gitlab-ce/-/repository/files/compare",
            None,
            false,
        ),
        (
            "POST",
            "/root/gitlab-ce/new/master/app/info/lfs/objects/batch",
            None,
            false,
        ),
        (
            "POST",
            "/root/gitlab-ce.git/info/lfs/objects/batch",
            Some(LFS_DOWNLOAD),
            true,
        ),
        (
            "POST",
            "/root/gitlab-ce.git/info/lfs/objects/batch",
            Some(UPLOAD),
            false,
        ),
        ("POST", "/users/sign_in", None, true),
        ("POST", "/users/sign_out", None, true),
        ("POST", "/oauth/token", None, true),
        ("POST", "/users/auth/geo/sign_in", None, true),
        ("POST", "/admin/session", None, true),
        ("POST", "/admin/session/destroy", None, true),
        ("POST", "/admin/sidekiq", None, true),
        ("POST", "/api/v4/projects", None, false),
        ("POST", "/test_request", None, false),
        ("PATCH", "/test_request", None, false),
        ("PUT", "/test_request", None, false),
        ("DELETE", "/test_request", None, false),
        ("GET", "/test_request", None, true),
        ("HEAD", "/test_request", None, true),
        ("POST", "/api/graphql", Some(GQL_QUERY), true),
        (
            "POST",
            "/api/graphql",
            Some(r#"{"query":"mutation { createIssue(input: {}) { errors } }"}"#),
            false,
        ),
    ];
    for &(method, path, body, allowed) in cases {
        for root in ROOTS {
            let mut r = req(method, &format!("{root}{path}"));
            if let Some(b) = body {
                r = with_body(r, b, "application/json");
            }
            for role in [SiteRole::Primary, SiteRole::Secondary] {
                let d = run(&r, &site(role, true), &cfg(root));
                assert_eq!(d.is_allowed(), allowed, "{method} {root}{path}: {d:?}");
            }
        }
    }
}

/// The first request of a smart HTTP push changes nothing, but it is the one whose refusal git
/// shows the user: it is judged as the push, on every role, under every root, however the
/// query string spells it.
#[test]
fn push_discovery_is_judged_as_the_push() {
    for root in ROOTS {
        let c = cfg(root);
        for query in [
            "service=git-receive-pack",
            "service=git%2Dreceive-pack",
            "x=1&service=git-receive-pack",
        ] {
            let path = format!("{root}/group/sub/project.git/info/refs?{query}");
            for method in ["GET", "HEAD"] {
                let r = req(method, &path);
                let ctx = format!("{method} {path}");
                let d = run(&r, &site(SiteRole::Primary, false), &c);
                expect(&d, Verdict::Allow, 200, "maintenance_off", &ctx);
                for role in [SiteRole::Primary, SiteRole::Secondary] {
                    let d = run(&r, &site(role, true), &c);
                    expect(&d, Verdict::Deny, 403, "git.push.maintenance", &ctx);
                    assert_eq!(&*d.content_type, "text/plain", "{ctx}");
                    assert_eq!(d.body.as_deref(), Some(GIT_PUSH_MESSAGE), "{ctx}");
                }
                let d = run(&r, &site(SiteRole::Secondary, false), &c);
                expect(&d, Verdict::ProxyToPrimary, 200, "git.push.proxy", &ctx);
            }
            // OPTIONS starts nothing.
            let d = run(&req("OPTIONS", &path), &site(SiteRole::Primary, true), &c);
            expect(&d, Verdict::Allow, 200, "read", &path);
        }
    }
}

/// GitLab never runs a mutation sent by GET, but an application behind the gating proxy may:
/// in maintenance mode it is the write it would be, refused like the POST.
#[test]
fn graphql_mutations_sent_by_get_are_writes() {
    for root in ROOTS {
        let c = cfg(root);
        for query in [
            "query=mutation%7Bx%7D",
            "query=mutation+M%7Bx%7D&operationName=M",
            "query=%6Dutation%7Bx%7D",
            "query=query+Q%7Bx%7Dmutation+M%7By%7D&operationName=M",
            "query=%7Bx%7D&query=mutation%7By%7D",
        ] {
            let path = format!("{root}/api/graphql?{query}");
            // However the path is spelled on its way to the GraphQL route.
            let dotted = format!("{root}/api/./graphql?{query}");
            let d = run(&req("GET", &dotted), &site(SiteRole::Primary, true), &c);
            assert_eq!(
                (d.verdict, d.status),
                (Verdict::Deny, 403),
                "{dotted}: {d:?}"
            );
            let mut r = req("GET", &path);
            r.accept = Some("application/json".into());
            let ctx = path.as_str();
            let d = run(&r, &site(SiteRole::Primary, false), &c);
            expect(&d, Verdict::Allow, 200, "maintenance_off", ctx);
            for role in [SiteRole::Primary, SiteRole::Secondary] {
                let d = run(&r, &site(role, true), &c);
                assert_eq!((d.verdict, d.status), (Verdict::Deny, 403), "{ctx}: {d:?}");
                assert_eq!(d.body.as_deref(), Some(READ_ONLY_JSON_BODY), "{ctx}");
                assert!(d.reason.contains("GET"), "{ctx}: {}", d.reason);
            }
            let d = run(&r, &site(SiteRole::Secondary, false), &c);
            assert_eq!(d.verdict, Verdict::ProxyToPrimary, "{ctx}: {d:?}");
        }
        // A query, or the one mutation a read-only site runs, stays a read.
        for query in [
            "query=%7Bx%7D",
            "query=mutation%7BgeoRegistriesUpdate%7D",
            "",
        ] {
            let path = format!("{root}/api/graphql?{query}");
            let d = run(&req("GET", &path), &site(SiteRole::Primary, true), &c);
            expect(&d, Verdict::Allow, 200, "read", &path);
        }
    }
}

#[test]
fn reads_are_never_blocked() {
    for method in ["GET", "HEAD", "OPTIONS"] {
        for path in [
            "/",
            "/api/v4/projects",
            "/group/project.git/info/refs?service=git-upload-pack",
            "/group/project.git/info/refs?service=git-receive-pack-not",
            "/group/project.git/git-receive-pack",
            "/users/sign_in/../../admin",
            "/api/graphql?query=%7Bx%7D",
            "/api/graphql?query=mutation%7BgeoRegistriesUpdate%7D",
            "/api/graphql/other?query=mutation%7Bx%7D",
            "/projects?query=mutation%7Bx%7D",
            "*",
        ] {
            for root in ROOTS {
                for s in sites() {
                    let d = run(&req(method, path), &s, &cfg(root));
                    let rule = if s.role == SiteRole::Primary && !s.maintenance {
                        "maintenance_off"
                    } else {
                        "read"
                    };
                    expect(&d, Verdict::Allow, 200, rule, &format!("{method} {path}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Body checks through decide
// ---------------------------------------------------------------------------------------

#[test]
fn graphql_mutations_are_refused_with_the_read_only_answer() {
    let r = with_body(
        req("POST", "/gitlab/api/graphql"),
        r#"{"query":"mutation CreateIssue { createIssue(input: {projectPath: \"a/b\", title: \"x\"}) { errors } }","operationName":"CreateIssue"}"#,
        "application/json",
    );
    let d = run(&r, &site(SiteRole::Primary, true), &cfg("/gitlab"));
    expect(&d, Verdict::Deny, 403, "graphql.mutation", "mutation");
    assert_eq!(d.body.as_deref(), Some(READ_ONLY_JSON_BODY));
    assert!(d.reason.contains("createIssue"), "{}", d.reason);
    // Outside maintenance a secondary forwards the mutation; the primary runs it.
    let d = run(&r, &site(SiteRole::Secondary, false), &cfg("/gitlab"));
    expect(
        &d,
        Verdict::ProxyToPrimary,
        200,
        "proxy_to_primary",
        "mutation on a secondary",
    );
    let d = run(&r, &site(SiteRole::Primary, false), &cfg("/gitlab"));
    expect(
        &d,
        Verdict::Allow,
        200,
        "maintenance_off",
        "mutation, mode off",
    );
}

/// GraphQL bodies the gate cannot judge, each hiding a mutation: (what, body, content type,
/// rule). All are refused in maintenance mode with the read-only answer.
const GRAPHQL_UNJUDGEABLE: &[(&str, &str, Option<&str>, &str)] = &[
    (
        "JSON with a trailing comma",
        r#"{"query":"mutation { destroyProject(input: {}) { errors } }",}"#,
        Some("application/json"),
        "graphql.unparseable",
    ),
    (
        "JSON with a comment",
        r#"{"query":"mutation { destroyProject(input: {}) { errors } }" /* x */}"#,
        Some("application/json"),
        "graphql.unparseable",
    ),
    (
        "an unparseable document",
        r#"{"query":"mutation {"}"#,
        Some("application/json"),
        "graphql.unparseable",
    ),
    (
        "a decoy Operations part beside operations",
        "--b\r\nContent-Disposition: form-data; name=\"Operations\"\r\n\r\n{\"query\":\"{ a }\"}\r\n\
         --b\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n\
         {\"query\":\"mutation { destroyProject(input: {}) { errors } }\"}\r\n--b--\r\n",
        Some("multipart/form-data; boundary=b"),
        "graphql.ambiguous",
    ),
    (
        "multipart/mixed",
        "--b\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n\
         {\"query\":\"mutation { destroyProject(input: {}) { errors } }\"}\r\n--b--\r\n",
        Some("multipart/mixed; boundary=b"),
        "graphql.mutation",
    ),
    (
        "a query form part",
        "--b\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n\
         mutation { destroyProject(input: {}) { errors } }\r\n--b--\r\n",
        Some("multipart/form-data; boundary=b"),
        "graphql.mutation",
    ),
    (
        "an unknown media type",
        r#"{"query":"mutation { destroyProject(input: {}) { errors } }"}"#,
        Some("text/plain"),
        "graphql.media_type",
    ),
    (
        "an unknown media type with a harmless-looking body",
        "mutation { destroyProject(input: {}) { errors } }",
        Some("application/graphql"),
        "graphql.media_type",
    ),
    (
        "a _json batch beside a query",
        r#"{"query":"{ a }","_json":[{"query":"mutation { destroyProject(input: {}) { errors } }"}]}"#,
        Some("application/json"),
        "graphql.ambiguous",
    ),
    (
        "binary garbage without a content type",
        "\u{0}\u{ff}",
        None,
        "graphql.unparseable",
    ),
];

#[test]
fn graphql_that_cannot_be_judged_is_refused_in_maintenance() {
    for &(what, body, ct, rule) in GRAPHQL_UNJUDGEABLE {
        for root in ROOTS {
            let mut r = req("POST", &format!("{root}/api/graphql"));
            r.body = Some(body.as_bytes().to_vec());
            r.content_type = ct.map(str::to_string);
            let c = cfg(root);
            for role in [SiteRole::Primary, SiteRole::Secondary] {
                let d = run(&r, &site(role, true), &c);
                expect(&d, Verdict::Deny, 403, rule, what);
                assert_eq!(d.body.as_deref(), Some(READ_ONLY_JSON_BODY), "{what}");
                assert!(!d.reason.is_empty(), "{what}");
            }
            // Outside maintenance nothing changes: a secondary forwards, the primary runs.
            expect(
                &run(&r, &site(SiteRole::Secondary, false), &c),
                Verdict::ProxyToPrimary,
                200,
                "proxy_to_primary",
                what,
            );
            expect(
                &run(&r, &site(SiteRole::Primary, false), &c),
                Verdict::Allow,
                200,
                "maintenance_off",
                what,
            );
        }
    }
    // The reason says why.
    let (_, body, ct, _) = GRAPHQL_UNJUDGEABLE[0];
    let r = with_body(req("POST", "/api/graphql"), body, ct.unwrap_or_default());
    let d = run(&r, &site(SiteRole::Primary, true), &cfg(""));
    assert!(d.reason.contains("cannot be judged"), "{}", d.reason);
}

#[test]
fn graphql_without_a_body_is_still_decided_by_its_url() {
    // nginx's auth_request sends no body: documented, unchanged.
    for body in [None, Some(Vec::new())] {
        let mut r = req("POST", "/api/graphql");
        r.body = body;
        let d = run(&r, &site(SiteRole::Primary, true), &cfg(""));
        expect(&d, Verdict::Allow, 200, "graphql.no_body", "no body");
        r.path = "/api/graphql?query=mutation%7Bx%7D".into();
        let d = run(&r, &site(SiteRole::Primary, true), &cfg(""));
        expect(
            &d,
            Verdict::Deny,
            403,
            "graphql.mutation",
            "mutation in the URL",
        );
        r.path = "/api/graphql?_json%5B%5D%5Bquery%5D=mutation%7Bx%7D".into();
        let d = run(&r, &site(SiteRole::Primary, true), &cfg(""));
        expect(
            &d,
            Verdict::Deny,
            403,
            "graphql.ambiguous",
            "batch in the URL",
        );
    }
}

#[test]
fn legal_graphql_comments_and_trailing_commas_are_judged() {
    let s = site(SiteRole::Primary, true);
    let r = |q: &str| {
        with_body(
            req("POST", "/api/graphql"),
            &serde_json::json!({ "query": q }).to_string(),
            "application/json",
        )
    };
    let d = run(
        &r("# list them\nquery { projects(first: 2,) { nodes { id, }, }, }"),
        &s,
        &cfg(""),
    );
    expect(
        &d,
        Verdict::Allow,
        200,
        "allow.graphql",
        "query with a comment",
    );
    let d = run(
        &r("# harmless\nmutation { destroyProject(input: {id: 1,},) { errors, }, } # really"),
        &s,
        &cfg(""),
    );
    expect(
        &d,
        Verdict::Deny,
        403,
        "graphql.mutation",
        "mutation with a comment",
    );
}

#[test]
fn lfs_upload_batches_are_refused() {
    let r = with_body(
        req("POST", "/group/project.git/info/lfs/objects/batch"),
        r#"{"operation":"upload","objects":[{"oid":"1234","size":1}]}"#,
        "application/vnd.git-lfs+json",
    );
    let d = run(&r, &site(SiteRole::Primary, true), &cfg(""));
    expect(&d, Verdict::Deny, 403, "deny.lfs_upload", "LFS upload");
    assert_eq!(d.body.as_deref(), Some(READ_ONLY_JSON_BODY));
    let d = run(&r, &site(SiteRole::Secondary, false), &cfg(""));
    expect(
        &d,
        Verdict::ProxyToPrimary,
        200,
        "proxy_to_primary",
        "LFS upload on a secondary",
    );
    let nobody = req("POST", "/group/project.git/info/lfs/objects/batch");
    let d = run(&nobody, &site(SiteRole::Primary, true), &cfg(""));
    expect(
        &d,
        Verdict::Allow,
        200,
        "lfs.no_body",
        "LFS batch without body",
    );
    let mut garbage = nobody.clone();
    garbage.body = Some(b"\xff\xff".to_vec());
    let d = run(&garbage, &site(SiteRole::Primary, true), &cfg(""));
    expect(&d, Verdict::Allow, 200, "lfs.unparseable", "LFS garbage");
}

#[test]
fn bodies_over_the_bound_are_refused_with_a_reason() {
    let c = GateConfig {
        max_body_bytes: 64,
        ..cfg("")
    };
    let big = format!(r#"{{"query":"{{ a }}","pad":"{}"}}"#, "x".repeat(64));
    for path in ["/api/graphql", "/g/p.git/info/lfs/objects/batch"] {
        let r = with_body(req("POST", path), &big, "application/json");
        let d = run(&r, &site(SiteRole::Primary, true), &c);
        expect(&d, Verdict::Deny, 403, "deny.body_too_large", path);
        assert!(d.reason.contains("larger than 64 bytes"), "{}", d.reason);
        // Exactly at the bound is inspected.
        let fits = with_body(
            req("POST", path),
            &format!("{:<64}", r#"{"query":"{ a }"}"#),
            "application/json",
        );
        assert_ne!(
            run(&fits, &site(SiteRole::Primary, true), &c).rule,
            "deny.body_too_large"
        );
    }
    // A body on a row that does not inspect bodies is not read, whatever its size.
    let r = with_body(req("POST", "/users/sign_in"), &big, "application/json");
    expect(
        &run(&r, &site(SiteRole::Primary, true), &c),
        Verdict::Allow,
        200,
        "allow.sign_in",
        "sign in",
    );
}

// ---------------------------------------------------------------------------------------
// Refusal answers
// ---------------------------------------------------------------------------------------

#[test]
fn json_clients_get_403_with_the_exact_body() {
    let mut r = req("POST", "/group/project/-/issues");
    r.accept = Some("application/json, text/plain, */*".into());
    let d = run(&r, &site(SiteRole::Primary, true), &cfg(""));
    assert_eq!(d.status, 403);
    assert_eq!(d.content_type, "application/json");
    assert_eq!(
        d.body.as_deref(),
        Some(r#"{"message":"You cannot perform write operations on a read-only instance"}"#)
    );
    assert_eq!(
        d.message.as_deref(),
        Some("You cannot perform write operations on a read-only instance")
    );
    assert_eq!((d.location.as_deref(), d.retry_after), (None, None));
    let mut lfs = req("PUT", "/g/p.git/gitlab-lfs/objects/abc/1");
    lfs.accept = Some("application/vnd.git-lfs+json".into());
    assert_eq!(
        run(&lfs, &site(SiteRole::Primary, true), &cfg("")).status,
        403
    );
}

#[test]
fn html_clients_are_redirected_back_with_a_flash_alert() {
    let mut r = req("POST", "/gitlab/group/project/-/issues");
    r.accept = Some("text/html,application/xhtml+xml".into());
    r.referer = Some("https://gitlab.example.com/gitlab/group/project/-/issues/new".into());
    let d = run(&r, &site(SiteRole::Secondary, true), &cfg("/gitlab"));
    expect(&d, Verdict::Deny, 301, "deny.write", "html");
    assert_eq!(
        d.location.as_deref(),
        Some("https://gitlab.example.com/gitlab/group/project/-/issues/new")
    );
    assert_eq!(d.message.as_deref(), Some(READ_ONLY_MESSAGE));
    assert_eq!(d.body, None);
    r.referer = None;
    for (root, want) in [("/gitlab", "/gitlab/"), ("", "/")] {
        let mut r = r.clone();
        r.path = format!("{root}/group/project/-/issues");
        let d = run(&r, &site(SiteRole::Primary, true), &cfg(root));
        assert_eq!(d.location.as_deref(), Some(want));
    }
}

#[test]
fn unavailable_mode_answers_503_with_retry_after_and_the_admin_message() {
    let c = GateConfig {
        deny_mode: DenyMode::Unavailable503 {
            retry_after_secs: 120,
        },
        ..cfg("")
    };
    let mut s = site(SiteRole::Primary, true);
    for accept in [Some("application/json"), Some("text/html"), None] {
        let mut r = req("POST", "/api/v4/jobs/request");
        r.accept = accept.map(str::to_string);
        let d = run(&r, &s, &c);
        expect(&d, Verdict::Deny, 503, "deny.write", "503 default message");
        assert_eq!(d.retry_after, Some(120));
        assert_eq!(
            d.message.as_deref(),
            Some("GitLab is undergoing maintenance")
        );
        assert_eq!(
            d.body.as_deref(),
            Some(r#"{"message":"GitLab is undergoing maintenance"}"#)
        );
        assert_eq!(d.content_type, "application/json");
        assert_eq!(d.location, None);
    }
    s.message = Some("Back at 14:00 \"UTC\"".into());
    let d = run(&req("POST", "/group/project/-/issues"), &s, &c);
    assert_eq!((d.status, d.retry_after), (503, Some(120)));
    assert_eq!(d.message.as_deref(), Some("Back at 14:00 \"UTC\""));
    assert_eq!(
        d.body.as_deref(),
        Some(r#"{"message":"Back at 14:00 \"UTC\""}"#)
    );
    s.message = Some("   ".into());
    assert_eq!(
        run(&req("POST", "/x"), &s, &c).message.as_deref(),
        Some(DEFAULT_MAINTENANCE_MESSAGE)
    );
}

#[test]
fn decisions_serialise_for_the_wire() {
    let d = run(
        &req("POST", "/api/v4/projects"),
        &site(SiteRole::Primary, true),
        &cfg(""),
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["status"], 403);
    assert_eq!(v["rule"], "deny.write");
    assert_eq!(v["body"], READ_ONLY_JSON_BODY);
    assert_eq!(v["granted_scopes"], serde_json::json!([]));
    let d = run(&req("GET", "/"), &site(SiteRole::Primary, true), &cfg(""));
    assert_eq!(serde_json::to_value(&d).unwrap()["verdict"], "allow");
}

// ---------------------------------------------------------------------------------------
// Git
// ---------------------------------------------------------------------------------------

fn git(op: GitOp, protocol: GitProtocol, proxied: bool, s: &SiteView) -> Decision {
    decide(
        &Request::Git(GitRequest {
            op,
            protocol,
            proxied,
        }),
        s,
        &cfg(""),
    )
    .unwrap()
}

#[test]
fn fetches_always_run() {
    for s in sites() {
        for p in [GitProtocol::Ssh, GitProtocol::Http] {
            let d = git(GitOp::UploadPack, p, false, &s);
            assert_eq!(d.verdict, Verdict::Allow, "{s:?}");
            let want = if s.role == SiteRole::Primary && !s.maintenance {
                "maintenance_off"
            } else {
                "git.pull"
            };
            assert_eq!(d.rule, want);
        }
    }
}

#[test]
fn pushes_in_maintenance_get_the_exact_message() {
    const TEXT: &str = "Git push is not allowed because this GitLab instance is currently in (read-only) maintenance mode.";
    for role in [SiteRole::Primary, SiteRole::Secondary] {
        for proxied in [false, true] {
            let s = site(role, true);
            let d = git(GitOp::ReceivePack, GitProtocol::Ssh, proxied, &s);
            expect(&d, Verdict::Deny, 401, "git.push.maintenance", "ssh");
            assert_eq!(d.content_type, "application/json");
            assert_eq!(
                d.body.as_deref(),
                Some(format!(r#"{{"status":false,"message":"{TEXT}"}}"#).as_str())
            );
            assert_eq!(d.message.as_deref(), Some(TEXT));
            let d = git(GitOp::ReceivePack, GitProtocol::Http, proxied, &s);
            expect(&d, Verdict::Deny, 403, "git.push.maintenance", "http");
            assert_eq!(
                (&*d.content_type, d.body.as_deref()),
                ("text/plain", Some(TEXT))
            );
        }
    }
    // The 503 mode does not change what git shows.
    let c = GateConfig {
        deny_mode: DenyMode::Unavailable503 {
            retry_after_secs: 60,
        },
        ..cfg("")
    };
    let d = decide(
        &Request::Git(GitRequest {
            op: GitOp::ReceivePack,
            protocol: GitProtocol::Http,
            proxied: false,
        }),
        &site(SiteRole::Primary, true),
        &c,
    )
    .unwrap();
    assert_eq!(d.status, 403);
    // A push over smart HTTP seen as a plain HTTP request gets the same answer.
    let d = run(
        &req("POST", "/g/p.git/git-receive-pack"),
        &site(SiteRole::Secondary, true),
        &cfg(""),
    );
    assert_eq!((d.status, d.body.as_deref()), (403, Some(TEXT)));
}

#[test]
fn pushes_outside_maintenance_run_on_the_primary_and_are_proxied_from_secondaries() {
    let d = git(
        GitOp::ReceivePack,
        GitProtocol::Ssh,
        false,
        &site(SiteRole::Primary, false),
    );
    expect(&d, Verdict::Allow, 200, "maintenance_off", "primary");
    let d = git(
        GitOp::ReceivePack,
        GitProtocol::Http,
        true,
        &site(SiteRole::Primary, false),
    );
    expect(
        &d,
        Verdict::Allow,
        200,
        "maintenance_off",
        "proxied to the primary",
    );
    let d = git(
        GitOp::ReceivePack,
        GitProtocol::Ssh,
        false,
        &site(SiteRole::Secondary, false),
    );
    expect(
        &d,
        Verdict::ProxyToPrimary,
        200,
        "git.push.proxy",
        "secondary",
    );
    let d = git(
        GitOp::ReceivePack,
        GitProtocol::Ssh,
        true,
        &site(SiteRole::Secondary, false),
    );
    expect(
        &d,
        Verdict::Deny,
        401,
        "git.push.not_primary",
        "proxied push at a secondary",
    );
}

// ---------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------

fn registry(scopes: &[&str], s: &SiteView) -> Result<Decision, GateError> {
    let r = RegistryRequest {
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    decide(&Request::Registry(r), s, &cfg(""))
}

#[test]
fn registry_drops_write_actions_in_maintenance() {
    for role in [SiteRole::Primary, SiteRole::Secondary] {
        let s = site(role, true);
        let d = registry(&["repository:group/app:pull,push"], &s).unwrap();
        expect(
            &d,
            Verdict::Allow,
            200,
            "registry.write_dropped",
            "pull,push",
        );
        assert_eq!(d.granted_scopes, ["repository:group/app:pull"]);
        assert_eq!(d.reason, "Write access denied in maintenance mode");
        let d = registry(
            &["repository:group/app:push", "repository:other/img:delete,*"],
            &s,
        )
        .unwrap();
        assert_eq!(d.rule, "registry.write_dropped");
        assert!(d.granted_scopes.is_empty(), "{:?}", d.granted_scopes);
        let d = registry(&["repository:group/app:pull", "registry:catalog:*"], &s).unwrap();
        expect(&d, Verdict::Allow, 200, "registry.granted", "pull only");
        assert_eq!(
            d.granted_scopes,
            ["repository:group/app:pull", "registry:catalog:*"]
        );
        let d = registry(&[], &s).unwrap();
        assert_eq!((d.rule, d.granted_scopes.len()), ("registry.granted", 0));
    }
}

#[test]
fn registry_grants_everything_outside_maintenance() {
    for role in [SiteRole::Primary, SiteRole::Secondary] {
        let d = registry(
            &["repository:group/app:pull,push,delete"],
            &site(role, false),
        )
        .unwrap();
        expect(&d, Verdict::Allow, 200, "maintenance_off", "off");
        assert_eq!(d.granted_scopes, ["repository:group/app:pull,push,delete"]);
    }
}

#[test]
fn bad_scopes_are_errors_in_every_mode() {
    for s in sites() {
        for bad in [
            "repository:group/app",
            "repository:Group/App:pull",
            "bogus",
            "repository:a:pull,fly",
        ] {
            match registry(&["repository:ok:pull", bad], &s) {
                Err(GateError::InvalidInput(m)) => assert!(m.contains("registry scope"), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
    let many: Vec<&str> = std::iter::repeat_n("repository:a:pull", 65).collect();
    assert!(registry(&many, &site(SiteRole::Primary, true)).is_err());
}

// ---------------------------------------------------------------------------------------
// Named actions
// ---------------------------------------------------------------------------------------

fn action(name: &str, source: Option<&str>, s: &SiteView) -> Result<Decision, GateError> {
    let r = ActionRequest {
        action: name.to_string(),
        source: source.map(str::to_string),
    };
    decide(&Request::Action(r), s, &cfg(""))
}

#[test]
fn actions_follow_spec() {
    // (action, source, runs in maintenance)
    let table = [
        ("incoming_email", None, false),
        ("create_user", Some("signup"), false),
        ("create_user", Some("ldap"), false),
        ("create_user", Some("saml"), false),
        ("create_user", None, false),
        ("feature_flag_toggle", None, false),
        ("feature_flag_check", None, true),
        ("create_incident", None, false),
        ("create_alert", None, false),
        ("outgoing_email", None, true),
        ("password_reset_email", None, false),
        ("pipeline_create", None, false),
        ("pipeline_retry", None, false),
        ("pipeline_cancel", None, false),
        ("runner_job_request", None, false),
        ("job_trace_update", None, false),
        ("job_status_update", None, false),
        ("background_job", Some("cron"), true),
        ("geo_status_report", None, true),
        ("geo_replication", None, true),
        ("geo_verification", None, true),
    ];
    for (name, source, runs) in table {
        let rule = format!("action.{name}");
        for role in [SiteRole::Primary, SiteRole::Secondary] {
            let d = action(name, source, &site(role, true)).unwrap();
            if runs {
                expect(&d, Verdict::Allow, 200, &rule, name);
            } else {
                expect(&d, Verdict::Deny, 403, &rule, name);
                assert_eq!(d.body.as_deref(), Some(READ_ONLY_JSON_BODY));
            }
        }
        let d = action(name, source, &site(SiteRole::Primary, false)).unwrap();
        expect(&d, Verdict::Allow, 200, "maintenance_off", name);
        let d = action(name, source, &site(SiteRole::Secondary, false)).unwrap();
        if runs {
            expect(&d, Verdict::Allow, 200, &rule, name);
        } else {
            expect(&d, Verdict::ProxyToPrimary, 200, "proxy_to_primary", name);
        }
    }
    let d = action("create_user", Some("saml"), &site(SiteRole::Primary, true)).unwrap();
    assert!(d.reason.contains("saml"), "{}", d.reason);
}

#[test]
fn unknown_actions_and_sources_are_errors() {
    let s = site(SiteRole::Primary, true);
    for (name, source) in [
        ("launch_missiles", None),
        ("", None),
        ("Incoming_Email", None),
        ("create_user", Some("oauth")),
        ("create_user", Some("SAML")),
        ("create_user", Some("")),
    ] {
        match action(name, source, &s) {
            Err(GateError::InvalidInput(m)) => assert!(m.contains("unknown"), "{m}"),
            other => panic!("{name} {source:?}: {other:?}"),
        }
    }
    let err = action("nope", None, &s).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid input: unknown action \"nope\"; known actions: incoming_email"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Fenced sites (SPEC §5)
// ---------------------------------------------------------------------------------------

const FENCED_TO: &str =
    "This site was replaced as the primary (epoch 7); send writes to https://geo-2.example.";
const FENCED_UNKNOWN: &str = "This site was replaced as the primary (epoch 7).";

/// Every role and maintenance setting, fenced at epoch 7, with and without the new primary
/// known, and the sentence each one's refusals must carry.
fn fenced_sites() -> Vec<(SiteView, &'static str)> {
    let mut out = Vec::new();
    for s in sites() {
        for (new_primary, text) in [
            (Some("https://geo-2.example"), FENCED_TO),
            (None, FENCED_UNKNOWN),
        ] {
            let mut s = s.clone();
            s.message = Some("Back soon".into());
            s.fenced = Some(Fenced {
                epoch: 7,
                new_primary: new_primary.map(str::to_string),
            });
            out.push((s, text));
        }
    }
    out
}

/// A fenced site's HTTP refusal: 503, Retry-After, the sentence as JSON, never a redirect.
#[track_caller]
fn assert_fenced_http(d: &Decision, text: &str, retry: u32, ctx: &str) {
    expect(d, Verdict::Deny, 503, "fenced", ctx);
    assert_eq!(&*d.content_type, "application/json", "{ctx}");
    let body = serde_json::json!({ "message": text }).to_string();
    assert_eq!(d.body.as_deref(), Some(body.as_str()), "{ctx}");
    assert_eq!(d.message.as_deref(), Some(text), "{ctx}");
    assert_eq!(
        (d.retry_after, d.location.as_deref()),
        (Some(retry), None),
        "{ctx}"
    );
    assert!(d.reason.contains(text), "{ctx}: {}", d.reason);
}

fn fenced_cfgs() -> [(GateConfig, u32); 2] {
    let unavailable = GateConfig {
        deny_mode: DenyMode::Unavailable503 {
            retry_after_secs: 120,
        },
        ..cfg("")
    };
    // In 403 mode nothing sets Retry-After: a fenced site uses the default.
    [
        (cfg(""), DEFAULT_FENCED_RETRY_AFTER_SECS),
        (unavailable, 120),
    ]
}

#[test]
fn fenced_message_names_the_new_primary_only_when_known() {
    let f = |new_primary: Option<&str>| Fenced {
        epoch: 7,
        new_primary: new_primary.map(str::to_string),
    };
    assert_eq!(f(Some("https://geo-2.example")).message(), FENCED_TO);
    assert_eq!(f(None).message(), FENCED_UNKNOWN);
    // A name that would smuggle a line into a text/plain body, or says nothing, is unknown.
    for bad in ["", "  ", "geo-2\r\nX-Evil: 1", "a\u{7}b"] {
        assert_eq!(f(Some(bad)).message(), FENCED_UNKNOWN, "{bad:?}");
    }
    // Quotes are escaped in the JSON body.
    let mut s = site(SiteRole::Primary, false);
    s.fenced = Some(f(Some("site \"two\"")));
    let d = run(&req("POST", "/api/v4/projects"), &s, &cfg(""));
    assert_eq!(
        d.body.as_deref(),
        Some(
            r#"{"message":"This site was replaced as the primary (epoch 7); send writes to site \"two\"."}"#
        )
    );
}

#[test]
fn fenced_sites_refuse_every_http_write_whatever_the_mode() {
    // Writes maintenance mode refuses, and writes it allows: all refused when fenced.
    let mut writes: Vec<HttpRequest> = DENIED
        .iter()
        .filter(|(_, path, ..)| !path.ends_with("/git-receive-pack"))
        .map(|&(m, p, ..)| req(m, p))
        .collect();
    for case in allowed_table() {
        let mut r = req(case.method, case.path);
        if let Some((body, ct)) = case.body {
            r = with_body(r, body, ct);
        }
        if !matches!(
            case.rule,
            "allow.graphql" | "allow.lfs_batch" | "allow.compare" | "allow.git_upload_pack"
        ) {
            writes.push(r);
        }
    }
    // What maintenance mode lets through without a body (nginx sends none) cannot be
    // proven a read.
    writes.push(req("POST", "/g/p.git/info/lfs/objects/batch"));
    writes.push(with_body(
        req("POST", "/g/p.git/info/lfs/objects/batch"),
        r#"{"operation":"upload","objects":[]}"#,
        "application/vnd.git-lfs+json",
    ));
    writes.push(with_body(
        req("POST", "/api/graphql"),
        r#"{"query":"mutation { createIssue(input: {}) { errors } }"}"#,
        "application/json",
    ));
    writes.push(req("PUT", "/api/v4/custom/hook"));
    for (base, retry) in fenced_cfgs() {
        let c = GateConfig {
            extra_allowlist: vec![AllowRoute::parse("PUT /api/v4/custom/*").unwrap()],
            exempt_cidrs: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            ..base
        };
        for (s, text) in fenced_sites() {
            for r in &writes {
                for ip in [None, Some("10.1.2.3")] {
                    let mut r = r.clone();
                    r.client_ip = ip.map(|i| i.parse().unwrap());
                    r.accept = Some("text/html".into());
                    let ctx = format!(
                        "{} {} on fenced {:?} maintenance={} from {ip:?}",
                        r.method, r.path, s.role, s.maintenance
                    );
                    assert_fenced_http(&run(&r, &s, &c), text, retry, &ctx);
                }
            }
        }
    }
}

#[test]
fn fenced_sites_still_serve_reads() {
    let reads = [
        (req("GET", "/api/v4/projects"), "read"),
        (req("HEAD", "/g/p/-/issues"), "read"),
        (req("OPTIONS", "/api/graphql"), "read"),
        (
            req("POST", "/g/p.git/git-upload-pack"),
            "allow.git_upload_pack",
        ),
        (req("POST", "/g/p/-/compare"), "allow.compare"),
        (
            with_body(
                req("POST", "/g/p.git/info/lfs/objects/batch"),
                LFS_DOWNLOAD,
                "application/vnd.git-lfs+json",
            ),
            "allow.lfs_batch",
        ),
        (
            with_body(req("POST", "/api/graphql"), GQL_QUERY, "application/json"),
            "allow.graphql",
        ),
    ];
    for (c, _) in fenced_cfgs() {
        for (s, _) in fenced_sites() {
            for (r, rule) in &reads {
                let ctx = format!("{} {} on {s:?}", r.method, r.path);
                expect(&run(r, &s, &c), Verdict::Allow, 200, rule, &ctx);
            }
        }
    }
}

#[test]
fn fenced_sites_refuse_pushes_on_every_git_surface() {
    for (c, retry) in fenced_cfgs() {
        for (s, text) in fenced_sites() {
            for proxied in [false, true] {
                let git = |op, protocol| {
                    decide(
                        &Request::Git(GitRequest {
                            op,
                            protocol,
                            proxied,
                        }),
                        &s,
                        &c,
                    )
                    .unwrap()
                };
                let ctx = format!("{s:?} proxied={proxied}");
                let d = git(GitOp::ReceivePack, GitProtocol::Ssh);
                expect(&d, Verdict::Deny, 401, "fenced", &ctx);
                let body = format!(r#"{{"status":false,"message":"{text}"}}"#);
                assert_eq!(
                    (&*d.content_type, d.body.as_deref(), d.message.as_deref()),
                    ("application/json", Some(body.as_str()), Some(text)),
                    "{ctx}"
                );
                let d = git(GitOp::ReceivePack, GitProtocol::Http);
                expect(&d, Verdict::Deny, 503, "fenced", &ctx);
                assert_eq!(
                    (&*d.content_type, d.body.as_deref(), d.retry_after),
                    ("text/plain", Some(text), Some(retry)),
                    "{ctx}"
                );
                for p in [GitProtocol::Ssh, GitProtocol::Http] {
                    expect(
                        &git(GitOp::UploadPack, p),
                        Verdict::Allow,
                        200,
                        "git.pull",
                        &ctx,
                    );
                }
            }
            // A push seen as plain HTTP requests gets git's answer too, from its discovery on.
            for (method, path) in [
                ("POST", "/g/p.git/git-receive-pack"),
                ("GET", "/g/p.git/info/refs?service=git-receive-pack"),
            ] {
                let d = run(&req(method, path), &s, &c);
                expect(&d, Verdict::Deny, 503, "fenced", path);
                assert_eq!(
                    (&*d.content_type, d.body.as_deref(), d.retry_after),
                    ("text/plain", Some(text), Some(retry))
                );
            }
            let d = run(&req("GET", "/api/graphql?query=mutation%7Bx%7D"), &s, &c);
            assert_fenced_http(&d, text, retry, "GraphQL mutation by GET");
        }
    }
}

#[test]
fn fenced_sites_issue_pull_only_registry_tokens() {
    for (s, text) in fenced_sites() {
        let r = |scopes: &[&str]| {
            let r = RegistryRequest {
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
            };
            decide(&Request::Registry(r), &s, &cfg("")).unwrap()
        };
        let d = r(&["repository:group/app:pull,push", "repository:x:delete"]);
        expect(&d, Verdict::Allow, 200, "fenced", "pull,push");
        assert_eq!(d.granted_scopes, ["repository:group/app:pull"]);
        assert!(d.reason.contains(text), "{}", d.reason);
        let d = r(&["repository:group/app:pull", "registry:catalog:*"]);
        expect(&d, Verdict::Allow, 200, "registry.granted", "pull");
        assert_eq!(
            d.granted_scopes,
            ["repository:group/app:pull", "registry:catalog:*"]
        );
    }
}

#[test]
fn fenced_sites_refuse_every_named_action_that_writes() {
    for (c, retry) in fenced_cfgs() {
        for (s, text) in fenced_sites() {
            for name in KNOWN_ACTIONS {
                let d = decide(
                    &Request::Action(ActionRequest {
                        action: name.to_string(),
                        source: None,
                    }),
                    &s,
                    &c,
                )
                .unwrap();
                if matches!(*name, "feature_flag_check" | "outgoing_email") {
                    expect(&d, Verdict::Allow, 200, &format!("action.{name}"), name);
                } else {
                    assert_fenced_http(&d, text, retry, name);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Exempt clients, extra allowlist, configuration
// ---------------------------------------------------------------------------------------

#[test]
fn exempt_clients_bypass_maintenance() {
    let c = GateConfig {
        exempt_cidrs: vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8::/32").unwrap(),
        ],
        ..cfg("")
    };
    let mut r = req("POST", "/api/v4/projects");
    for ip in ["10.1.2.3", "2001:db8::7", "::ffff:10.0.0.9"] {
        r.client_ip = Some(ip.parse().unwrap());
        let d = run(&r, &site(SiteRole::Primary, true), &c);
        expect(&d, Verdict::Allow, 200, "exempt_cidr", ip);
        // On a secondary the exemption lifts maintenance, not secondary-ness.
        let d = run(&r, &site(SiteRole::Secondary, true), &c);
        expect(&d, Verdict::ProxyToPrimary, 200, "exempt_cidr", ip);
    }
    r.client_ip = Some("192.0.2.1".parse().unwrap());
    expect(
        &run(&r, &site(SiteRole::Primary, true), &c),
        Verdict::Deny,
        403,
        "deny.write",
        "not exempt",
    );
    r.client_ip = None;
    expect(
        &run(&r, &site(SiteRole::Primary, true), &c),
        Verdict::Deny,
        403,
        "deny.write",
        "no address",
    );
}

#[test]
fn operator_routes_extend_but_do_not_loosen_the_allowlist() {
    let c = GateConfig {
        extra_allowlist: vec![
            AllowRoute::parse("POST,PUT /api/v4/custom/*").unwrap(),
            AllowRoute::parse("POST /api/graphql").unwrap(),
        ],
        ..cfg("/gitlab")
    };
    let s = site(SiteRole::Primary, true);
    let d = run(&req("PUT", "/gitlab/api/v4/custom/hook"), &s, &c);
    expect(&d, Verdict::Allow, 200, "allow.extra", "extra");
    let d = run(&req("DELETE", "/gitlab/api/v4/custom/hook"), &s, &c);
    expect(&d, Verdict::Deny, 403, "deny.write", "extra, other method");
    let d = run(&req("PUT", "/gitlab/api/v4/custom/../projects"), &s, &c);
    expect(&d, Verdict::Deny, 403, "deny.write", "extra, crafted");
    let m = with_body(
        req("POST", "/gitlab/api/graphql"),
        r#"{"query":"mutation { x }"}"#,
        "application/json",
    );
    expect(
        &run(&m, &s, &c),
        Verdict::Deny,
        403,
        "graphql.mutation",
        "extra cannot loosen",
    );
}

#[test]
fn configuration_is_validated() {
    assert_eq!(GateConfig::default().validate(), Ok(()));
    assert_eq!(GateConfig::default().max_body_bytes, 1024 * 1024);
    assert_eq!(GateConfig::default().deny_mode, DenyMode::Forbidden403);
    for bad in [
        GateConfig {
            relative_url_root: "gitlab".into(),
            ..GateConfig::default()
        },
        GateConfig {
            relative_url_root: "/gitlab/".into(),
            ..GateConfig::default()
        },
        GateConfig {
            max_body_bytes: 0,
            ..GateConfig::default()
        },
        GateConfig {
            max_body_bytes: usize::MAX,
            ..GateConfig::default()
        },
        GateConfig {
            deny_mode: DenyMode::Unavailable503 {
                retry_after_secs: 0,
            },
            ..GateConfig::default()
        },
        GateConfig {
            deny_mode: DenyMode::Unavailable503 {
                retry_after_secs: 86_401,
            },
            ..GateConfig::default()
        },
    ] {
        match bad.validate() {
            Err(e @ GateError::InvalidConfig(_)) => {
                assert!(e.to_string().starts_with("invalid configuration: "))
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // An unvalidated trailing slash on the root still works: the gate trims it.
    let d = run(
        &req("POST", "/gitlab/users/sign_in"),
        &site(SiteRole::Primary, true),
        &cfg("/gitlab/"),
    );
    assert_eq!(d.rule, "allow.sign_in");
}

// ---------------------------------------------------------------------------------------
// Crafted paths and bad input
// ---------------------------------------------------------------------------------------

#[test]
fn crafted_paths_do_not_reach_allowlist_rows() {
    let s = site(SiteRole::Primary, true);
    for root in ROOTS {
        let c = cfg(root);
        for path in [
            "/api/v4/projects/1/../../internal/x",
            "/api/v4/projects/1/../../v4/internal/allowed",
            "/users/sign_in/../../api/v4/projects",
            "/group/project/-/create/main/../../../../users/sign_in",
            "/users/sign_in%2F..%2F..%2Fapi",
            "/users%2Fsign_in",
            "/users%2fsign_in",
            "/users%5Csign_in",
            "/users\\sign_in",
            "/users/sign_in%00",
            "/users/sign_in\u{0}",
            "/users/./sign_in",
            "/users/sign_in/.",
            "/users/%2e%2e/users/sign_in",
            "/api/v4/internal%2F../projects",
            "/api/v4/projects/x%2Fapi%2Fv4%2Finternal",
            "/users/sign_in%252F",
            "/users/sign_in%",
            "/users/sign_in%zz",
            "/users/sign_in%FF",
            "/admin/geo%2F../../api/v4/projects",
            "/g/p/-/blob%2Fcompare",
            "/g/p.git/git-upload-pack%2F..%2F..%2Fgit-receive-pack",
            "/api/graphql/../v4/projects",
            "users/sign_in",
            "/USERS/SIGN_IN",
        ] {
            let r = req("POST", &format!("{root}{path}"));
            let d = run(&r, &s, &c);
            assert_eq!(d.verdict, Verdict::Deny, "{root}{path}: {d:?}");
        }
        // What a router routes the same way is still allowed.
        for (path, rule) in [
            ("//users/sign_in", "allow.sign_in"),
            ("/users//sign_in/", "allow.sign_in"),
            (
                "/users/sign_in?redirect=/../../api/v4/projects",
                "allow.sign_in",
            ),
            ("/users/sign_in?x=%2F", "allow.sign_in"),
            ("/users/sign%5Fin", "allow.sign_in"),
            (
                "/api/v4/internal/allowed?x=../../projects",
                "allow.internal_api",
            ),
        ] {
            let d = run(&req("POST", &format!("{root}{path}")), &s, &c);
            expect(&d, Verdict::Allow, 200, rule, &format!("{root}{path}"));
        }
    }
    // The root itself cannot be escaped or faked.
    let c = cfg("/gitlab");
    for path in [
        "/gitlab/../users/sign_in",
        "/gitlabx/users/sign_in",
        "/gitlab%2Fusers/sign_in",
        "/x/gitlab/users/sign_in",
    ] {
        assert_eq!(
            run(&req("POST", path), &s, &c).verdict,
            Verdict::Deny,
            "{path}"
        );
    }
    // Crafted paths under /api/ still get the JSON answer.
    let d = run(
        &req("POST", "/api/v4/projects/1/../../internal/x"),
        &s,
        &cfg(""),
    );
    assert_eq!((d.status, &*d.content_type), (403, "application/json"));
}

#[test]
fn overlong_and_malformed_input_is_an_error_not_a_panic() {
    let s = site(SiteRole::Primary, true);
    let c = cfg("");
    let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    for method in ["GET", "POST"] {
        match decide(&Request::Http(req(method, &long)), &s, &c) {
            Err(GateError::InvalidInput(m)) => assert!(m.contains("longer than 8192"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let fits = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
    assert!(decide(&Request::Http(req("POST", &fits)), &s, &c).is_ok());
    let mut r = req("POST", "/x");
    r.referer = Some("x".repeat(MAX_HEADER_BYTES + 1));
    assert!(matches!(
        decide(&Request::Http(r), &s, &c),
        Err(GateError::InvalidInput(_))
    ));
    assert!(matches!(
        decide(&Request::Http(req("", "/")), &s, &c),
        Err(GateError::InvalidInput(_))
    ));
    // Garbage bodies are decisions.
    for body in [
        &b"\xff\xfe"[..],
        b"{",
        b"[[[[",
        b"{\"query\":\"query { a(\"}",
        &[0u8; 1000],
    ] {
        for path in ["/api/graphql", "/g/p.git/info/lfs/objects/batch"] {
            let mut r = req("POST", path);
            r.body = Some(body.to_vec());
            assert!(decide(&Request::Http(r), &s, &c).is_ok(), "{path} {body:?}");
        }
    }
}

#[test]
fn errors_display_and_are_std_errors() {
    let e: Box<dyn std::error::Error> = Box::new(GateError::InvalidInput("x".into()));
    assert_eq!(e.to_string(), "invalid input: x");
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Rule ids under which a write may pass on a read-only site, written out by hand.
const WRITE_ALLOWING: &[&str] = &[
    "allow.graphql",
    "allow.lfs_batch",
    "allow.admin_settings",
    "allow.api_settings",
    "allow.sign_in",
    "allow.oauth_token",
    "allow.geo_sign_in",
    "allow.geo_sign_out",
    "allow.auth_callback",
    "allow.sign_out",
    "allow.admin_session",
    "allow.admin_session_destroy",
    "allow.compare",
    "allow.git_upload_pack",
    "allow.internal_api",
    "allow.internal_api_v3",
    "allow.sidekiq",
    "allow.admin_geo",
    "allow.geo_replication",
    "allow.geo_status",
    "allow.geo_graphql",
    "allow.jwt_auth",
    "allow.graphql.geo_registries_update",
    "graphql.no_body",
    "graphql.no_operation",
    "lfs.no_body",
    "lfs.unparseable",
];

#[test]
fn the_hand_written_list_matches_the_module() {
    let mut mine: Vec<&str> = WRITE_ALLOWING.to_vec();
    mine.extend(["allow.extra", "exempt_cidr"]);
    let mut theirs: Vec<&str> = rules::write_allowing_ids().collect();
    mine.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(mine, theirs);
}

fn any_site() -> impl Strategy<Value = SiteView> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(".{0,40}"),
        proptest::option::of((any::<u64>(), proptest::option::of(".{0,20}"))),
    )
        .prop_map(|(p, m, message, fenced)| SiteView {
            role: if p {
                SiteRole::Primary
            } else {
                SiteRole::Secondary
            },
            maintenance: m,
            message,
            fenced: fenced.map(|(epoch, new_primary)| Fenced { epoch, new_primary }),
        })
}

fn any_cfg() -> impl Strategy<Value = GateConfig> {
    (
        prop::sample::select(vec!["", "/gitlab", "/a/b"]),
        any::<bool>(),
    )
        .prop_map(|(root, unavailable)| GateConfig {
            relative_url_root: root.to_string(),
            deny_mode: if unavailable {
                DenyMode::Unavailable503 {
                    retry_after_secs: 30,
                }
            } else {
                DenyMode::Forbidden403
            },
            ..GateConfig::default()
        })
}

/// Allowlisted routes, the material crafted paths are built around.
const ROUTES: &[&str] = &[
    "users/sign_in",
    "users/auth/geo/sign_in",
    "users/auth/saml/callback",
    "oauth/token",
    "admin/session",
    "g/p/-/compare",
    "g/p/-/repository/files/compare",
    "g/p/new/main/info/lfs/objects/batch",
    "g/p/-/create/main/x.git/git-upload-pack",
    "x.git/git-upload-pack",
    "x.git/info/lfs/objects/batch",
    "api/v4/internal/allowed",
    "api/v3/internal",
    "admin/sidekiq",
    "admin/geo",
    "api/v4/geo_replication",
    "api/v4/geo/status",
    "api/v4/geo/graphql",
    "jwt/auth",
    "api/graphql",
    "api/v4/application/settings",
    "admin/application_settings/general",
];

/// Dot segments, encodings and separators that might smuggle a path into a route.
const TRICKS: &[&str] = &[
    "..",
    ".",
    "",
    "../..",
    "%2F",
    "%2f",
    "%5C",
    "%5c",
    "%2e",
    "%2E%2E",
    "%2e%2e%2f",
    "%00",
    "\\",
    "..%2F",
    "%2F..",
    "%",
    "%zz",
    "#",
    "a?b=/..",
    "%5F",
    "%41",
];

/// Ordinary segments.
const WORDS: &[&str] = &[
    "users",
    "sign_in",
    "api",
    "v4",
    "internal",
    "admin",
    "geo",
    "projects",
    "gitlab",
    "-",
    "compare",
    "git-receive-pack",
    "x.git",
    "sign%5Fin",
    "graphql",
];

fn crafted_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(ROUTES),
        prop::sample::select(TRICKS),
        prop::sample::select(WORDS),
    ];
    (any::<bool>(), prop::collection::vec(piece, 0..7)).prop_map(|(rooted, pieces)| {
        let mut p = if rooted {
            String::from("/gitlab")
        } else {
            String::new()
        };
        for piece in pieces {
            p.push('/');
            p.push_str(piece);
        }
        if p.is_empty() {
            "/".into()
        } else {
            p
        }
    })
}

/// A naive, independent reading of a raw path: `None` if it has anything that may be read
/// two ways (dot segments, encoded separators, backslashes, bad escapes), else the path with
/// the harmless escapes decoded and empty segments dropped.
fn naive_clean(raw: &str, root: &str) -> Option<String> {
    let p = raw.split('?').next().unwrap_or("");
    let p = p.replace("%5F", "_").replace("%41", "A");
    if p.contains(['%', '\\', '#', '\0']) || !p.starts_with('/') {
        return None;
    }
    let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    let full = format!("/{}", segs.join("/"));
    if root.is_empty() {
        return Some(full);
    }
    let rest = full.strip_prefix(root)?;
    match rest {
        "" => Some("/".into()),
        r if r.starts_with('/') => Some(r.to_string()),
        _ => None,
    }
}

/// Words that are routes inside a project, never a group's or project's name.
fn route_word(seg: &str) -> bool {
    matches!(
        seg,
        "-" | "blob" | "new" | "create" | "edit" | "files" | "repository" | "tree" | "raw"
    )
}

/// Whether `segs` ends in a repository, `<namespace>/<project>.git`: groups may have any
/// name but `-`, and the project's own name is not a word of a project route.
fn repository(segs: &[&str]) -> bool {
    let Some((repo, namespace)) = segs.split_last() else {
        return false;
    };
    let name = repo.strip_suffix(".git").unwrap_or_default();
    !namespace.is_empty()
        && !name.is_empty()
        && !route_word(name)
        && namespace.iter().all(|s| !s.is_empty() && *s != "-")
}

/// Whether `path` (clean, below the root) is one that rule `rule` is about.
fn belongs(rule: &str, path: &str, method: &str) -> bool {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let has_run = |run: &[&str]| segs.windows(run.len()).any(|w| w == run);
    let post = method == "POST";
    match rule {
        "allow.sign_in" => post && path == "/users/sign_in",
        "allow.sign_out" => post && path == "/users/sign_out",
        "allow.geo_sign_in" => post && path == "/users/auth/geo/sign_in",
        "allow.geo_sign_out" => post && path == "/users/auth/geo/sign_out",
        "allow.auth_callback" => post && segs.len() > 2 && segs[..2] == ["users", "auth"],
        "allow.oauth_token" => post && path == "/oauth/token",
        "allow.admin_session" => post && path == "/admin/session",
        "allow.admin_session_destroy" => post && path == "/admin/session/destroy",
        "allow.admin_settings" => {
            matches!(method, "POST" | "PUT") && path == "/admin/application_settings/general"
        }
        "allow.api_settings" => {
            matches!(method, "POST" | "PUT")
                && segs.starts_with(&["api", "v4", "application", "settings"])
        }
        "allow.compare" => {
            let project = match segs.as_slice() {
                [p @ .., "-", "compare"] | [p @ .., "compare"] => p,
                _ => &[][..],
            };
            post && project.len() >= 2 && !project.iter().any(|s| route_word(s))
        }
        "allow.git_upload_pack" => {
            post && segs.len() > 2
                && segs[segs.len() - 1] == "git-upload-pack"
                && repository(&segs[..segs.len() - 1])
        }
        "allow.lfs_batch" | "lfs.no_body" | "lfs.unparseable" => {
            post && segs.len() > 5
                && segs.ends_with(&["info", "lfs", "objects", "batch"])
                && repository(&segs[..segs.len() - 4])
        }
        "allow.internal_api" => segs.len() > 3 && segs.starts_with(&["api", "v4", "internal"]),
        "allow.internal_api_v3" => segs.len() > 3 && segs.starts_with(&["api", "v3", "internal"]),
        "allow.sidekiq" => post && segs.starts_with(&["admin", "sidekiq"]),
        "allow.admin_geo" => post && segs.starts_with(&["admin", "geo"]),
        "allow.geo_replication" => post && has_run(&["api", "v4", "geo_replication"]),
        "allow.geo_status" => post && has_run(&["api", "v4", "geo", "status"]),
        "allow.geo_graphql" => post && has_run(&["api", "v4", "geo", "graphql"]),
        "allow.jwt_auth" => post && path == "/jwt/auth",
        r if r.contains("graphql") => post && path == "/api/graphql",
        _ => false,
    }
}

/// Tokens a random GraphQL document is built from: names, punctuation, ignored tokens
/// (commas, comments, a BOM), strings and the words that change what runs.
const GQL_TOKENS: &[&str] = &[
    " ",
    "\n",
    "\t",
    ",",
    "\u{feff}",
    "# c\n",
    "#mutation\n",
    "{",
    "}",
    "(",
    ")",
    ":",
    "[",
    "]",
    "...",
    "$v",
    "!",
    "=",
    "@skip(if: true)",
    "\"s\"",
    "\"\"\"b\"\"\"",
    "1",
    "true",
    "null",
    "a",
    "createIssue",
    "destroyProject",
    "geoRegistriesUpdate",
    "__typename",
    "input",
    "query",
    "mutation",
    "subscription",
    "fragment",
    "F",
    "on",
    "Mutation",
    "Query",
    "errors",
    "id",
];

fn gql_tail() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(GQL_TOKENS), 0..24).prop_map(|t| t.join(" "))
}

/// A document whose first operation is a mutation: `mutation` is its first significant
/// token, after any ignored ones.
fn mutation_document() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "",
            " ",
            "\n",
            ",",
            "# q {\n",
            "\u{feff}",
            " , # x\n\t",
        ]),
        gql_tail(),
        prop_oneof![
            Just(String::from("{ createIssue(input: {}) { errors } }")),
            Just(String::from("{ geoRegistriesUpdate { errors } }")),
            gql_tail(),
        ],
    )
        .prop_map(|(lead, tail, body)| format!("{lead}mutation {tail} {body}"))
}

/// A GraphQL request carrying `doc` in every way a client may send one: (path suffix,
/// body, content type).
fn gql_transport(doc: String) -> impl Strategy<Value = (String, Option<Vec<u8>>, Option<String>)> {
    let json = serde_json::json!({ "query": doc }).to_string();
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let form = format!("query={}", enc(&doc));
    let multipart = |name: &str, content: &str| {
        format!(
            "--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{content}\r\n--b--\r\n"
        )
        .into_bytes()
    };
    let options: Vec<(String, Option<Vec<u8>>, Option<String>)> = vec![
        (
            String::new(),
            Some(json.clone().into_bytes()),
            Some("application/json".into()),
        ),
        (
            String::new(),
            Some(format!("[{json}]").into_bytes()),
            Some("application/json; charset=utf-8".into()),
        ),
        (
            String::new(),
            Some(
                serde_json::json!({ "query": doc, "operationName": null })
                    .to_string()
                    .into_bytes(),
            ),
            Some("application/json".into()),
        ),
        (
            String::new(),
            Some(form.clone().into_bytes()),
            Some("application/x-www-form-urlencoded".into()),
        ),
        (String::new(), Some(form.clone().into_bytes()), None),
        (
            String::new(),
            Some(multipart("operations", &json)),
            Some("multipart/form-data; boundary=b".into()),
        ),
        (
            String::new(),
            Some(multipart("query", &doc)),
            Some("multipart/mixed; boundary=b".into()),
        ),
        (format!("?{form}"), None, None),
        (
            format!("?{form}"),
            Some(b"{}".to_vec()),
            Some("application/json".into()),
        ),
        (
            String::new(),
            Some(json.into_bytes()),
            Some("text/plain".into()),
        ),
    ];
    prop::sample::select(options)
}

fn maintenance_site() -> impl Strategy<Value = SiteView> {
    (any::<bool>(), any::<bool>()).prop_map(|(primary, fenced)| SiteView {
        fenced: fenced.then_some(Fenced {
            epoch: 3,
            new_primary: None,
        }),
        ..site(
            if primary {
                SiteRole::Primary
            } else {
                SiteRole::Secondary
            },
            true,
        )
    })
}

/// Content types a hostile client may send to the GraphQL route.
fn any_content_type() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        prop::sample::select(vec![
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "multipart/mixed; boundary=\"b\"",
            "text/plain",
            "application/graphql",
            "",
        ])
        .prop_map(str::to_string),
        ".{0,30}",
    ])
}

/// Bodies a hostile client may send: bytes, JSON-ish text, multipart-ish text.
fn any_body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let piece = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        "\"query\"",
        "\"Query\"",
        "\"_json\"",
        "\"operationName\"",
        ":",
        ",",
        "\"mutation { a }\"",
        "\"{ a }\"",
        "/* */",
        "--b\r\n",
        "\r\n\r\n",
        "Content-Disposition: form-data; name=\"operations\"",
        "name=query",
        "query=",
        "&",
        "mutation",
        "%7B",
        "null",
        " ",
    ]);
    proptest::option::of(prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        prop::collection::vec(piece, 0..16).prop_map(|p| p.concat().into_bytes()),
    ])
}

/// 512 cases per property, or `PROPTEST_CASES` for a long run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn hostile_graphql_requests_never_pass_a_write_unnamed(
        path in prop_oneof![
            Just(String::from("/api/graphql")),
            "/api/graphql\\?.{0,40}".prop_map(|s| s),
            crafted_path(),
            ".{0,80}",
        ],
        method in prop::sample::select(vec!["POST", "PUT", "PATCH", "DELETE", "PROPFIND"]),
        body in any_body(),
        content_type in any_content_type(),
        s in maintenance_site(),
        c in any_cfg(),
    ) {
        let r = HttpRequest { method: method.into(), path: path.clone(), body, content_type, ..HttpRequest::default() };
        // Never a panic; an error only for malformed input.
        let Ok(d) = decide(&Request::Http(r), &s, &c) else { return Ok(()); };
        prop_assert_ne!(d.verdict, Verdict::ProxyToPrimary, "never proxied in maintenance");
        if d.verdict == Verdict::Allow {
            prop_assert!(WRITE_ALLOWING.contains(&d.rule), "{} {} passed under {}", method, path, d.rule);
            if s.fenced.is_some() {
                prop_assert!(
                    ["allow.graphql", "allow.lfs_batch", "allow.compare", "allow.git_upload_pack"].contains(&d.rule),
                    "fenced site let {} {} through under {}", method, path, d.rule
                );
            }
        } else {
            prop_assert!(matches!(d.status, 301 | 401 | 403 | 503), "{:?}", d);
        }
    }

    #[test]
    fn a_graphql_mutation_is_never_allowed_however_it_is_sent(
        (suffix, body, content_type, doc) in mutation_document()
            .prop_flat_map(|doc| (gql_transport(doc.clone()), Just(doc)))
            .prop_map(|((suffix, body, ct), doc)| (suffix, body, ct, doc)),
        s in maintenance_site(),
        root in prop::sample::select(vec!["", "/gitlab"]),
    ) {
        let r = HttpRequest {
            method: "POST".into(),
            path: format!("{root}/api/graphql{suffix}"),
            body,
            content_type,
            ..HttpRequest::default()
        };
        let d = decide(&Request::Http(r), &s, &cfg(root));
        let d = match d { Ok(d) => d, Err(e) => return Err(TestCaseError::fail(format!("{e}"))) };
        if d.is_allowed() {
            // Only Geo's own bookkeeping, and never on a fenced site.
            prop_assert_eq!(d.rule, "allow.graphql.geo_registries_update", "{:?} allowed: {:?}", doc, d);
            prop_assert!(doc.contains("geoRegistriesUpdate"), "{:?}", doc);
            prop_assert!(s.fenced.is_none(), "{:?}", doc);
        }
    }

    #[test]
    fn a_read_is_never_denied(
        method in prop::sample::select(vec!["GET", "HEAD", "OPTIONS"]),
        path in prop_oneof![".{0,200}", crafted_path()],
        body in proptest::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        accept in proptest::option::of(".{0,20}"),
        s in any_site(),
        c in any_cfg(),
    ) {
        let r = HttpRequest { method: method.into(), path, accept, body, ..HttpRequest::default() };
        let d = decide(&Request::Http(r), &s, &c);
        prop_assert!(matches!(d, Ok(ref d) if d.verdict == Verdict::Allow), "{:?}", d);
    }

    #[test]
    fn a_write_on_a_read_only_site_passes_only_under_an_allowlist_rule(
        method in prop::sample::select(vec!["POST", "PUT", "PATCH", "DELETE", "PROPFIND", "get", "MKCOL"]),
        path in prop_oneof![".{0,100}", crafted_path()],
        primary in any::<bool>(),
        c in any_cfg(),
    ) {
        let s = site(if primary { SiteRole::Primary } else { SiteRole::Secondary }, true);
        let r = req(method, &path);
        let d = decide(&Request::Http(r), &s, &c);
        let d = match d { Ok(d) => d, Err(e) => return Err(TestCaseError::fail(format!("{e}"))) };
        prop_assert_ne!(d.verdict, Verdict::ProxyToPrimary, "never proxied in maintenance");
        if d.verdict == Verdict::Allow {
            prop_assert!(WRITE_ALLOWING.contains(&d.rule), "{} {} passed under {}", method, path, d.rule);
        } else {
            prop_assert!(matches!(d.status, 301 | 403 | 503), "{:?}", d);
        }
    }

    #[test]
    fn crafted_paths_only_reach_their_own_rule(
        method in prop::sample::select(vec!["POST", "PUT", "PATCH", "DELETE", "PROPFIND"]),
        path in crafted_path(),
        root in prop::sample::select(vec!["", "/gitlab"]),
    ) {
        let d = run(&req(method, &path), &site(SiteRole::Primary, true), &cfg(root));
        if d.verdict == Verdict::Allow {
            let clean = naive_clean(&path, root);
            prop_assert!(clean.is_some(), "{} {} reached {} through an ambiguous path", method, path, d.rule);
            let clean = clean.unwrap_or_default();
            prop_assert!(belongs(d.rule, &clean, method), "{} {} (= {}) reached {}", method, path, clean, d.rule);
        }
    }

    #[test]
    fn any_input_gives_a_decision_or_an_error(
        method in ".{0,12}",
        path in ".{0,300}",
        body in proptest::option::of(prop::collection::vec(any::<u8>(), 0..256)),
        gql in ".{0,200}",
        ct in proptest::option::of(prop::sample::select(vec![
            "application/json", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "text/plain",
        ])),
        scopes in prop::collection::vec(".{0,40}", 0..4),
        action in ".{0,20}",
        s in any_site(),
        c in any_cfg(),
    ) {
        let _ = decide(&Request::Http(HttpRequest { method: method.clone(), path: path.clone(), body, content_type: ct.map(str::to_string), ..HttpRequest::default() }), &s, &c);
        let g = with_body(req("POST", "/api/graphql"), &serde_json::json!({ "query": gql }).to_string(), "application/json");
        let _ = decide(&Request::Http(g), &s, &c);
        let _ = decide(&Request::Http(with_body(req("POST", "/api/graphql"), &gql, "application/json")), &s, &c);
        let _ = decide(&Request::Registry(RegistryRequest { scopes }), &s, &c);
        let _ = decide(&Request::Action(ActionRequest { action, source: None }), &s, &c);
    }
}
