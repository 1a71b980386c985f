//! The HTTP listener: a liveness probe and the mode as JSON, for tools that do not speak
//! gRPC (load balancers, curl, shell scripts).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::convert;
use crate::site::Site;

pub fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/mode", get(mode))
        .with_state(site)
}

async fn mode(State(site): State<Arc<Site>>) -> Json<serde_json::Value> {
    Json(convert::mode_json(&site.mode_state()))
}
