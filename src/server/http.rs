//! The HTTP listener: the gate for nginx (`auth_request`), the git `allowed` check for
//! gitlab-shell-style callers, the mode as JSON, and a liveness probe.
//!
//! nginx's `auth_request` understands only 2xx (allow), 401 and 403 (deny); anything else
//! becomes a 500. So `/gate/auth` always refuses with 401/403 and carries the decision's own
//! status in `X-Gate-Status`, and `/gate/respond` renders the exact answer (301 redirect,
//! 503 with `Retry-After`, the JSON body) for nginx's `error_page` to serve. See
//! `contrib/nginx/geo-gate.conf`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::Site;
use super::{convert, error, page};
use crate::gate::{self, Decision, Verdict};
use crate::status::{metrics, SiteStatus};
use crate::types::ErrorKind;

/// Headers nginx sets on the `auth_request` subrequest (see the shipped snippet).
pub const ORIGINAL_METHOD: &str = "x-original-method";
pub const ORIGINAL_URI: &str = "x-original-uri";

pub fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/mode", get(mode))
        .route("/objects", get(objects))
        .route("/gate/auth", any(gate_auth))
        .route("/gate/respond", any(gate_respond))
        .route("/api/v4/internal/allowed", post(git_allowed))
        .layer(axum::middleware::from_fn(in_span))
        .with_state(site)
}

/// Runs each request in an `http{method, path}` span, so what it logs says which request.
async fn in_span(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    tracing::Instrument::instrument(next.run(req), span).await
}

/// This site's statuses (itself first), counted off the async threads.
async fn statuses(site: &Arc<Site>) -> Result<Vec<SiteStatus>, Response> {
    let s = Arc::clone(site);
    match tokio::task::spawn_blocking(move || s.local().statuses()).await {
        Ok(Ok(statuses)) => Ok(statuses),
        Ok(Err(e)) => Err(error::http(e).into_response()),
        Err(e) => Err(error::http(panicked(e)).into_response()),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    refresh: Option<u32>,
}

/// The status page for people (see `page`). `?refresh=N` sets how often it reloads.
async fn status_page(State(site): State<Arc<Site>>, Query(q): Query<PageQuery>) -> Response {
    let statuses = match statuses(&site).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let objects = Arc::clone(&site.objects);
    let listed =
        match tokio::task::spawn_blocking(move || objects.attention(super::objects_page::LISTED))
            .await
        {
            Ok(Ok(listed)) => super::objects_page::render(&listed, crate::log::now_ms()),
            Ok(Err(e)) => return error::http(e).into_response(),
            Err(e) => return error::http(panicked(e)).into_response(),
        };
    let mode = site.settings.mode();
    let in_flight = site.objects.inflight().list();
    let now = crate::log::now_ms();
    let html = page::render(&page::Page {
        mode: &mode,
        primary: site.settings.primary(),
        statuses: &statuses,
        in_flight: &in_flight,
        objects: &listed,
        now_ms: now,
        refresh_secs: q
            .refresh
            .unwrap_or(page::DEFAULT_REFRESH_SECS)
            .clamp(1, page::MAX_REFRESH_SECS),
        version: env!("CARGO_PKG_VERSION"),
        history: &site.reports.history.all(now),
    });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// Prometheus metrics, text format 0.0.4.
async fn metrics(State(site): State<Arc<Site>>) -> Response {
    let statuses = match statuses(&site).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut errors = site.counters.replication_errors();
    for (kind, follower) in [
        ("settings", &site.follower),
        ("events", &site.events_follower),
    ] {
        if let Some(rx) = follower {
            *errors.entry(kind).or_insert(0) += rx.borrow().errors;
        }
    }
    *errors.entry("sync").or_insert(0) += site.objects.sync_failures();
    let text = metrics::render(&metrics::Scrape {
        version: env!("CARGO_PKG_VERSION"),
        serving: site.health.is_serving(),
        fenced: site.settings.fenced().is_some(),
        statuses: &statuses,
        gate_decisions: site.counters.gate_decisions(),
        replication_errors: errors,
        repairs: site.counters.repairs(),
        proxy: site.proxy_enabled.then(|| site.counters.proxy.snapshot()),
        scheduled: site
            .settings
            .maintenance_schedule()
            .map(|w| (w.start_ms, w.end_ms)),
        tls_not_after: site.server_tls.as_ref().and_then(|t| t.not_after()),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// For load balancers: 200 while the site serves, 503 while it starts or drains to stop
/// (as `grpc.health.v1.Health` says).
async fn healthz(State(site): State<Arc<Site>>) -> Response {
    if site.health.is_serving() {
        // A full disk is CRITICAL but still 200: the site serves reads, the mode and the
        // gate, and a liveness probe that restarted it would only make it serve nothing.
        // A failing bucket too: the mode and the gate do not depend on it.
        if let Some(fault) = site.objects.blobs().fault() {
            return format!(
                "critical: object storage {} is failing: {}; serving the mode and the gate; objects cannot be stored or read until it answers\n",
                site.objects.blobs().describe(),
                fault.error
            )
            .into_response();
        }
        match site.store.disk().state().reason() {
            Some(reason) => format!(
                "critical: {reason}; serving reads, the mode and the gate; writes are refused until space is freed\n"
            )
            .into_response(),
            None => "ok\n".into_response(),
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not serving: starting or stopping\n",
        )
            .into_response()
    }
}

/// How this site's copies stand: counts of synced, pending, failed and verified objects,
/// and the writes in flight.
async fn objects(State(site): State<Arc<Site>>) -> Response {
    let objects = Arc::clone(&site.objects);
    match tokio::task::spawn_blocking(move || objects.counts()).await {
        Ok(Ok(counts)) => {
            let mut body = serde_json::to_value(counts).unwrap_or_default();
            body["in_flight"] =
                serde_json::to_value(site.objects.inflight().list()).unwrap_or_default();
            Json(body).into_response()
        }
        Ok(Err(e)) => error::http(e).into_response(),
        Err(e) => error::http(panicked(e)).into_response(),
    }
}

async fn mode(State(site): State<Arc<Site>>) -> Json<serde_json::Value> {
    Json(convert::mode_json(&site.mode_state()))
}

/// The original request, as nginx describes it in headers.
fn original_request(
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<gate::HttpRequest, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| format!("header {name} is not visible ASCII"))
            })
            .transpose()
    };
    let path = text(ORIGINAL_URI)?
        .ok_or_else(|| format!("missing {ORIGINAL_URI}: set it to $request_uri"))?;
    let method = text(ORIGINAL_METHOD)?.unwrap_or_else(|| method.to_string());
    let client_ip = text("x-real-ip")?
        .or(text("x-forwarded-for")?
            .and_then(|f| f.split(',').next().map(|s| s.trim().to_string())))
        .map(|ip| {
            ip.parse()
                .map_err(|_| format!("client address {ip:?} is not an IP address"))
        })
        .transpose()?;
    Ok(gate::HttpRequest {
        method,
        path,
        accept: text("accept")?,
        content_type: text("content-type")?,
        referer: text("referer")?,
        body: (!body.is_empty()).then(|| body.to_vec()),
        client_ip,
    })
}

/// A blocking task that did not finish: this site's fault.
fn panicked(e: tokio::task::JoinError) -> error::Plain {
    error::Plain {
        kind: ErrorKind::Internal,
        message: format!("status task failed: {e}"),
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

/// The gate's decision on the request nginx describes; counted for metrics when `count`.
fn decide(
    site: &Site,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
    count: bool,
) -> Result<Decision, String> {
    let req = gate::Request::Http(original_request(method, headers, body)?);
    let decision = if count {
        site.check(&req)
    } else {
        site.decide(&req)
    };
    decision.map_err(|e| e.to_string())
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// For `auth_request`: 204 to let the request through, 401/403 to refuse.
async fn gate_auth(
    State(site): State<Arc<Site>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let d = match decide(&site, &method, &headers, body, true) {
        Ok(d) => d,
        Err(e) => return bad_request(e),
    };
    let mut out = if d.verdict == Verdict::Deny {
        let status = if d.status == 401 { 401 } else { 403 };
        let mut r = render(&d);
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        r
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    let h = out.headers_mut();
    h.insert("x-gate-status", HeaderValue::from(d.status));
    h.insert("x-gate-rule", header_value(d.rule));
    h.insert("x-gate-verdict", header_value(d.verdict.as_str()));
    out
}

/// The exact answer for a refused request (nginx serves it from `error_page`).
async fn gate_respond(
    State(site): State<Arc<Site>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The same request `/gate/auth` already decided (and counted).
    match decide(&site, &method, &headers, body, false) {
        Ok(d) if d.verdict == Verdict::Deny => render(&d),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad_request(e),
    }
}

/// A decision as an HTTP response: status, body, Location, Retry-After. The one rendering
/// of a refusal: `/gate/respond` serves it to nginx, the gating proxy to its clients.
pub fn render(d: &Decision) -> Response {
    let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN);
    let body = d
        .body
        .as_deref()
        .or(d.message.as_deref())
        .unwrap_or_default()
        .to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if !d.content_type.is_empty() {
        h.insert(header::CONTENT_TYPE, header_value(&d.content_type));
    }
    if let Some(loc) = &d.location {
        h.insert(header::LOCATION, header_value(loc));
    }
    if let Some(secs) = d.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// What gitlab-shell-style callers send to ask whether a git command may run.
#[derive(Deserialize)]
struct AllowedRequest {
    /// `git-upload-pack` or `git-receive-pack`.
    action: String,
    /// `ssh` (default) or `http`.
    #[serde(default)]
    protocol: Option<String>,
}

/// `/api/v4/internal/allowed`: 200 `{"status": true}`, or the refusal (401 over SSH, with
/// `{"status": false, "message": …}` so the client shows the text).
async fn git_allowed(State(site): State<Arc<Site>>, body: Bytes) -> Response {
    let req: AllowedRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("expected JSON with action and protocol: {e}")),
    };
    let op = match req.action.as_str() {
        "git-upload-pack" => gate::GitOp::UploadPack,
        "git-receive-pack" => gate::GitOp::ReceivePack,
        other => return bad_request(format!("unknown git action {other:?}")),
    };
    let protocol = match req.protocol.as_deref() {
        None | Some("ssh") => gate::GitProtocol::Ssh,
        Some("http") => gate::GitProtocol::Http,
        Some(other) => return bad_request(format!("unknown protocol {other:?}")),
    };
    let question = gate::Request::Git(gate::GitRequest {
        op,
        protocol,
        proxied: false,
    });
    match site.check(&question) {
        Err(e) => bad_request(e.to_string()),
        Ok(d) if d.verdict == Verdict::Deny => {
            let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN);
            let message = d.message.as_deref().unwrap_or_default();
            (
                status,
                Json(serde_json::json!({ "status": false, "message": message })),
            )
                .into_response()
        }
        Ok(d) => Json(serde_json::json!({
            "status": true,
            "geo_proxy_to_primary": d.verdict == Verdict::ProxyToPrimary,
        }))
        .into_response(),
    }
}
