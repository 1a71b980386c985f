//! The HTTP listener cannot be held by a hostile client: half-sent requests are cut off,
//! connections over the limits are closed at once, a slow body gets 408, and none of it
//! stops other clients or the gRPC port.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `to` from the loopback address `from` (127.0.0.0/8 is all loopback, so
/// each address is a client of its own to the site).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let ip: IpAddr = from.parse().expect("address");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Waits until the server ends `conn` (EOF or reset); what it sent before that, if anything.
async fn closed_by_server(conn: &mut TcpStream, deadline: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_loris_flood_cannot_hold_the_http_listener() {
    let cluster = Cluster::new();
    let site = cluster.primary_with(
        "p",
        &[
            "--http-header-timeout",
            "1s",
            "--http-request-timeout",
            "1s",
            "--http-max-connections-per-client",
            "8",
            "--http-max-connections",
            "64",
        ],
    );
    // One attacker address opens 24 connections and sends half a request head on each.
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut c = connect_from("127.0.0.7", site.http).await;
        // The server may already have closed a connection over the limit.
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        held.push(c);
    }
    // Everything over its 8 is closed at once, without an answer.
    let mut closed_at_once = 0;
    for c in held.iter_mut() {
        if let Some(said) = closed_by_server(c, Duration::from_millis(500)).await {
            assert_eq!(said, "", "a connection over the limit gets no answer");
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 16,
        "at most 8 connections from one address stay open; {closed_at_once} of 24 were closed"
    );

    // Meanwhile other clients are served, over HTTP and gRPC.
    let (status, body) = site.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    site.get_mode().await;

    // The half-sent heads are cut off once the header timeout passes.
    for c in held.iter_mut() {
        assert!(
            closed_by_server(c, DEADLINE).await.is_some(),
            "a half-sent request is not held forever"
        );
    }
    // And the attacker's address gets its connections back.
    let mut c = connect_from("127.0.0.7", site.http).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_server(&mut c, DEADLINE).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_never_comes_gets_408() {
    let cluster = Cluster::new();
    let site = cluster.primary_with("p", &["--http-request-timeout", "1s"]);
    let mut c = connect_from("127.0.0.8", site.http).await;
    c.write_all(
        b"POST /api/v4/internal/allowed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"act",
    )
    .await
    .unwrap();
    let answer = closed_by_server(&mut c, DEADLINE)
        .await
        .expect("the server answers and closes");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("http_request_timeout"), "{answer}");
}
