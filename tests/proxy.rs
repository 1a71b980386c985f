//! The gating reverse proxy, end to end: a real site with `--proxy-listen` in front of an
//! upstream that records what reaches it. In maintenance mode GraphQL mutations and LFS
//! uploads are refused with the SPEC answer whatever shape they take, and never reach the
//! upstream; queries, reads and allowed writes reach it byte for byte. Plus the front door's
//! robustness: a dead upstream, a stalling client, a large upload in bounded memory,
//! keep-alive, chunked bodies and `Expect: 100-continue`.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use common::*;
use geo_agent::gate::{GIT_PUSH_MESSAGE, READ_ONLY_JSON_BODY};
use sha2::{Digest, Sha256};

/// One response as a client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends raw bytes (from the loopback address `from`, when given) and reads until the
/// server closes.
async fn exchange(proxy: SocketAddr, from: Option<IpAddr>, raw: Vec<u8>) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::new(ip, 0))
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    }
    let stream = socket.connect(proxy).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut s = stream;
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(&raw).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        parse(&out)
    })
    .await
    .unwrap()
}

fn parse(raw: &[u8]) -> Answer {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = String::from_utf8_lossy(&raw[at + 4..]).into_owned();
    Answer { status, head, body }
}

/// `METHOD target` with `headers` and `body`, `Connection: close`.
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: gitlab.example\r\n");
    for (k, v) in headers {
        r += &format!("{k}: {v}\r\n");
    }
    r += &format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

async fn send(
    proxy: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    exchange(proxy, None, request(method, target, headers, body)).await
}

fn proxied(cluster: &Cluster, upstream: &Upstream, extra: &[&str]) -> SiteProc {
    let url = upstream.url();
    let mut args = vec![
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-upstream",
        url.as_str(),
    ];
    args.extend_from_slice(extra);
    cluster.primary_with("primary", &args)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// What a case sends: a name, the target, headers and the body.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_maintenance_graphql_mutations_are_refused_and_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(&cluster, &upstream, &[]);
    let proxy = site.proxy();
    set_maintenance(&site, &cluster.admin_token, true, "upgrade")
        .await
        .unwrap();

    let mutation =
        br#"{"query":"mutation { createIssue(input: {title: \"x\"}) { issue { id } } }"}"#;
    let boundary = "XyZ";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\":[\"variables.file\"]}}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n",
        r#"{"query":"mutation($file: Upload!) { uploadFile(file: $file) { id } }","variables":{"file":null}}"#
    );
    let multipart_type = format!("multipart/form-data; boundary={boundary}");
    let batch = br#"[{"query":"{ currentUser { id } }"},{"query":"mutation { destroyIssue(id: 1) { id } }"}]"#;
    let cases: Vec<Case> =
        vec![
        ("JSON body", "/api/graphql", vec![JSON], mutation.to_vec()),
        (
            "application/graphql",
            "/api/graphql",
            vec![("Content-Type", "application/graphql")],
            b"mutation { destroyIssue(id: 1) { id } }".to_vec(),
        ),
        (
            "multipart upload",
            "/api/graphql",
            vec![("Content-Type", multipart_type.as_str())],
            multipart.into_bytes(),
        ),
        ("batched array", "/api/graphql", vec![JSON], batch.to_vec()),
        (
            "mutation in the query string",
            "/api/graphql?query=mutation%20%7B%20destroyIssue(id%3A%201)%20%7B%20id%20%7D%20%7D",
            vec![JSON],
            Vec::new(),
        ),
        (
            "LFS batch upload",
            "/group/project.git/info/lfs/objects/batch",
            vec![("Content-Type", "application/vnd.git-lfs+json")],
            br#"{"operation":"upload","objects":[{"oid":"aa","size":1}]}"#.to_vec(),
        ),
        ("an ordinary write", "/api/v4/projects", vec![JSON], b"{}".to_vec()),
    ];
    for (what, target, headers, body) in &cases {
        let a = send(proxy, "POST", target, headers, body).await;
        assert_eq!(a.status, 403, "{what}: {a:?}");
        assert_eq!(a.body, READ_ONLY_JSON_BODY, "{what}");
        assert!(
            !a.head.to_ascii_lowercase().contains("x-upstream"),
            "{what}"
        );
    }
    // A mutation sent by GET is the write it would be, too.
    let a = send(
        proxy,
        "GET",
        "/api/graphql?query=mutation%20%7B%20destroyIssue(id%3A%201)%20%7B%20id%20%7D%20%7D",
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(a.status, 403, "GET mutation: {a:?}");
    assert_eq!(a.body, READ_ONLY_JSON_BODY, "GET mutation");
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    // A query passes with its body byte for byte, headers and query string unchanged.
    let query = br#"{"query":"query { currentUser { id } }" , "variables": {}}"#;
    let a = send(
        proxy,
        "POST",
        "/api/graphql?trace=1&x=%20y",
        &[JSON, ("X-Custom", "kept"), ("Authorization", "Bearer t0k")],
        query,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.head.to_ascii_lowercase().contains("x-upstream: 1"),
        "{a:?}"
    );
    let got = upstream.take();
    assert_eq!(got.len(), 1);
    let seen = &got[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/api/graphql?trace=1&x=%20y");
    assert_eq!(seen.body, query);
    assert!(seen.complete);
    assert_eq!(seen.headers["x-custom"], "kept");
    assert_eq!(seen.headers["authorization"], "Bearer t0k");
    assert_eq!(seen.headers["host"], "gitlab.example");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "gitlab.example");

    // Reads and an LFS download pass.
    let a = send(proxy, "GET", "/group/project/-/issues?page=2", &[], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
    let download = br#"{"operation":"download","objects":[{"oid":"aa","size":1}]}"#;
    let a = send(
        proxy,
        "POST",
        "/group/project.git/info/lfs/objects/batch",
        &[("Content-Type", "application/vnd.git-lfs+json")],
        download,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = upstream.take();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].target, "/group/project/-/issues?page=2");
    assert_eq!(got[1].body, download);

    // A git push over HTTP gets git's own refusal.
    let a = send(
        proxy,
        "POST",
        "/group/project.git/git-receive-pack",
        &[("Content-Type", "application/x-git-receive-pack-request")],
        b"0000",
    )
    .await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.body.contains(GIT_PUSH_MESSAGE), "{a:?}");

    // The decisions are counted by rule, in valid exposition text.
    let (_, metrics) = site.http_get("/metrics").await;
    for rule in [
        "graphql.mutation",
        "deny.lfs_upload",
        "git.push.maintenance",
    ] {
        let series = format!("geo_proxy_decisions_total{{rule=\"{rule}\",verdict=\"deny\"}}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    assert!(
        metrics.contains("geo_proxy_upstream_seconds_count 3\n"),
        "{metrics}"
    );

    // With the mode off, everything passes, bodies unchanged.
    set_maintenance(&site, &cluster.admin_token, false, "")
        .await
        .unwrap();
    for (what, target, headers, body) in &cases {
        let a = send(proxy, "POST", target, headers, body).await;
        assert_eq!(a.status, 200, "{what}: {a:?}");
        let got = upstream.take();
        assert_eq!(got.len(), 1, "{what}");
        assert_eq!(&got[0].body, body, "{what}");
        assert_eq!(got[0].target, *target, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let config = cluster.dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[gate]\nexempt_cidrs = [\"10.0.0.0/8\"]\n[proxy]\ntrusted_proxies = [\"127.0.0.2/32\"]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let site = proxied(&cluster, &upstream, &["--config", &config]);
    let proxy = site.proxy();
    set_maintenance(&site, &cluster.admin_token, true, "")
        .await
        .unwrap();
    let raw = request(
        "POST",
        "/api/v4/projects",
        &[JSON, ("X-Forwarded-For", "10.1.2.3")],
        b"{}",
    );
    // From an untrusted address the claim is ignored: refused, and not passed on.
    let a = exchange(proxy, None, raw.clone()).await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(upstream.seen().is_empty());
    // From the trusted front end, the client it names is exempt.
    let a = exchange(proxy, Some("127.0.0.2".parse().unwrap()), raw).await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = upstream.take();
    assert_eq!(got[0].headers["x-forwarded-for"], "10.1.2.3, 127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_is_a_502_naming_it() {
    let dead = free_port();
    let cluster = Cluster::new();
    let url = format!("http://127.0.0.1:{dead}");
    let site = cluster.primary_with(
        "primary",
        &["--proxy-listen", "127.0.0.1:0", "--proxy-upstream", &url],
    );
    let a = send(site.proxy(), "GET", "/", &[], b"").await;
    assert_eq!(a.status, 502, "{a:?}");
    assert!(a.body.contains(&url), "{a:?}");
    let (_, metrics) = site.http_get("/metrics").await;
    assert!(
        metrics.contains("geo_proxy_upstream_errors_total{kind=\"connect\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_is_cut_at_the_timeout() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(&cluster, &upstream, &["--proxy-body-timeout", "500ms"]);
    let proxy = site.proxy();
    for target in ["/api/v4/projects/1/uploads", "/api/graphql"] {
        let a = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(proxy).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let head = format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"query\":"
            );
            s.write_all(head.as_bytes()).unwrap();
            // ...and nothing more: the proxy must give up on its own.
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out
        })
        .await
        .unwrap();
        let a = parse(&a);
        assert_eq!(a.status, 408, "{target}: {a:?}");
        assert!(a.body.contains("sent nothing for"), "{target}: {a:?}");
        assert!(
            upstream.seen().iter().all(|s| !s.complete),
            "{target}: the upstream got a whole request: {:?}",
            upstream.seen()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_chunked_bodies_and_expect_continue_work() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(&cluster, &upstream, &[]);
    set_maintenance(&site, &cluster.admin_token, true, "")
        .await
        .unwrap();
    let proxy = site.proxy();
    let (first, second) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
        // 1: a chunked GraphQL query on a kept-alive connection.
        s.write_all(
            b"POST /api/graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
              9\r\n{\"query\":\r\n12\r\n\"{ currentUser }\"}\r\n0\r\n\r\n",
        )
        .unwrap();
        let first = read_response(&mut reader);
        // 2: on the same connection, a write that waits for 100 Continue.
        s.write_all(
            b"POST /users/sign_in HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: 11\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let cont = read_head(&mut reader);
        assert!(cont.starts_with("HTTP/1.1 100"), "{cont}");
        s.write_all(b"user=a&pw=b").unwrap();
        let second = read_response(&mut reader);
        (first, second)
    })
    .await
    .unwrap();
    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(second.0, 200, "{second:?}");
    let got = upstream.take();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, br#"{"query":"{ currentUser }"}"#);
    assert_eq!(got[1].body, b"user=a&pw=b");
    assert!(got[1].headers.get("expect").is_none());
}

fn read_head(r: &mut impl std::io::BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed after {head:?}");
        if line == "\r\n" {
            return head;
        }
        head += &line;
    }
}

/// One response with a Content-Length body: (status, body).
fn read_response(r: &mut impl std::io::BufRead) -> (u16, String) {
    let head = read_head(r);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Uploads `size` bytes through the proxy and checks that they arrive whole while the
/// daemon's peak memory stays under 64 MiB.
async fn large_upload(size: u64) {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(&cluster, &upstream, &[]);
    let proxy = site.proxy();
    let sent_sha = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let head = format!(
            "PUT /api/v4/projects/1/packages/generic/big/1/big.bin HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut hash = Sha256::new();
        let mut block = vec![0u8; 1 << 20];
        let mut left = size;
        let mut n = 0u64;
        while left > 0 {
            for (i, b) in block.iter_mut().enumerate() {
                *b = (n.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
            }
            let take = left.min(block.len() as u64) as usize;
            s.write_all(&block[..take]).unwrap();
            hash.update(&block[..take]);
            left -= take as u64;
            n += 1;
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let a = parse(&out);
        assert_eq!(a.status, 200, "{a:?}");
        hex::encode(hash.finalize())
    })
    .await
    .unwrap();
    let got = upstream.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len, size);
    assert_eq!(got[0].sha256, sent_sha);
    let peak = peak_rss(site.pid());
    eprintln!("peak RSS {} KiB after {size} bytes", peak >> 10);
    assert!(
        peak < 64 << 20,
        "the daemon's peak RSS was {} MiB",
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_through_in_bounded_memory() {
    large_upload(256 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1 GiB through loopback: run with --ignored"]
async fn a_gibibyte_upload_streams_through_in_bounded_memory() {
    large_upload(1 << 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_answer_is_a_504() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(&cluster, &upstream, &["--proxy-response-timeout", "500ms"]);
    let a = send(site.proxy(), "GET", "/hang", &[], b"").await;
    assert_eq!(a.status, 504, "{a:?}");
    assert!(a.body.contains(&upstream.url()), "{a:?}");
    let metrics = site.http_get("/metrics").await.1;
    assert!(
        metrics.contains("geo_proxy_upstream_errors_total{kind=\"timeout\"} 1\n"),
        "{metrics}"
    );
    if have(&["promtool", "--version"], "the Debian package prometheus") {
        promtool_check(&metrics);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_site_finishes_the_requests_it_is_proxying() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let mut site = proxied(&cluster, &upstream, &[]);
    let proxy = site.proxy();
    let pending = tokio::spawn(send(proxy, "POST", "/hold", &[JSON], b"{}"));
    eventually("the upstream to hold the request", || async {
        (!upstream.seen().is_empty()).then_some(())
    })
    .await;
    site.sigterm();
    eventually("the site to start stopping", || async {
        site.logs().contains("proxy stopping").then_some(())
    })
    .await;
    upstream.release();
    let a = pending.await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let status = site
        .wait_for_exit(std::time::Instant::now() + DEADLINE)
        .expect("the site exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_passed_through() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(&cluster, &upstream, &[]);
    let proxy = site.proxy();
    let echoed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .unwrap();
        let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
        let head = read_head(&mut reader);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: echo"),
            "{head}"
        );
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        reader.read_exact(&mut got).unwrap();
        got
    })
    .await
    .unwrap();
    assert_eq!(&echoed, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_routes_the_body_sensitive_locations_through_the_proxy() {
    let Some(nginx) = nginx_or_skip() else {
        return;
    };
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(
        &cluster,
        &upstream,
        &["--proxy-trusted-proxies", "127.0.0.1/32"],
    );
    let snippet = |name: &str| {
        std::fs::canonicalize(format!("contrib/nginx/{name}"))
            .unwrap()
            .display()
            .to_string()
    };
    let front = free_port();
    let http = format!(
        "  upstream geo_agent_gate {{ server {}; keepalive 4; }}\n  upstream geo_agent_proxy {{ server {}; keepalive 4; }}\n  server {{\n    listen 127.0.0.1:{front};\n    include {};\n    include {};\n    location / {{ proxy_pass {}; }}\n  }}\n",
        site.http,
        site.proxy(),
        snippet("geo-gate.conf"),
        snippet("geo-gate-proxy.conf"),
        upstream.url(),
    );
    let _nginx = Nginx::start(&nginx, &cluster.path("nginx"), &http);
    let front: SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    eventually("nginx to listen", || async {
        tokio::net::TcpStream::connect(front).await.ok().map(|_| ())
    })
    .await;
    set_maintenance(&site, &cluster.admin_token, true, "")
        .await
        .unwrap();

    let mutation = br#"{"query":"mutation { destroyIssue(id: 1) { id } }"}"#;
    let upload = br#"{"operation":"upload","objects":[{"oid":"aa","size":1}]}"#;
    let lfs = ("Content-Type", "application/vnd.git-lfs+json");
    let batch = "/group/project.git/info/lfs/objects/batch";
    for (target, header, body) in [
        ("/api/graphql", JSON, &mutation[..]),
        (batch, lfs, &upload[..]),
        ("/api/v4/projects", JSON, b"{}"),
    ] {
        let a = send(front, "POST", target, &[header], body).await;
        assert_eq!(a.status, 403, "{target}: {a:?}");
        assert!(a.body.contains(READ_ONLY_JSON_BODY), "{target}: {a:?}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    let query = br#"{"query":"{ currentUser { id } }"}"#;
    let download = br#"{"operation":"download","objects":[]}"#;
    for (target, header, body) in [
        ("/api/graphql", JSON, &query[..]),
        (batch, lfs, &download[..]),
    ] {
        let a = send(front, "POST", target, &[header], body).await;
        assert_eq!(a.status, 200, "{target}: {a:?}");
        let got = upstream.take();
        assert_eq!(got[0].body, body, "{target}");
        // Through nginx and then the proxy: each hop adds the address it saw.
        assert_eq!(got[0].headers["x-forwarded-for"], "127.0.0.1, 127.0.0.1");
    }
    let a = send(front, "GET", "/dashboard", &[], b"").await;
    assert_eq!(a.status, 200, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_git_over_smart_http_clones_in_maintenance_and_pushes_only_outside_it() {
    if !have(&["git", "--version"], "the Debian package git") {
        return;
    }
    let cluster = Cluster::new();
    let home = cluster.path("home");
    let repos = cluster.path("repos");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&repos).unwrap();
    let run = |dir: &std::path::Path, args: &[&str]| {
        let (ok, err) = git(&home, dir, args);
        assert!(ok, "git {args:?}: {err}");
    };
    // GitLab's route shape: a project sits in a namespace.
    run(
        &repos,
        &["init", "--bare", "-q", "-b", "main", "group/project.git"],
    );
    let seed = cluster.path("seed");
    std::fs::create_dir_all(&seed).unwrap();
    run(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README"), "one\n").unwrap();
    run(&seed, &["add", "README"]);
    run(&seed, &["commit", "-q", "-m", "one"]);
    let bare = repos.join("group/project.git");
    run(&seed, &["push", "-q", bare.to_str().unwrap(), "main"]);

    let backend = git_backend(repos.clone()).await;
    let backend_url = format!("http://{backend}");
    let site = cluster.primary_with(
        "primary",
        &[
            "--proxy-listen",
            "127.0.0.1:0",
            "--proxy-upstream",
            &backend_url,
        ],
    );
    let url = format!("http://{}/group/project.git", site.proxy());
    set_maintenance(&site, &cluster.admin_token, true, "")
        .await
        .unwrap();

    let work = cluster.path("work");
    let (home2, url2, work2) = (home.clone(), url.clone(), work.clone());
    let cloned = tokio::task::spawn_blocking(move || {
        git(
            &home2,
            &home2,
            &["clone", "-q", &url2, work2.to_str().unwrap()],
        )
    })
    .await
    .unwrap();
    assert!(cloned.0, "clone in maintenance: {}", cloned.1);
    assert_eq!(
        std::fs::read_to_string(work.join("README")).unwrap(),
        "one\n"
    );

    std::fs::write(work.join("README"), "two\n").unwrap();
    run(&work, &["commit", "-q", "-am", "two"]);
    let head_before = std::fs::read_to_string(bare.join("refs/heads/main")).ok();
    let (home2, work2) = (home.clone(), work.clone());
    let pushed =
        tokio::task::spawn_blocking(move || git(&home2, &work2, &["push", "origin", "main"]))
            .await
            .unwrap();
    assert!(!pushed.0, "push in maintenance must fail");
    // The refusal comes on the ref discovery that starts the push, where git shows it.
    assert!(
        pushed.1.contains(
            "remote: Git push is not allowed because this GitLab instance is currently in \
             (read-only) maintenance mode."
        ),
        "{}",
        pushed.1
    );
    assert_eq!(
        std::fs::read_to_string(bare.join("refs/heads/main")).ok(),
        head_before,
        "nothing was pushed"
    );

    set_maintenance(&site, &cluster.admin_token, false, "")
        .await
        .unwrap();
    let (home2, work2) = (home.clone(), work.clone());
    let pushed =
        tokio::task::spawn_blocking(move || git(&home2, &work2, &["push", "origin", "main"]))
            .await
            .unwrap();
    assert!(pushed.0, "push with the mode off: {}", pushed.1);
    let (ok, log) = {
        let out = std::process::Command::new("git")
            .args([
                "--git-dir",
                bare.to_str().unwrap(),
                "log",
                "--format=%s",
                "main",
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(ok);
    assert_eq!(log, "two\none\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_inspection_bound_reaches_the_upstream_whole_when_allowed() {
    // On a secondary outside maintenance mode a write goes on (the application forwards it
    // to the primary), also a GraphQL body too large for the gate to read: the part it read
    // and the rest must arrive as one body, byte for byte.
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let primary = cluster.primary("primary");
    let url = upstream.url();
    let s1 = cluster.secondary_with(
        "s1",
        &primary,
        &["--proxy-listen", "127.0.0.1:0", "--proxy-upstream", &url],
    );
    let body = format!(
        r#"{{"query":"{{ currentUser {{ id }} }}","variables":{{"pad":"{}"}}}}"#,
        "ab".repeat(3 << 19)
    );
    let a = send(s1.proxy(), "POST", "/api/graphql", &[JSON], body.as_bytes()).await;
    assert_eq!(a.status, 200, "{a:?}");
    let got = upstream.take();
    assert_eq!(got[0].len, body.len() as u64);
    assert_eq!(got[0].sha256, sha256_hex(body.as_bytes()));
    let metrics = s1.http_get("/metrics").await.1;
    assert!(
        metrics.contains(
            "geo_proxy_decisions_total{rule=\"proxy_to_primary\",verdict=\"proxy_to_primary\"} 1\n"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx() {
    let upstream = Upstream::start().await;
    let cluster = Cluster::new();
    let site = proxied(&cluster, &upstream, &[]);
    let proxy = site.proxy();
    let long = format!("/{}", "a".repeat(10_000));
    let a = send(proxy, "POST", &long, &[JSON], b"{}").await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.body.contains("invalid input"), "{a:?}");

    let mut raw = request("POST", "/api/graphql", &[], b"{}");
    let at = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    raw.splice(
        at..at,
        b"Content-Type: application/json\xff\r\n".iter().copied(),
    );
    let a = exchange(proxy, None, raw).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.body.contains("content-type"), "{a:?}");

    let a = exchange(proxy, None, b"NOT HTTP AT ALL\r\n\r\n".to_vec()).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    assert!(site.running());
    assert_eq!(site.http_get("/healthz").await.0, 200);
}
