//! The HTTP listener, served so that no client can hold it: a request head must arrive
//! within `header_timeout`, a whole request within `request_timeout` (else 408), and at most
//! `max_connections` connections are open at once, `max_connections_per_client` from one
//! address. A connection over a limit is closed as soon as it is accepted, so a slow-loris
//! flood costs the site a bounded number of file descriptors and never reaches the gRPC
//! port, which has limits of its own.
//!
//! Trade-off: a client over the limit gets a closed connection, not a 503 — answering would
//! mean reading its request, which is what a flood wants.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Router;
use http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::limits::{HttpLimits, PerAddress, Slot};

/// Serves `router` on `listener` within `limits` until `shutdown`, then lets the
/// connections still open finish their requests (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let timeout = limits.request_timeout;
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            within(timeout, next.run(req)).await
        },
    ));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    accept(listener, &limits, &shutdown, |stream, peer, admitted| {
        let service = TowerToHyperService::new(router.clone());
        let connection = http1.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
            drop(admitted);
        });
    })
    .await;
    graceful.shutdown().await;
    Ok(())
}

/// A connection let in under the limits: it counts against them until dropped.
pub struct Admitted {
    _open: OwnedSemaphorePermit,
    _slot: Slot,
}

/// Accepts connections on `listener` until `shutdown` and hands each one that fits within
/// `limits.max_connections` and `limits.max_connections_per_client` to `serve`, with the
/// [`Admitted`] to hold for as long as it is open; one over a limit is closed at once.
/// Other listeners (the gating proxy) share this loop and bring their own connection
/// handling. The listener is closed when it returns.
pub async fn accept(
    listener: TcpListener,
    limits: &HttpLimits,
    shutdown: &CancellationToken,
    mut serve: impl FnMut(TcpStream, SocketAddr, Admitted),
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = PerAddress::new(limits.max_connections_per_client);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, most likely: wait a little rather than spin.
                    warn!(%error, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            debug!(%peer, limit = limits.max_connections, "closing an HTTP connection over the limit");
            continue;
        };
        let Some(slot) = per_client.enter(peer.ip()) else {
            debug!(%peer, limit = per_client.limit(), "closing an HTTP connection over the per-client limit");
            continue;
        };
        let _ = stream.set_nodelay(true);
        serve(
            stream,
            peer,
            Admitted {
                _open: permit,
                _slot: slot,
            },
        );
    }
    drop(listener);
}

/// `answer` within `timeout`, else 408.
async fn within(
    timeout: Duration,
    answer: impl std::future::Future<Output = Response>,
) -> Response {
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {:.0}s (http_request_timeout)",
                timeout.as_secs_f64()
            ),
        )
            .into_response(),
    }
}
