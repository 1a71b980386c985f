//! How fast the gate decides: in-process (the pure engine, one core) and over gRPC on
//! loopback (`GateService.Check`, a site in this process, concurrent clients).
//!
//! Run with `cargo bench --bench gate`. Prints decisions per second and, over gRPC,
//! latency percentiles. Targets (issue 3): ≥ 2 million/s in-process without a body;
//! ≥ 30,000/s and p99 ≤ 1 ms over gRPC.

use std::hint::black_box;
use std::time::{Duration, Instant};

use geo_agent::config::{Config, RunArgs};
use geo_agent::gate::{self, GateConfig, HttpRequest, Request, SiteRole, SiteView};
use geo_agent::runtime;
use geo_agent::server::client::connect;
use geo_agent::server::pb;
use geo_agent::store::Store;
use tokio_util::sync::CancellationToken;

const IN_PROCESS_ROUNDS: usize = 2_000_000;
const GRPC_SECONDS: u64 = 5;
/// Concurrent clients; `GATE_BENCH_CLIENTS` overrides.
const GRPC_CLIENTS: usize = 32;
const GRPC_CHANNELS: usize = 4;

fn http(method: &str, path: &str) -> Request {
    Request::Http(HttpRequest {
        method: method.into(),
        path: path.into(),
        accept: Some("application/json".into()),
        ..HttpRequest::default()
    })
}

fn in_process() {
    let cfg = GateConfig::default();
    let site = SiteView {
        role: SiteRole::Primary,
        maintenance: true,
        message: None,
        fenced: None,
    };
    println!("gate in-process, maintenance on, one thread          decisions/s   ns/decision");
    for (name, req) in [
        (
            "GET /api/v4/projects (read)",
            http("GET", "/api/v4/projects"),
        ),
        (
            "POST /api/v4/projects (denied)",
            http("POST", "/api/v4/projects"),
        ),
        (
            "POST /users/sign_in (allowlisted)",
            http("POST", "/users/sign_in"),
        ),
        (
            "POST /gitlab/../api/v4/x?a=%2F (crafted)",
            http("POST", "/gitlab/../api/v4/x?a=%2F"),
        ),
    ] {
        let start = Instant::now();
        for _ in 0..IN_PROCESS_ROUNDS {
            let d = gate::decide(black_box(&req), black_box(&site), black_box(&cfg));
            black_box(d.ok());
        }
        let elapsed = start.elapsed();
        let per_sec = IN_PROCESS_ROUNDS as f64 / elapsed.as_secs_f64();
        let ns = elapsed.as_nanos() as f64 / IN_PROCESS_ROUNDS as f64;
        println!("  {name:<48} {per_sec:>12.0} {ns:>12.0}");
    }
    println!();
    graphql_bodies(&site, &cfg);
}

/// A GraphQL document of about `bytes` bytes: an operation of `kind` (`query` or `mutation`)
/// selecting aliased fields with arguments, as the GitLab UI sends, in a JSON body.
fn graphql_body(kind: &str, bytes: usize) -> Vec<u8> {
    let mut doc = format!("{kind} Bench($path: ID!) {{ ");
    let mut i = 0;
    while doc.len() + 60 < bytes {
        doc.push_str(&format!(
            "f{i}: project(fullPath: $path) {{ id name issues(first: 20) {{ nodes {{ iid }} }} }} "
        ));
        i += 1;
    }
    doc.push('}');
    serde_json::to_vec(&serde_json::json!({
        "query": doc,
        "operationName": "Bench",
        "variables": { "path": "group/project" },
    }))
    .expect("JSON")
}

/// Decisions on GraphQL bodies (the gating proxy reads them), one thread.
fn graphql_bodies(site: &SiteView, cfg: &GateConfig) {
    println!("gate in-process, GraphQL bodies, one thread          decisions/s   µs/decision");
    for (kind, size, rounds) in [
        ("query", 1 << 10, 200_000),
        ("mutation", 1 << 10, 200_000),
        ("query", 64 << 10, 3_000),
        ("mutation", 64 << 10, 3_000),
    ] {
        let body = graphql_body(kind, size);
        let req = Request::Http(HttpRequest {
            method: "POST".into(),
            path: "/api/graphql".into(),
            content_type: Some("application/json".into()),
            body: Some(body.clone()),
            ..HttpRequest::default()
        });
        let first = gate::decide(&req, site, cfg).expect("a decision");
        assert_eq!(first.is_allowed(), kind == "query", "{first:?}");
        let start = Instant::now();
        for _ in 0..rounds {
            let d = gate::decide(black_box(&req), black_box(site), black_box(cfg));
            black_box(d.ok());
        }
        let elapsed = start.elapsed();
        let per_sec = rounds as f64 / elapsed.as_secs_f64();
        let us = elapsed.as_secs_f64() * 1e6 / rounds as f64;
        let name = format!("{kind} of {} bytes", body.len());
        println!("  {name:<48} {per_sec:>12.0} {us:>12.1}");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn over_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::load(&RunArgs {
        data_dir: Some(dir.path().to_path_buf()),
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        http_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..RunArgs::default()
    })
    .expect("config");
    let shutdown = CancellationToken::new();
    let store = Store::open(&config.data_dir).expect("open the store");
    let opened = runtime::open(&config, store, shutdown.clone())
        .await
        .expect("open site");
    opened
        .site
        .settings
        .set_maintenance(true, None, "bench")
        .await
        .expect("maintenance on");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", grpc.local_addr().expect("addr"));
    let server = tokio::spawn(opened.serve(grpc, http, shutdown.clone()));

    let clients = std::env::var("GATE_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GRPC_CLIENTS);
    let mut channels = Vec::new();
    for _ in 0..GRPC_CHANNELS {
        channels.push(connect(&url, &Default::default()).await.expect("connect"));
    }
    let deadline = Instant::now() + Duration::from_secs(GRPC_SECONDS);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut client =
            pb::gate_service_client::GateServiceClient::new(channels[i % GRPC_CHANNELS].clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let req = pb::CheckRequest {
                    request: Some(pb::check_request::Request::Http(pb::HttpCheck {
                        method: "POST".into(),
                        path: "/api/v4/projects".into(),
                        accept: "application/json".into(),
                        ..Default::default()
                    })),
                };
                let t = Instant::now();
                let d = client.check(req).await.expect("Check").into_inner();
                lat.push(t.elapsed());
                assert_eq!(d.verdict, pb::Verdict::Deny as i32);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    all.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "\nGateService.Check over loopback, {clients} clients on {GRPC_CHANNELS} connections, {GRPC_SECONDS} s\n  checks/s {:.0}   p50 {:.0} µs   p90 {:.0} µs   p99 {:.0} µs   max {:.0} µs   n {}",
        all.len() as f64 / elapsed.as_secs_f64(),
        us(percentile(&all, 50.0)),
        us(percentile(&all, 90.0)),
        us(percentile(&all, 99.0)),
        us(percentile(&all, 100.0)),
        all.len()
    );
    shutdown.cancel();
    let _ = server.await;
}

fn main() {
    in_process();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(over_grpc());
}
