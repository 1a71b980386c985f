//! The gating reverse proxy: geo-agent in front of the application, so that the gate sees
//! request bodies. nginx's `auth_request` sends the gate no body, so a GraphQL mutation or an
//! LFS batch upload in maintenance mode can only be judged by its path; here every request is
//! judged by the same gate (`Site::check`, the site's current mode) and a refused one gets
//! exactly the answer `/gate/respond` renders. An allowed one goes to the upstream unchanged
//! (method, target, headers, body) with `X-Forwarded-*` added and hop-by-hop headers dropped
//! (RFC 9110 §7.6.1), and the upstream's answer comes back unchanged.
//!
//! Trade-off: bodies are read only where a rule needs them. The gate is asked first without
//! the body; only when it answers that it could not tell without one (`graphql.no_body`,
//! `lfs.no_body`) is the body read, up to the gate's `max_body_bytes` (one byte more and the
//! gate refuses it as too large to inspect), judged, and replayed to the upstream frame for
//! frame. Everything else streams both ways with backpressure and a bounded buffer, so a
//! 1 GiB push costs the daemon no more memory than a small one. The upstream is plain HTTP/1.1
//! on a trusted network (the application on the same host, as nginx would reach it); a client
//! slower than the body timeout, an upstream slower than the response timeout, or one that is
//! down gets 408, 504 or 502, never a hang.

mod body;
mod forward;
mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::gate::Cidr;
use crate::server::limits::{self, HttpLimits};
use crate::server::{listen, Site};

pub use forward::Proxy;

/// How long a client may take to send a request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = limits::DEFAULT_HTTP_HEADER_TIMEOUT;
/// How long a client may send nothing in the middle of a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the upstream may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the upstream may take to start its answer once it has the whole request, and
/// then how long it may send nothing in the middle of its answer.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The gating proxy's configuration (`--proxy-*` flags, `[proxy]` in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub upstream: Upstream,
    /// Peers whose `X-Forwarded-For` is believed (a load balancer or nginx in front). From
    /// anyone else the socket's address is the client's, whatever the headers claim, so a
    /// client cannot claim an exempt network.
    pub trusted_proxies: Vec<Cidr>,
    pub limits: ProxyLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

impl Default for ProxyLimits {
    fn default() -> ProxyLimits {
        ProxyLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_connections: limits::DEFAULT_HTTP_MAX_CONNECTIONS,
            max_connections_per_client: limits::DEFAULT_HTTP_MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

/// Where allowed requests go: `http://host:port`, no path (the request's own target is
/// appended unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: http::uri::Authority,
}

impl Upstream {
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("proxy upstream {text:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "proxy upstream {text:?}: only http:// is supported, not {other}:// (the application on this host or a trusted network)"
                ))
            }
            None => return Err(format!("proxy upstream {text:?} needs http://")),
        }
        let authority = uri
            .authority()
            .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
            .cloned()
            .ok_or_else(|| format!("proxy upstream {text:?} needs a host (and no user name)"))?;
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!(
                "proxy upstream {text:?} must not have a path or query: requests keep their own"
            ));
        }
        Ok(Upstream { authority })
    }

    /// `http://host:port`, for messages and logs.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }

    pub(crate) fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// [`serve`] on a thread of its own, with a single-threaded runtime, as an nginx worker
/// runs: a request and its exchange with the upstream never hop between threads, and the
/// front door's latency does not depend on what replication is doing on the daemon's
/// runtime (nor the other way round). Measured side by side (BENCHMARKS.md, "The gating
/// proxy"), this cut the p99 under 16 concurrent clients about fourfold; one core proxies
/// over 40,000 requests a second. Returns when the proxy has stopped.
pub async fn serve_on_own_thread(
    listener: TcpListener,
    site: Arc<Site>,
    config: ProxyConfig,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(error) => {
            error!(%error, "the gating proxy cannot take its listener: it does not run");
            return;
        }
    };
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    let span = tracing::Span::current();
    let started = std::thread::Builder::new()
        .name("geo-proxy".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(error) => {
                    error!(%error, "the gating proxy cannot start its runtime: it does not run");
                    return;
                }
            };
            runtime.block_on(
                async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => serve(l, site, config, shutdown, drain).await,
                        Err(error) => error!(%error, "the gating proxy cannot listen"),
                    }
                }
                .instrument(span),
            );
            drop(done);
        });
    if let Err(error) = started {
        error!(%error, "the gating proxy cannot start its thread: it does not run");
        return;
    }
    // Resolves when the thread is done (its sender dropped), however it ended.
    let _ = stopped.await;
}

/// Serves the gating proxy on `listener` until `shutdown`, then lets the requests still open
/// finish (for at most `drain`) before closing their connections.
pub async fn serve(
    listener: TcpListener,
    site: Arc<Site>,
    config: ProxyConfig,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let limits = HttpLimits {
        header_timeout: config.limits.header_timeout,
        // Not used by the accept loop: bodies have their own idle timeout here.
        request_timeout: config.limits.body_timeout,
        max_connections: config.limits.max_connections,
        max_connections_per_client: config.limits.max_connections_per_client,
    };
    let proxy = Arc::new(Proxy::new(site, config));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let connections = TaskTracker::new();
    listen::accept(listener, &limits, &shutdown, |stream, peer, admitted| {
        let proxy = Arc::clone(&proxy);
        let service = service_fn(move |req| Arc::clone(&proxy).handle(req, peer));
        let connection = http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    // Finish the request under way, take no other on this connection.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                debug!(%peer, %error, "proxy connection ended with an error");
            }
            drop(admitted);
        });
    })
    .await;
    connections.close();
    let open = connections.len();
    if open > 0 {
        info!(
            connections = open,
            "proxy stopping: waiting for requests under way"
        );
    }
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        warn!(
            connections = connections.len(),
            "proxy requests still open after the drain time; closing them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_is_plain_http_with_a_host_and_no_path() {
        let u = Upstream::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.url(), "http://127.0.0.1:8080");
        assert_eq!(
            Upstream::parse("http://app.internal/").unwrap().url(),
            "http://app.internal"
        );
        for bad in [
            "https://app:8443",
            "app:8080",
            "http://app:8080/gitlab",
            "http://app:8080/?x=1",
            "http://user@app:8080",
            "not a url",
            "",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
