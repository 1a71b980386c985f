//! The network edge: gRPC services (thin — convert, call, map errors), bearer-token auth,
//! the HTTP listener, and the clients sites use to talk to each other.
//!
//! This is the only module that knows protobuf. Every streaming RPC ends when the site shuts
//! down, so a graceful shutdown never waits on a subscriber.

mod admin;
pub mod auth;
pub mod client;
pub mod convert;
mod gate;
mod http;
mod mode;
mod objects;
mod replication;
pub mod status;

use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::site::Site;
use auth::{EitherGuard, Guard};

/// The generated protobuf types and gRPC stubs of `proto/geo/v1`.
pub mod pb {
    tonic::include_proto!("geo.v1");

    pub type ModeClient = mode_service_client::ModeServiceClient<tonic::transport::Channel>;
    pub type AdminClient = admin_service_client::AdminServiceClient<tonic::transport::Channel>;
    pub type GateClient = gate_service_client::GateServiceClient<tonic::transport::Channel>;
    pub type StatusClient = status_service_client::StatusServiceClient<tonic::transport::Channel>;
    pub type ObjectClient = object_service_client::ObjectServiceClient<tonic::transport::Channel>;
    pub type ReplicationClient =
        replication_service_client::ReplicationServiceClient<tonic::transport::Channel>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Serves gRPC on `grpc` and HTTP on `http` until the site's shutdown token is cancelled,
/// then lets in-flight requests finish.
pub async fn serve(
    site: Arc<Site>,
    grpc: TcpListener,
    http: TcpListener,
) -> Result<(), ServeError> {
    let admin_guard = Guard {
        wanted: site.admin_token.clone(),
        wanted_name: "admin token",
        other: site.site_token.clone(),
        service: "AdminService",
    };
    let site_guard = Guard {
        wanted: site.site_token.clone(),
        wanted_name: "site token",
        other: site.admin_token.clone(),
        service: "ReplicationService",
    };
    let either_guard = EitherGuard {
        admin: site.admin_token.clone(),
        site: site.site_token.clone(),
        service: "ObjectService",
    };
    let grpc_server = Server::builder()
        .http2_adaptive_window(Some(true))
        .add_service(pb::mode_service_server::ModeServiceServer::new(
            mode::ModeSvc::new(Arc::clone(&site)),
        ))
        .add_service(pb::status_service_server::StatusServiceServer::new(
            status::StatusSvc::new(Arc::clone(&site)),
        ))
        .add_service(pb::gate_service_server::GateServiceServer::new(
            gate::GateSvc::new(Arc::clone(&site)),
        ))
        .add_service(
            pb::admin_service_server::AdminServiceServer::with_interceptor(
                admin::AdminSvc::new(Arc::clone(&site)),
                move |req| admin_guard.check(req),
            ),
        )
        .add_service(
            pb::replication_service_server::ReplicationServiceServer::with_interceptor(
                replication::ReplicationSvc::new(Arc::clone(&site)),
                move |req| site_guard.check(req),
            ),
        )
        .add_service(
            pb::object_service_server::ObjectServiceServer::with_interceptor(
                objects::ObjectSvc::new(Arc::clone(&site)),
                move |req| either_guard.check(req),
            ),
        )
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            site.shutdown.clone().cancelled_owned(),
        );
    let http_server = axum::serve(http, http::router(Arc::clone(&site)))
        .with_graceful_shutdown(site.shutdown.clone().cancelled_owned());
    let (grpc_result, http_result) = tokio::join!(grpc_server, http_server);
    grpc_result?;
    http_result?;
    Ok(())
}
