//! The gating proxy's cost: the same upstream (a small hyper server in this process, on
//! loopback) reached directly, through a real `geo-agent run --proxy-listen` (maintenance
//! mode on, so every request is judged), and through nginx `proxy_pass` (when installed).
//! For each: the latency of sequential `GET`s on one kept-alive connection (p50, p99),
//! requests per second from concurrent kept-alive clients, a GraphQL query whose body the
//! gate reads, and the throughput of one large upload (a `git-upload-pack` POST, which
//! maintenance mode allows and whose body streams).
//!
//! Environment: `PROXY_BENCH_SECONDS` (per throughput run, default 3), `PROXY_BENCH_CLIENTS`
//! (default 16), `PROXY_BENCH_UPLOAD_MIB` (default 256), `GEO_AGENT_BIN`.
//!
//! Run with `cargo bench --bench proxy`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Answers `ok` to everything, after reading (and dropping) the body.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = service_fn(|req: http::Request<Incoming>| async move {
                let mut body = req.into_body();
                while let Some(Ok(_)) = body.frame().await {}
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok\n"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

type Sender<B> = hyper::client::conn::http1::SendRequest<B>;

async fn connect<B>(addr: SocketAddr) -> Sender<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header("host", "gitlab.example")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn graphql() -> http::Request<Full<Bytes>> {
    http::Request::post("/api/graphql")
        .header("host", "gitlab.example")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"query":"query { currentUser { id username } }"}"#,
        )))
        .unwrap()
}

async fn once(sender: &mut Sender<Full<Bytes>>, req: http::Request<Full<Bytes>>) {
    sender.ready().await.unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

/// p50 and p99 of sequential requests on one connection, in microseconds.
async fn latency(addr: SocketAddr, make: fn() -> http::Request<Full<Bytes>>) -> (f64, f64) {
    let mut sender = connect(addr).await;
    for _ in 0..200 {
        once(&mut sender, make()).await;
    }
    let mut took: Vec<Duration> = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        once(&mut sender, make()).await;
        took.push(t.elapsed());
    }
    took.sort_unstable();
    let us =
        |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)].as_secs_f64() * 1e6;
    (us(0.50), us(0.99))
}

/// Requests per second from `clients` kept-alive connections for `secs`.
async fn throughput(addr: SocketAddr, clients: u64, secs: u64) -> f64 {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            let mut sender = connect(addr).await;
            let mut n = 0u64;
            while Instant::now() < until {
                once(&mut sender, get("/api/v4/projects")).await;
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    total as f64 / secs as f64
}

/// MB/s of one streamed upload of `mib` MiB.
async fn upload(addr: SocketAddr, mib: u64) -> f64 {
    let block = Bytes::from(vec![7u8; 1 << 20]);
    let frames = futures_util::stream::iter(
        (0..mib).map(move |_| Ok::<_, Infallible>(Frame::data(block.clone()))),
    );
    let mut sender = connect(addr).await;
    // A write maintenance mode allows, and whose body the gate does not need: it streams.
    let req = http::Request::post("/group/project.git/git-upload-pack")
        .header("host", "gitlab.example")
        .header("content-length", mib << 20)
        .body(StreamBody::new(frames))
        .unwrap();
    let t = Instant::now();
    sender.ready().await.unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    (mib << 20) as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// A wrk duration ("380.93us", "1.01ms", "2.00s") in microseconds.
fn wrk_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => return None,
    })
}

/// wrk against `addr` with `clients` connections on one thread for `secs`: mean latency,
/// p99 (µs) and requests per second, or `None` when wrk is not installed.
fn wrk(addr: SocketAddr, clients: u64, secs: u64) -> Option<(f64, f64, f64)> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{clients}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .arg(format!("http://{addr}/api/v4/projects"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str, index: usize| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(index).map(str::to_string))
    };
    let mean = wrk_us(&field("Latency ", 1)?)?;
    let p99 = wrk_us(&field("99%", 1)?)?;
    let rps = field("Requests/sec:", 1)?.parse().ok()?;
    Some((mean, p99, rps))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let secs = env("PROXY_BENCH_SECONDS", 3);
    let clients = env("PROXY_BENCH_CLIENTS", 16);
    let mib = env("PROXY_BENCH_UPLOAD_MIB", 256);
    let up = upstream().await;
    let cluster = Cluster::new();
    let upstream_url = format!("http://{up}");
    let site = Spawn::new(cluster.dir.path(), "primary")
        .bin(bin_from_env())
        .rust_log(Some("warn"))
        .args([
            "--role",
            "primary",
            "--proxy-listen",
            "127.0.0.1:0",
            "--proxy-upstream",
            &upstream_url,
        ])
        .start();
    set_maintenance(&site, &cluster.admin_token, true, "bench")
        .await
        .unwrap();
    let mut fronts = vec![("direct", up), ("geo-agent proxy", site.proxy())];
    let _nginx = nginx_binary().map(|nginx| {
        let port = free_port();
        let http = format!(
            "  upstream app {{ server {up}; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:{port};\n    keepalive_requests 1000000;\n    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_request_buffering off; proxy_buffering off; client_max_body_size 0; }}\n  }}\n"
        );
        let n = Nginx::start(&nginx, &cluster.path("nginx"), &http);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        poll_until(Instant::now() + DEADLINE, || match std::net::TcpStream::connect(addr) {
            Ok(_) => std::ops::ControlFlow::Break(()),
            Err(_) => std::ops::ControlFlow::Continue(Duration::from_millis(20)),
        })
        .expect("nginx to listen");
        fronts.push(("nginx proxy_pass", addr));
        n
    });
    println!(
        "{:<18} {:>9} {:>9} {:>12} {:>12} {:>12}",
        "front", "GET p50", "GET p99", "GraphQL p50", "req/s", "upload MB/s"
    );
    println!(
        "{:<18} {:>9} {:>9} {:>12} {:>12} {:>12}",
        "",
        "µs",
        "µs",
        "µs",
        format!("{clients} clients"),
        format!("{mib} MiB")
    );
    for &(name, addr) in &fronts {
        let (p50, p99) = latency(addr, || get("/api/v4/projects")).await;
        let (g50, _) = latency(addr, graphql).await;
        let rps = throughput(addr, clients, secs).await;
        let mbs = upload(addr, mib).await;
        println!("{name:<18} {p50:>9.0} {p99:>9.0} {g50:>12.0} {rps:>12.0} {mbs:>12.0}");
    }
    // The issue's own measure: wrk at one concurrency against each front, taking turns so
    // that a change in the machine's load falls on all of them.
    println!();
    println!(
        "wrk -t1 -c{clients} -d{secs}s, {} rounds taking turns    mean µs   p99 µs      req/s",
        WRK_ROUNDS
    );
    let mut sums = vec![(0.0, 0.0, 0.0); fronts.len()];
    for _ in 0..WRK_ROUNDS {
        for (i, (_, addr)) in fronts.iter().enumerate() {
            let Some((mean, p99, rps)) = wrk(*addr, clients, secs) else {
                println!("  (wrk is not installed: apt-get install wrk)");
                return;
            };
            sums[i].0 += mean;
            sums[i].1 += p99;
            sums[i].2 += rps;
        }
    }
    for ((name, _), (mean, p99, rps)) in fronts.iter().zip(sums) {
        let n = WRK_ROUNDS as f64;
        println!(
            "  {name:<47} {:>8.0} {:>8.0} {:>10.0}",
            mean / n,
            p99 / n,
            rps / n
        );
    }
}

/// How many times each front gets its turn under wrk.
const WRK_ROUNDS: usize = 3;
