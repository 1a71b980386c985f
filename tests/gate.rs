//! The gate through every front end a user has: gRPC, the HTTP endpoints nginx and
//! gitlab-shell call, the `check` CLI, real git with the pre-receive hook, and real nginx
//! with the shipped `auth_request` snippet.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use common::*;
use geo_agent::server::pb;

const READ_ONLY: &str =
    r#"{"message":"You cannot perform write operations on a read-only instance"}"#;
const PUSH_REFUSED: &str =
    "Git push is not allowed because this GitLab instance is currently in (read-only) maintenance mode.";

/// A raw HTTP/1.1 exchange: (status, headers and body as text).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut all = vec![("Host", "gitlab.test")];
    all.extend_from_slice(headers);
    let r = http_exchange(addr, method, path, &all, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"));
    (r.status, format!("{}\r\n\r\n{}", r.head, r.body))
}

async fn check(site: &SiteProc, request: pb::check_request::Request) -> pb::Decision {
    let mut c = pb::gate_service_client::GateServiceClient::new(channel(&site.url()).await);
    c.check(pb::CheckRequest {
        request: Some(request),
    })
    .await
    .expect("Check")
    .into_inner()
}

fn http_check(method: &str, path: &str) -> pb::check_request::Request {
    pb::check_request::Request::Http(pb::HttpCheck {
        method: method.into(),
        path: path.into(),
        accept: "application/json".into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_http_and_cli_give_the_same_answers_and_follow_the_mode() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let http_addr = primary.http.to_string();
    let auth = |method: &str, uri: &str| {
        http(
            &http_addr,
            "GET",
            "/gate/auth",
            &[
                ("X-Original-Method", method),
                ("X-Original-URI", uri),
                ("Accept", "application/json"),
            ],
            "",
        )
    };

    // Maintenance off: writes pass at the primary, are proxied at a secondary.
    let d = check(&primary, http_check("POST", "/api/v4/projects")).await;
    assert_eq!(
        (d.verdict, d.rule.as_str()),
        (pb::Verdict::Allow as i32, "maintenance_off")
    );
    let d = check(&s1, http_check("POST", "/api/v4/projects")).await;
    assert_eq!(d.verdict, pb::Verdict::ProxyToPrimary as i32);
    assert_eq!(auth("POST", "/api/v4/projects").0, 204);

    set_maintenance(&primary, &cluster.admin_token, true, "upgrading")
        .await
        .unwrap();
    eventually("s1 in maintenance", || async {
        s1.get_mode().await.maintenance_mode.then_some(())
    })
    .await;

    for site in [&primary, &s1] {
        let d = check(site, http_check("POST", "/api/v4/projects")).await;
        assert_eq!(d.verdict, pb::Verdict::Deny as i32, "{}", site.name);
        assert_eq!(
            (d.status, d.body.as_str(), d.rule.as_str()),
            (403, READ_ONLY, "deny.write")
        );
        let d = check(site, http_check("GET", "/api/v4/projects")).await;
        assert_eq!(d.verdict, pb::Verdict::Allow as i32);
        let d = check(site, http_check("POST", "/users/sign_in")).await;
        assert_eq!(
            (d.verdict, d.rule.as_str()),
            (pb::Verdict::Allow as i32, "allow.sign_in")
        );
    }

    // The nginx endpoints: auth answers 204/403, respond renders the exact answer.
    let (status, text) = auth("POST", "/api/v4/projects");
    assert_eq!(status, 403);
    assert!(text.contains("x-gate-rule: deny.write"), "{text}");
    assert_eq!(auth("GET", "/api/v4/projects").0, 204);
    let (status, text) = http(
        &http_addr,
        "POST",
        "/gate/respond",
        &[
            ("X-Original-Method", "POST"),
            ("X-Original-URI", "/dashboard/projects"),
        ],
        "",
    );
    assert_eq!(status, 301, "a browser is sent back: {text}");
    assert!(text.to_lowercase().contains("location: /"), "{text}");
    assert_eq!(
        http(&http_addr, "GET", "/gate/auth", &[], "").0,
        400,
        "X-Original-URI is required"
    );

    // The SSH `allowed` answer: 401 with status false and the exact text.
    let (status, text) = http(
        &http_addr,
        "POST",
        "/api/v4/internal/allowed",
        &[("Content-Type", "application/json")],
        r#"{"action":"git-receive-pack","protocol":"ssh"}"#,
    );
    assert_eq!(status, 401);
    assert!(
        text.contains(&format!(r#""message":"{PUSH_REFUSED}""#)),
        "{text}"
    );
    assert!(text.contains(r#""status":false"#), "{text}");
    let (status, _) = http(
        &http_addr,
        "POST",
        "/api/v4/internal/allowed",
        &[],
        r#"{"action":"git-upload-pack"}"#,
    );
    assert_eq!(status, 200);

    // Registry: the token is issued, pull only.
    let d = check(
        &primary,
        pb::check_request::Request::Registry(pb::RegistryCheck {
            scopes: vec!["repository:group/app:pull,push".into()],
        }),
    )
    .await;
    assert_eq!(d.granted_scopes, ["repository:group/app:pull"]);
    assert_eq!(d.reason, "Write access denied in maintenance mode");

    // The CLI: exit 1 denied, 0 allowed, 2 bad input; JSON carries the rule.
    let p = primary.url();
    let (code, out, _) = cli(
        &[
            "check",
            "http",
            "POST",
            "/api/v4/projects",
            "--json",
            "--addr",
            &p,
        ],
        &[],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("deny"), Some("deny.write"))
    );
    let (code, out, _) = cli(&["check", "git", "pull", "--addr", &p], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(
        &["check", "git", "push", "--protocol", "http", "--addr", &p],
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains(PUSH_REFUSED), "{out}");
    let (code, _, err) = cli(
        &["check", "registry", "repository::pull", "--addr", &p],
        &[],
    );
    assert_eq!(code, 2, "bad scope syntax is an error: {err}");
    assert!(err.contains("InvalidArgument"), "{err}");
    let (code, _, err) = cli(
        &[
            "check",
            "http",
            "POST",
            &format!("/{}", "a".repeat(10_000)),
            "--addr",
            &p,
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");

    set_maintenance(&primary, &cluster.admin_token, false, "")
        .await
        .unwrap();
    let (code, _, _) = cli(
        &["check", "http", "POST", "/api/v4/projects", "--addr", &p],
        &[],
    );
    assert_eq!(code, 0);
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_push_is_refused_in_maintenance_by_the_pre_receive_hook() {
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let root = cluster.path("git");
    std::fs::create_dir_all(&root).unwrap();
    let bare = root.join("repo.git");
    assert!(
        git(&root, &["init", "--bare", "-q", bare.to_str().unwrap()])
            .status
            .success()
    );
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nGEO_AGENT_ADDR={} exec {BIN} hook pre-receive\n",
            primary.url()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let work = root.join("work");
    let out = git(
        &root,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commit = |n: &str| {
        std::fs::write(work.join("file"), n).unwrap();
        assert!(git(&work, &["add", "file"]).status.success());
        assert!(git(&work, &["commit", "-q", "-m", n]).status.success());
    };
    commit("one");
    let out = git(&work, &["push", "-q", "origin", "HEAD"]);
    assert!(
        out.status.success(),
        "push outside maintenance: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    set_maintenance(&primary, &cluster.admin_token, true, "")
        .await
        .unwrap();
    commit("two");
    let out = git(&work, &["push", "origin", "HEAD"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push must fail in maintenance");
    assert!(
        stderr.contains(&format!("remote: {PUSH_REFUSED}")),
        "{stderr}"
    );

    let copy = root.join("copy");
    let out = git(
        &root,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "clone works in maintenance");
    assert_eq!(std::fs::read_to_string(copy.join("file")).unwrap(), "one");

    set_maintenance(&primary, &cluster.admin_token, false, "")
        .await
        .unwrap();
    let out = git(&work, &["push", "-q", "origin", "HEAD"]);
    assert!(
        out.status.success(),
        "push after disable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_the_shipped_snippet() {
    let Some(nginx) = nginx_or_skip() else {
        return;
    };
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let snippet = std::fs::canonicalize("contrib/nginx/geo-gate.conf").unwrap();
    let (front, upstream) = (free_port(), free_port());
    let block = format!(
        "  upstream geo_agent_gate {{ server {}; keepalive 4; }}\n  server {{ listen 127.0.0.1:{upstream}; location / {{ return 200 \"upstream ok\\n\"; }} }}\n  server {{\n    listen 127.0.0.1:{front};\n    include {};\n    location / {{ proxy_pass http://127.0.0.1:{upstream}; }}\n  }}\n",
        primary.http,
        snippet.display()
    );
    let _nginx = Nginx::start(&nginx, &cluster.path("nginx"), &block);
    let addr = format!("127.0.0.1:{front}");
    eventually("nginx to listen", || async {
        TcpStream::connect(&addr).ok().map(|_| ())
    })
    .await;
    let json = [
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
    ];

    for (method, path) in [
        ("POST", "/api/v4/projects"),
        ("GET", "/api/v4/projects"),
        ("POST", "/users/sign_in"),
    ] {
        let (status, text) = http(&addr, method, path, &json, "{}");
        assert_eq!(status, 200, "maintenance off: {method} {path}: {text}");
        assert!(text.contains("upstream ok"));
    }

    set_maintenance(&primary, &cluster.admin_token, true, "")
        .await
        .unwrap();
    let (status, text) = http(&addr, "POST", "/api/v4/projects", &json, "{}");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains(READ_ONLY), "{text}");
    assert!(
        !text.contains("upstream ok"),
        "the write never reached the upstream"
    );
    let (status, text) = http(&addr, "GET", "/api/v4/projects", &json, "");
    assert_eq!(status, 200, "{text}");
    let (status, text) = http(&addr, "POST", "/users/sign_in", &json, "{}");
    assert_eq!(status, 200, "sign-in passes in maintenance: {text}");
    let (status, text) = http(
        &addr,
        "POST",
        "/dashboard/projects",
        &[("Referer", "/dashboard")],
        "x=1",
    );
    assert_eq!(status, 301, "a browser is redirected back: {text}");

    set_maintenance(&primary, &cluster.admin_token, false, "")
        .await
        .unwrap();
    let (status, _) = http(&addr, "POST", "/api/v4/projects", &json, "{}");
    assert_eq!(status, 200, "maintenance off again");
}
