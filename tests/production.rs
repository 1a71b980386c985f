//! Running in production: TLS and mutual TLS, the standard health and reflection services
//! through a generic client, Prometheus metrics, the status page in a real browser, a
//! graceful stop, limits, and tokens kept apart and out of the logs.
//!
//! Needs, as `.ci/run` installs them: `promtool` (Debian's prometheus), Chromium and
//! ChromeDriver, and Python's grpcio with the health and reflection packages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use geo_agent::server::pb;
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use tonic::Code;

/// Certificates made for one test: a CA, a certificate for the sites (localhost and
/// 127.0.0.1), a client certificate from the same CA, and one from a CA nobody trusts.
struct Pki {
    ca: PathBuf,
    site_cert: PathBuf,
    site_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let (ca_path, ca) = new_ca(dir, "ca");
        let (site_cert, site_key) = issue_cert(dir, "site", &["localhost", "127.0.0.1"], &ca);
        let (client_cert, client_key) = issue_cert(dir, "client", &["ops"], &ca);
        let (_, rogue_ca) = new_ca(dir, "rogue-ca");
        let (rogue_cert, rogue_key) = issue_cert(dir, "rogue", &["ops"], &rogue_ca);
        Pki {
            ca: ca_path,
            site_cert,
            site_key,
            client_cert,
            client_key,
            rogue_cert,
            rogue_key,
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The CLI's flags for a client certificate and the CA it trusts.
fn client_flags<'a>(ca: &'a Path, cert: &'a Path, key: &'a Path) -> [&'a str; 6] {
    [
        "--ca-cert",
        s(ca),
        "--client-cert",
        s(cert),
        "--client-key",
        s(key),
    ]
}

/// `geo-agent mode get --json` at `url` with `extra` flags: (exit code, stdout, stderr).
fn mode_get(url: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["mode", "get", "--json", "--addr", url];
    args.extend(extra);
    cli(&args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_only_tls_and_mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let cluster = Cluster::new();
    let pki = Pki::new(&cluster.path("pki"));
    let ca = ["--ca-cert", s(&pki.ca)];

    // TLS without client certificates: the right CA is enough.
    let tls_only = cluster.primary_with(
        "tls-only",
        &[
            "--tls-cert",
            s(&pki.site_cert),
            "--tls-key",
            s(&pki.site_key),
        ],
    );
    assert_eq!(tls_only.scheme, "https");
    let (code, out, err) = mode_get(&tls_only.url(), &ca);
    assert_eq!(code, 0, "{err}");
    let mode: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(mode["site_id"], "tls-only", "{out}");
    // Plaintext to a TLS port fails.
    let plain = format!("http://{}", tls_only.grpc);
    let (code, _, err) = mode_get(&plain, &[]);
    assert_eq!(code, 2, "plaintext to a TLS site: {err}");
    // A client that does not trust the site's CA fails.
    let (code, _, err) = mode_get(&tls_only.url(), &[]);
    assert_eq!(code, 2, "without the CA: {err}");
    assert!(err.contains("error:"), "{err}");

    // Mutual TLS: a primary and a secondary that require client certificates; the
    // secondary follows the primary over TLS with its own certificate.
    let mtls = [
        "--tls-cert",
        s(&pki.site_cert),
        "--tls-key",
        s(&pki.site_key),
        "--tls-ca",
        s(&pki.ca),
        "--require-client-cert",
    ];
    let primary = cluster.primary_with("primary", &mtls);
    let s1 = cluster.secondary_with("s1", &primary, &mtls);
    let client = client_flags(&pki.ca, &pki.client_cert, &pki.client_key);
    let (code, _, err) = mode_get(&primary.url(), &client);
    assert_eq!(code, 0, "{err}");
    let token_file = cluster.path("admin-token");
    let url = primary.url();
    let mut enable = vec![
        "maintenance",
        "enable",
        "--message",
        "over TLS",
        "--addr",
        &url,
        "--token-file",
        s(&token_file),
    ];
    enable.extend(client);
    let (code, _, err) = cli(&enable, &[]);
    assert_eq!(code, 0, "{err}");
    let s1_url = s1.url();
    eventually("s1 follows the primary over mutual TLS", || async {
        let (code, out, _) = mode_get(&s1_url, &client);
        let mode: Value = serde_json::from_str(&out).ok()?;
        (code == 0 && mode["maintenance_mode"] == true && mode["message"] == "over TLS")
            .then_some(())
    })
    .await;

    // No client certificate, or one from a CA the site does not trust: refused.
    let (code, _, err) = mode_get(&primary.url(), &ca);
    assert_eq!(code, 2, "no client certificate: {err}");
    let rogue = client_flags(&pki.ca, &pki.rogue_cert, &pki.rogue_key);
    let (code, _, err) = mode_get(&primary.url(), &rogue);
    assert_eq!(code, 2, "a client certificate from an unknown CA: {err}");
    let (code, _, _) = mode_get(&format!("http://{}", primary.grpc), &[]);
    assert_eq!(code, 2, "plaintext to a mutual-TLS site");
}

#[test]
fn a_site_refuses_to_serve_plaintext_beyond_loopback_and_bad_tls_files() {
    let cluster = Cluster::new();
    let pki = Pki::new(&cluster.path("pki"));
    let data = cluster.path("d");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--data-dir",
            s(&data),
            "--http-listen",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        cli(&args, &[])
    };
    let (code, _, err) = run(&["--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to serve gRPC without TLS"), "{err}");
    let (code, _, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        s(&pki.site_cert),
        "--tls-key",
        s(&pki.client_key),
    ]);
    assert_eq!(code, 2, "a certificate with another's key: {err}");
    assert!(err.contains("tls_cert"), "{err}");
    let (code, _, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        s(&pki.site_cert),
        "--tls-key",
        s(&pki.ca),
    ]);
    assert_eq!(code, 2, "a certificate as the key: {err}");
    let token = cluster.path("site-token");
    let (code, _, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--role",
        "secondary",
        "--site-id",
        "s1",
        "--site-token-file",
        s(&token),
        "--primary",
        "http://10.0.0.1:7600",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("plain HTTP to another host"), "{err}");
    let (code, _, err) = cli(
        &[
            "mode",
            "get",
            "--addr",
            "http://127.0.0.1:1",
            "--ca-cert",
            s(&pki.ca),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("use https://"), "{err}");
    let (code, _, err) = run(&["--listen", "127.0.0.1:0", "--require-client-cert"]);
    assert_eq!(code, 2);
    assert!(err.contains("require_client_cert needs TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_a_generic_client_in_another_language() {
    if !have(
        &[
            "python3",
            "-c",
            "import grpc, grpc_health.v1, grpc_reflection.v1alpha",
        ],
        "pip install grpcio grpcio-health-checking grpcio-reflection",
    ) {
        return;
    }
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/generic_grpc.py"
        ))
        .arg(primary.grpc.to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the generic client failed (install grpcio, grpcio-health-checking, grpcio-reflection):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON from the generic client");
    for service in [
        "",
        "geo.v1.ModeService",
        "geo.v1.ObjectService",
        "geo.v1.AdminService",
    ] {
        assert_eq!(v["health"][service], "SERVING", "{service}: {v}");
    }
    assert_eq!(v["health_unknown"], "NOT_FOUND");
    for version in ["services_v1alpha", "services_v1"] {
        let listed: Vec<&str> = v[version]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for service in geo_agent::server::SERVICES
            .iter()
            .chain(&["grpc.health.v1.Health"])
        {
            assert!(
                listed.contains(service),
                "{version} lacks {service}: {listed:?}"
            );
        }
    }
    assert_eq!(v["get_mode_type"], "geo.v1.ModeState");
    assert_eq!(v["get_mode"]["site_id"], "primary");
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(site: &SiteProc) -> String {
    let (status, body) = site.http_get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_follow_the_mode_and_the_lag() {
    if !have(&["promtool", "--version"], "the Debian package prometheus") {
        return;
    }
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let mut s1 = cluster.secondary("s1", &primary);
    eventually("s1 reports to the primary", || async {
        sample(
            &scrape(&primary).await,
            "geo_site_last_contact_seconds",
            "site=\"s1\"",
        )
    })
    .await;
    let text = scrape(&primary).await;
    promtool_check(&text);
    assert_eq!(sample(&text, "geo_maintenance_mode", ""), Some(0.0));
    assert_eq!(sample(&text, "geo_primary", ""), Some(1.0));
    assert_eq!(sample(&text, "geo_serving", ""), Some(1.0));
    assert_eq!(
        sample(&scrape(&s1).await, "geo_primary", ""),
        Some(0.0),
        "a secondary is not a primary"
    );

    set_maintenance(&primary, token, true, "metrics")
        .await
        .expect("maintenance on");
    for site in [&primary, &s1] {
        eventually(&format!("{} shows maintenance mode", site.name), || async {
            (sample(&scrape(site).await, "geo_maintenance_mode", "") == Some(1.0)).then_some(())
        })
        .await;
    }
    // A gate decision is counted once, by rule and verdict.
    let denied = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("geo_gate_decisions_total{") && l.contains("verdict=\"deny\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = denied(&scrape(&primary).await);
    let (code, _, _) = cli(&["check", "git", "push", "--addr", &primary.url()], &[]);
    assert_eq!(code, 1, "git push is denied in maintenance mode");
    let text = scrape(&primary).await;
    assert_eq!(denied(&text), before + 1.0, "{text}");
    promtool_check(&text);

    // s1 stops; a change it misses shows as lag at the primary, in entries and seconds.
    assert!(s1.terminate().success());
    set_maintenance(&primary, token, false, "")
        .await
        .expect("maintenance off");
    // s1's settings lag as the primary sees it: (entries, seconds).
    let s1_lag = || async {
        let text = scrape(&primary).await;
        let series = "site=\"s1\",log=\"settings\"";
        Some((
            sample(&text, "geo_replication_lag_entries", series)?,
            sample(&text, "geo_replication_lag_seconds", series)?,
        ))
    };
    eventually("lag grows at the primary", || async {
        let (entries, secs) = s1_lag().await?;
        // At least the change it missed (its last report may predate another).
        (entries >= 1.0 && secs > 0.0).then_some(())
    })
    .await;
    s1.restart();
    eventually("s1 catches up and its lag is 0", || async {
        (s1_lag().await? == (0.0, 0.0)).then_some(())
    })
    .await;
    assert_eq!(
        sample(&scrape(&s1).await, "geo_maintenance_mode", ""),
        Some(0.0)
    );
}

/// What the page shows of the banner: null when there is none.
const BANNER: &str = "const b = document.getElementById('maintenance-banner');
if (!b) return null;
const r = b.getBoundingClientRect();
const style = getComputedStyle(b);
return { text: b.innerText, top: r.top, height: r.height, width: r.width,
         display: style.display, visibility: style.visibility,
         sites: document.getElementById('sites').innerText };";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_banner_with_the_message_in_chromium() {
    if !have(
        &["chromedriver", "--version"],
        "the Debian packages chromium and chromium-driver",
    ) {
        return;
    }
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    let browser = Browser::start().await;
    // The secondary's page: it must follow the primary's mode by itself. It reloads every
    // second; the test never navigates again.
    browser
        .open(&format!("http://{}/?refresh=1", s1.http))
        .await;
    let page = browser
        .run("return { banner: document.getElementById('maintenance-banner'), drained: document.getElementById('drained').innerText, sites: document.getElementById('sites').innerText };")
        .await
        .expect("read the page");
    assert!(
        page["banner"].is_null(),
        "no banner outside maintenance: {page}"
    );
    assert!(
        page["sites"].as_str().unwrap_or("").contains("s1"),
        "{page}"
    );
    assert_eq!(page["drained"], "not in maintenance");

    let message = "Planned failover to the EU site at 22:00 UTC";
    set_maintenance(&primary, token, true, message)
        .await
        .expect("maintenance on");
    let banner = eventually("the banner appears with the message", || async {
        let b = browser.run(BANNER).await.ok()?;
        (!b.is_null()).then_some(b)
    })
    .await;
    assert!(
        banner["text"].as_str().unwrap_or("").contains(message),
        "{banner}"
    );
    assert_eq!(banner["top"], 0.0, "the banner is at the top: {banner}");
    assert!(banner["height"].as_f64().unwrap_or(0.0) > 10.0, "{banner}");
    assert!(banner["width"].as_f64().unwrap_or(0.0) > 600.0, "{banner}");
    assert_eq!(banner["display"], "block");
    assert_eq!(banner["visibility"], "visible");
    let drained = browser
        .run("return document.getElementById('drained').innerText;")
        .await
        .expect("drained");
    assert_eq!(drained, "yes");

    set_maintenance(&primary, token, false, "")
        .await
        .expect("maintenance off");
    eventually("the banner goes away", || async {
        let loaded = browser
            .run("return document.getElementById('maintenance-state') && document.getElementById('maintenance-state').innerText;")
            .await
            .ok()?;
        (loaded == "off").then_some(())
    })
    .await;
    let gone = browser.run(BANNER).await.expect("read the page");
    assert!(gone.is_null(), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_push_lets_it_finish_then_exits_0_and_loses_nothing() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary("primary");
    let data: Vec<u8> = (0..3u32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let sha = sha256_hex(&data);
    let (tx, call) = open_push(&primary, token, "big/object").await;
    let (first, rest) = data.split_at(256 * 1024);
    tx.send(pb::PushRequest {
        part: Some(pb::push_request::Part::Chunk(first.to_vec())),
    })
    .await
    .unwrap();
    eventually("the push is in flight", || async {
        let c = primary.object_counts().await;
        (c["in_flight"].as_array()?.len() == 1).then_some(())
    })
    .await;

    primary.sigterm();
    eventually("health says NOT_SERVING while the push drains", || async {
        let (status, _) = primary.http_get("/healthz").await;
        (status == 503).then_some(())
    })
    .await;
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel(&primary.url()).await);
    for service in ["", "geo.v1.ObjectService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
            "{service:?}"
        );
    }
    // A load balancer watching health holds a stream open; it must not hold up the stop.
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("a status");
    assert_eq!(
        first.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let refused = push(&primary, token, "late/object", b"late")
        .await
        .expect_err("a new push while stopping");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("shutting down"), "{refused:?}");

    for c in rest.chunks(256 * 1024) {
        tx.send(pb::PushRequest {
            part: Some(pb::push_request::Part::Chunk(c.to_vec())),
        })
        .await
        .unwrap();
    }
    tx.send(pb::PushRequest {
        part: Some(pb::push_request::Part::Trailer(pb::PushTrailer {
            size: data.len() as u64,
            sha256: sha.clone(),
        })),
    })
    .await
    .unwrap();
    drop(tx);
    let reply = call.await.unwrap().expect("the push in flight completes");
    assert_eq!(reply.into_inner().object.expect("object").sha256, sha);
    let status = primary.wait();
    assert!(status.success(), "exit status {status:?}");
    assert!(primary.logs().contains("waiting for writes in flight"));
    assert!(
        !primary.logs().contains("still open after the grace period"),
        "nothing held the servers open: {}",
        primary.logs()
    );

    primary.restart();
    assert_eq!(
        pull(&primary, token, "big/object").await.expect("pull").1,
        data
    );
    let late = stat(&primary, token, "late/object").await;
    assert_eq!(late.expect_err("never stored").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_a_stalled_push_no_longer_than_the_shutdown_timeout() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let mut primary = cluster.primary_with("primary", &["--shutdown-timeout", "1s"]);
    let (tx, call) = open_push(&primary, token, "stalled").await;
    tx.send(pb::PushRequest {
        part: Some(pb::push_request::Part::Chunk(vec![7; 1024])),
    })
    .await
    .unwrap();
    eventually("the push is in flight", || async {
        let c = primary.object_counts().await;
        (c["in_flight"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let status = primary.terminate();
    assert!(status.success(), "exit status {status:?}");
    let failed = call
        .await
        .unwrap()
        .expect_err("the stalled push fails rather than being stored short");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert!(failed.message().contains("shutting down"), "{failed:?}");
    drop(tx);
    assert!(primary.logs().contains("stopping without waiting longer"));
    primary.restart();
    let gone = stat(&primary, token, "stalled").await;
    assert_eq!(gone.expect_err("nothing stored").code(), Code::NotFound);
    assert!(object_files(&cluster.path("primary")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_clear_errors_not_hangs() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary_with(
        "primary",
        &[
            "--max-streams-per-client",
            "3",
            "--stream-idle-timeout",
            "1s",
            "--max-message-bytes",
            "1048576",
        ],
    );
    // Three open streams from this address are the limit; a fourth call is refused at once.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut watch = primary
            .mode()
            .await
            .watch_mode(pb::WatchModeRequest {})
            .await
            .expect("watch")
            .into_inner();
        watch.next().await.expect("first state").expect("state");
        streams.push(watch);
    }
    let over = primary
        .mode()
        .await
        .get_mode(pb::GetModeRequest {})
        .await
        .expect_err("a fourth call");
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(
        over.message().contains("max_streams_per_client"),
        "{over:?}"
    );
    // Other sites (the site token) are not limited: a secondary relays all its users.
    let site_call = primary
        .objects()
        .await
        .list(bearer(pb::ListRequest::default(), &cluster.site_token))
        .await;
    assert!(site_call.is_ok(), "{site_call:?}");
    streams.clear();
    eventually("closing streams frees their places", || async {
        primary
            .mode()
            .await
            .get_mode(pb::GetModeRequest {})
            .await
            .ok()
    })
    .await;

    // A message over the size limit.
    let big = set_maintenance(&primary, token, true, &"x".repeat(2 << 20))
        .await
        .expect_err("a 2 MiB message");
    // tonic's code for a message over the limit; the message says which limit.
    assert_eq!(big.code(), Code::OutOfRange, "{big:?}");
    assert!(
        big.message().contains("the limit is: 1048576 bytes"),
        "{big:?}"
    );
    assert!(!primary.get_mode().await.maintenance_mode);

    // A push that goes silent is abandoned, and its write no longer holds a drain.
    let (tx, call) = open_push(&primary, token, "silent").await;
    let err = call.await.unwrap().expect_err("an idle push");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("stream_idle_timeout"), "{err:?}");
    drop(tx);
    let counts = primary.object_counts().await;
    assert_eq!(counts["in_flight"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_kept_apart_and_never_written_to_the_logs() {
    let cluster = Cluster::new();
    let (admin, site) = (&cluster.admin_token, &cluster.site_token);
    let primary = cluster.primary_with("primary", &["--log-format", "json"]);
    let s1 = cluster.secondary("s1", &primary);

    // The admin API refuses the site token, replication refuses the admin token.
    let e = primary
        .admin()
        .await
        .get_settings(bearer(pb::GetSettingsRequest::default(), site))
        .await
        .expect_err("admin call with the site token");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = primary
        .replication()
        .await
        .report_status(bearer(pb::SiteReport::default(), admin))
        .await
        .expect_err("replication call with the admin token");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let bogus = "bogus-0123456789abcdef0123456789abcdef";
    let e = primary
        .admin()
        .await
        .get_settings(bearer(pb::GetSettingsRequest::default(), bogus))
        .await
        .expect_err("a wrong token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A push at the secondary is forwarded with the site token.
    push(&s1, admin, "via/s1", b"forwarded")
        .await
        .expect("forwarded push");
    synced(&s1, admin, "via/s1", &sha256_hex(b"forwarded")).await;

    for site_proc in [&primary, &s1] {
        let logs = site_proc.logs();
        assert!(!logs.is_empty());
        for secret in [admin.as_str(), site.as_str(), bogus] {
            assert!(
                !logs.contains(secret),
                "{} logged a token:\n{logs}",
                site_proc.name
            );
        }
    }
    // JSON logs: one object per line, and a request's events carry its span.
    let logs = primary.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let committed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "object committed")
        .expect("the commit is logged");
    assert_eq!(
        committed["span"]["method"], "/geo.v1.ObjectService/Push",
        "{committed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_aborts_stuck_pushes_so_maintenance_drains() {
    let cluster = Cluster::new();
    let token = &cluster.admin_token;
    let primary = cluster.primary("primary");
    let s1 = cluster.secondary("s1", &primary);
    // Two clients that started pushes and went quiet (well within the idle timeout): one
    // at the primary, one forwarded by s1.
    let (at_primary, primary_call) = open_push(&primary, token, "stuck/primary").await;
    let (at_s1, s1_call) = open_push(&s1, token, "stuck/via-s1").await;
    for tx in [&at_primary, &at_s1] {
        tx.send(pb::PushRequest {
            part: Some(pb::push_request::Part::Chunk(vec![1; 4096])),
        })
        .await
        .unwrap();
    }
    // Both are in flight at the primary (the forwarded one too) before maintenance starts:
    // writes already running go on in maintenance mode.
    eventually("both pushes in flight at the primary", || async {
        let c = primary.object_counts().await;
        (c["in_flight"].as_array()?.len() == 2).then_some(())
    })
    .await;
    set_maintenance(&primary, token, true, "failover")
        .await
        .unwrap();
    let token_file = cluster.path("admin-token");
    let status = |site: &SiteProc| {
        cli(
            &[
                "maintenance",
                "status",
                "--json",
                "--addr",
                &site.url(),
                "--token-file",
                s(&token_file),
            ],
            &[],
        )
    };
    for (site, tx, call, name) in [
        (&primary, at_primary, primary_call, "stuck/primary"),
        (&s1, at_s1, s1_call, "stuck/via-s1"),
    ] {
        let id = eventually(&format!("{}'s stuck push listed", site.name), || async {
            let (code, out, _) = status(site);
            let v: Value = serde_json::from_str(&out).ok()?;
            let w = v["in_flight"]
                .as_array()?
                .iter()
                .find(|w| w["what"] == format!("push {name}"))?;
            (code == 1).then(|| w["id"].as_u64())?
        })
        .await;
        let id = id.to_string();
        let abort = |id: &str| {
            cli(
                &[
                    "maintenance",
                    "abort",
                    id,
                    "--addr",
                    &site.url(),
                    "--token-file",
                    s(&token_file),
                ],
                &[],
            )
        };
        let (code, out, err) = abort(&id);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("push {name}")), "{out}");
        let e = call.await.unwrap().expect_err("an aborted push");
        assert_eq!(e.code(), Code::Aborted, "{e:?}");
        assert!(e.message().contains("nothing was stored"), "{e:?}");
        drop(tx);
        let (code, _, err) = abort(&id);
        assert_eq!(code, 1, "no longer in flight: {err}");
    }
    for site in [&primary, &s1] {
        // The primary's side of the forwarded push ends when s1 drops the relay.
        eventually(&format!("{} drained", site.name), || async {
            (status(site).0 == 0).then_some(())
        })
        .await;
    }
    for name in ["stuck/primary", "stuck/via-s1"] {
        let gone = stat(&primary, token, name).await;
        assert_eq!(gone.expect_err("nothing stored").code(), Code::NotFound);
    }
}
