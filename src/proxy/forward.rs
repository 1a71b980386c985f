//! One proxied request: judged by the gate, refused with the gate's answer or relayed to the
//! upstream and its answer relayed back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::body::{relay_error, Relay, RelayError};
use super::headers;
use super::{ProxyConfig, Upstream};
use crate::gate::{self, rules::ids, Decision, Verdict};
use crate::server::error::{self, Plain};
use crate::server::http::render;
use crate::server::Site;
use crate::types::ErrorKind;

type RequestBody = Relay<Incoming>;

/// How long an idle connection to the upstream is kept for the next request.
const POOL_IDLE: Duration = Duration::from_secs(60);

pub struct Proxy {
    site: Arc<Site>,
    config: ProxyConfig,
    client: Client<HttpConnector, RequestBody>,
}

impl Proxy {
    pub fn new(site: Arc<Site>, config: ProxyConfig) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.limits.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Proxy {
            site,
            config,
            client,
        }
    }

    /// Answers one request; never fails (every failure is an HTTP answer).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response, std::convert::Infallible> {
        let span = tracing::info_span!(
            "proxy",
            method = %req.method(),
            path = %req.uri().path(),
            client = %peer.ip(),
        );
        Ok(self.answer(req, peer).instrument(span).await)
    }

    async fn answer(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response {
        if req.method() == Method::CONNECT {
            return bad(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied");
        }
        let Some(target) = req.uri().path_and_query().cloned() else {
            return bad(StatusCode::BAD_REQUEST, "the request target has no path");
        };
        let trusted = &self.config.trusted_proxies;
        let client_ip = match headers::client_ip(peer.ip(), req.headers(), trusted) {
            Ok(ip) => ip,
            Err(e) => return bad(StatusCode::BAD_REQUEST, &e),
        };
        let mut question = match gate_request(req.method(), target.as_str(), req.headers()) {
            Ok(q) => q,
            Err(e) => return bad(StatusCode::BAD_REQUEST, &e),
        };
        question.client_ip = Some(client_ip);
        let upgrade = headers::is_upgrade(req.headers());
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let mut body = Relay::new(incoming, "client", self.config.limits.body_timeout);

        let mut question = gate::Request::Http(question);
        let mut decision = match self.decide(&question) {
            Ok(d) => d,
            Err(r) => return *r,
        };
        if needs_body(&decision) {
            // One byte past the bound is enough for the gate to refuse it as too large.
            let limit = self.site.gate.max_body_bytes.saturating_add(1);
            let read = match body.read_up_to(limit).await {
                Ok(bytes) => bytes,
                Err(e) => return client_body_failed(&e),
            };
            if let gate::Request::Http(q) = &mut question {
                q.body = Some(read);
            }
            decision = match self.decide(&question) {
                Ok(d) => d,
                Err(r) => return *r,
            };
        }
        drop(question);
        let verdict = decision.verdict.as_str();
        self.site.counters.gate_decision(decision.rule, verdict);
        self.site.counters.proxy.decision(decision.rule, verdict);
        if decision.verdict == Verdict::Deny {
            info!(rule = decision.rule, reason = %decision.reason, "refused");
            return render(&decision);
        }
        debug!(rule = decision.rule, verdict, "forwarding");

        let upstream = &self.config.upstream;
        let mut out = Request::from_parts(parts, ());
        *out.uri_mut() = match upstream_uri(upstream, &target) {
            Ok(u) => u,
            Err(e) => return bad(StatusCode::BAD_REQUEST, &e),
        };
        let h = out.headers_mut();
        headers::strip_hop_by_hop(h, upgrade);
        h.remove(header::EXPECT);
        headers::set_forwarded(h, peer.ip(), trusted.iter().any(|c| c.contains(peer.ip())));
        let sent = Arc::new(Notify::new());
        let out = out.map(|()| body.on_end(Arc::clone(&sent)));

        let started = Instant::now();
        let response_timeout = self.config.limits.response_timeout;
        let answered = tokio::select! {
            r = self.client.request(out) => r,
            () = async {
                // The upstream's time starts once it has the whole request.
                sent.notified().await;
                tokio::time::sleep(response_timeout).await;
            } => {
                self.site.counters.proxy.upstream_error("timeout");
                warn!(%upstream, "the upstream did not answer in time");
                return failure(ErrorKind::GatewayTimeout, format!(
                    "the upstream {upstream} did not answer within {:.0}s",
                    response_timeout.as_secs_f64()
                ));
            }
        };
        let mut response = match answered {
            Ok(r) => r,
            Err(e) => return self.upstream_failed(&e),
        };
        self.site
            .counters
            .proxy
            .upstream_latency(started.elapsed().as_secs_f64());

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = on_upgrade {
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(
                    async move {
                        match tokio::try_join!(client_side, upstream_side) {
                            Ok((c, u)) => {
                                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                                if let Err(error) =
                                    tokio::io::copy_bidirectional(&mut c, &mut u).await
                                {
                                    debug!(%error, "upgraded connection ended with an error");
                                }
                            }
                            Err(error) => debug!(%error, "upgrade failed"),
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        let keep_upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let (mut parts, incoming) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, keep_upgrade);
        let body = Relay::new(incoming, "upstream", response_timeout);
        Response::from_parts(parts, Body::new(body))
    }

    /// The gate's decision, or the 400 a malformed request gets.
    fn decide(&self, question: &gate::Request) -> Result<Decision, Box<Response>> {
        self.site.decide(question).map_err(|e| {
            let (status, message) = error::http(e);
            Box::new(bad(status, &message))
        })
    }

    /// The answer when the exchange with the upstream failed: the client's own body
    /// failing is the client's fault (408/400), anything else is the upstream's (502).
    fn upstream_failed(&self, e: &hyper_util::client::legacy::Error) -> Response {
        if let Some(r) = relay_error(e) {
            return client_body_failed(r);
        }
        let upstream = &self.config.upstream;
        let detail = cause(e);
        if e.is_connect() {
            self.site.counters.proxy.upstream_error("connect");
            warn!(%upstream, error = %detail, "cannot reach the upstream");
            failure(
                ErrorKind::BadGateway,
                format!("the upstream {upstream} cannot be reached: {detail}"),
            )
        } else {
            self.site.counters.proxy.upstream_error("broken");
            warn!(%upstream, error = %detail, "the upstream's answer failed");
            failure(
                ErrorKind::BadGateway,
                format!("the upstream {upstream} sent no valid answer: {detail}"),
            )
        }
    }
}

/// The gate asked first without a body; these rules say it would need one to decide.
fn needs_body(d: &Decision) -> bool {
    d.rule == ids::GRAPHQL_NO_BODY || d.rule == ids::LFS_NO_BODY
}

/// The request as the gate reads it (the body added later, if needed).
fn gate_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
) -> Result<gate::HttpRequest, String> {
    let text = |name: header::HeaderName| -> Result<Option<String>, String> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| format!("header {name} is not visible ASCII"))
            })
            .transpose()
    };
    Ok(gate::HttpRequest {
        method: method.to_string(),
        path: target.to_string(),
        accept: text(header::ACCEPT)?,
        content_type: text(header::CONTENT_TYPE)?,
        referer: text(header::REFERER)?,
        body: None,
        client_ip: None,
    })
}

fn upstream_uri(upstream: &Upstream, target: &http::uri::PathAndQuery) -> Result<Uri, String> {
    Uri::builder()
        .scheme("http")
        .authority(upstream.authority().clone())
        .path_and_query(target.clone())
        .build()
        .map_err(|e| format!("cannot forward {target}: {e}"))
}

/// The deepest cause of an error, which says what actually went wrong ("connection refused").
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn client_body_failed(e: &RelayError) -> Response {
    let kind = match e {
        RelayError::Idle { .. } => ErrorKind::TimedOut,
        RelayError::Read { .. } => ErrorKind::Invalid,
    };
    debug!(error = %e, "the client's body failed");
    let mut r = failure(kind, e.to_string());
    // The rest of the body is not coming (or not read): this connection is done.
    r.headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    r
}

/// A failure through the one error mapping, as text.
fn failure(kind: ErrorKind, message: String) -> Response {
    let (status, text) = error::http(Plain { kind, message });
    bad(status, &text)
}

fn bad(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}
