//! Limits on what one client may hold of a site: the size of a message, how long a push may
//! stay silent, and how many calls it may have open at once. Exceeding one is an error the
//! client sees at once (`RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`), never a hang.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::auth::Sites;

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// A push sends 256 KiB chunks; a smaller limit would refuse every large push.
pub const MIN_MAX_MESSAGE_BYTES: usize = 1 << 20;
// Every log entry, with its stream envelope, fits in the smallest message a site allows;
// otherwise one entry could stop every secondary's stream for good.
const _: () = assert!(crate::log::MAX_ENTRY_BYTES * 4 <= MIN_MAX_MESSAGE_BYTES);
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Enough for several secondaries behind one address, each with its log streams and sync
/// workers, and for the CLI and front ends beside them.
pub const DEFAULT_MAX_STREAMS_PER_CLIENT: usize = 256;
/// How long an HTTP client may take to send a request's headers.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP request may take from its headers to its answer, body included.
pub const DEFAULT_HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP connections open at once, from everyone: far below a daemon's file descriptor
/// limit, so a flood of them cannot starve the gRPC port or the database.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1024;
/// HTTP connections one client address may have open at once. nginx keeps a pool of
/// upstream connections per worker; a few hundred covers a busy front end.
pub const DEFAULT_HTTP_MAX_CONNECTIONS_PER_CLIENT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest gRPC message a site decodes or sends.
    pub max_message_bytes: usize,
    /// How long a push may go without a message before it is abandoned. A silent client
    /// would otherwise hold a write in flight forever, and maintenance mode would never
    /// drain.
    pub stream_idle_timeout: Duration,
    /// Calls (unary or streaming) one client address may have open at once; calls with
    /// a registered site's token (other sites) are not counted.
    pub max_streams_per_client: usize,
    /// The HTTP listener's own limits, apart from gRPC's, so a flood of one does not
    /// starve the other.
    pub http: HttpLimits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A client that has not sent a whole request head by then is disconnected.
    pub header_timeout: Duration,
    /// A request (its body read and its answer made) that takes longer gets 408.
    pub request_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Connections one client address may have open at once.
    pub max_connections_per_client: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            request_timeout: DEFAULT_HTTP_REQUEST_TIMEOUT,
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_HTTP_MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            max_streams_per_client: DEFAULT_MAX_STREAMS_PER_CLIENT,
            http: HttpLimits::default(),
        }
    }
}

/// Counts the calls open per client address and refuses one over the limit. Calls with
/// a registered site's token are not counted: a secondary relays the pushes of all its
/// users, and its log streams and sync workers, over one address.
#[derive(Clone)]
pub struct PerClientLayer {
    calls: PerAddress,
    sites: Arc<dyn Sites>,
}

impl PerClientLayer {
    pub fn new(limit: usize, sites: Arc<dyn Sites>) -> PerClientLayer {
        PerClientLayer {
            calls: PerAddress::new(limit),
            sites,
        }
    }

    /// Whether the request carries a registered site's token.
    fn is_a_site(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|presented| self.sites.site_with_token(presented).is_some())
    }
}

/// Counts what each client address holds open (calls, connections), up to a limit.
#[derive(Clone)]
pub struct PerAddress {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    pub fn new(limit: usize) -> PerAddress {
        PerAddress {
            limit,
            open: Arc::default(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more from `ip`, or `None` when it has `limit` open.
    pub fn enter(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            open: Arc::clone(&self.open),
        })
    }
}

/// One open call or connection, counted until it is dropped.
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl<S> tower::Layer<S> for PerClientLayer {
    type Service = PerClient<S>;

    fn layer(&self, inner: S) -> PerClient<S> {
        PerClient {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct PerClient<S> {
    inner: S,
    layer: PerClientLayer,
}

fn peer_ip<B>(req: &http::Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    let tcp = ext.get::<TcpConnectInfo>().or_else(|| {
        ext.get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(|t| t.get_ref())
    })?;
    tcp.remote_addr().map(|a| a.ip())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for PerClient<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let from_a_site = self.layer.is_a_site(req.headers());
        let call = match peer_ip(&req).filter(|_| !from_a_site) {
            None => None,
            Some(ip) => match self.layer.calls.enter(ip) {
                Some(call) => Some(call),
                None => {
                    let status = Status::resource_exhausted(format!(
                        "too many calls open from {ip}: at most {} at once (max_streams_per_client); close some and try again",
                        self.layer.calls.limit()
                    ));
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            },
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| match call {
                None => body,
                Some(call) => Body::new(Holding { body, _call: call }),
            }))
        })
    }
}

/// A response body that keeps its call counted until it ends.
struct Holding {
    body: Body,
    _call: Slot,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let layer = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = layer.enter(a).unwrap();
        let _second = layer.enter(a).unwrap();
        assert!(layer.enter(a).is_none(), "a third call from one address");
        assert!(
            layer.enter(b).is_some(),
            "another address has its own count"
        );
        drop(first);
        assert!(
            layer.enter(a).is_some(),
            "a call that ended frees its place"
        );
    }
}
