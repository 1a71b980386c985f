//! The network edge: gRPC services (thin — convert, call, map errors), bearer-token auth,
//! the HTTP listener, and the clients sites use to talk to each other.
//!
//! This is the only module that knows protobuf. Every streaming RPC ends when the site shuts
//! down, so a graceful shutdown never waits on a subscriber.

mod admin;
pub mod auth;
mod charts;
pub mod client;
pub mod convert;
pub mod error;
mod gate;
pub mod http;
pub mod limits;
pub mod listen;
mod mode;
mod object_ops;
mod objects;
mod objects_page;
mod page;
mod replication;
mod site;
pub mod site_sync;
pub mod status;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use auth::{AdminGuard, SiteGuard};
pub use site::Site;

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

    /// Every `geo.v1` file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("geo_descriptor");
}

/// The services this site serves, by their full names, as health and reflection list them.
pub const SERVICES: [&str; 6] = [
    <pb::mode_service_server::ModeServiceServer<mode::ModeSvc>>::NAME,
    <pb::admin_service_server::AdminServiceServer<admin::AdminSvc>>::NAME,
    <pb::replication_service_server::ReplicationServiceServer<replication::ReplicationSvc>>::NAME,
    <pb::object_service_server::ObjectServiceServer<objects::ObjectSvc>>::NAME,
    <pb::gate_service_server::GateServiceServer<gate::GateSvc>>::NAME,
    <pb::status_service_server::StatusServiceServer<status::StatusSvc>>::NAME,
];

/// What the standard `grpc.health.v1.Health` service says of this site, overall (`""`) and
/// per service: NOT_SERVING while the site starts and while it drains to stop, SERVING in
/// between. `/healthz` on the HTTP listener says the same.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    serving: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            reporter: HealthReporter::new(),
            serving: Arc::default(),
        }
    }
}

impl Health {
    pub async fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in std::iter::once("").chain(SERVICES) {
            self.reporter.set_service_status(name, status).await;
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Ends every `Watch` stream (after the NOT_SERVING it has already sent), so a load
    /// balancer watching health does not hold the servers open when the site stops.
    async fn close(&self) {
        let mut reporter = self.reporter.clone();
        self.serving.store(false, Ordering::SeqCst);
        for name in std::iter::once("").chain(SERVICES) {
            reporter.clear_service_status(name).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// How long the servers may take, once the site stops, to answer requests still open.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves gRPC on `grpc` and HTTP on `http` until the site's shutdown token is cancelled,
/// then lets open requests finish for a few seconds (writes in flight have already been
/// drained by then; see `site`).
pub async fn serve(
    site: Arc<Site>,
    grpc: TcpListener,
    http: TcpListener,
) -> Result<(), ServeError> {
    let sites: Arc<dyn auth::Sites> = site.settings.clone();
    let admin_guard = AdminGuard {
        admin: site.admin_token.clone(),
        sites: Arc::clone(&sites),
        service: "AdminService",
    };
    let site_guard = SiteGuard {
        admin: site.admin_token.clone(),
        sites: Arc::clone(&sites),
        service: "ReplicationService",
        admin_too: false,
    };
    let either_guard = SiteGuard {
        service: "ObjectService",
        admin_too: true,
        ..site_guard.clone()
    };
    let limits = site.limits;
    // Every geo.v1 service decodes and sends messages of at most max_message_bytes.
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(limits.max_message_bytes)
                .max_encoding_message_size(limits.max_message_bytes)
        };
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    let mut builder = Server::builder();
    if let Some(tls) = &site.server_tls {
        builder = builder.tls_config(tls.config())?;
    }
    let grpc_server = builder
        .http2_adaptive_window(Some(true))
        // Find peers that vanished without closing their connection.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .layer(limits::PerClientLayer::new(
            limits.max_streams_per_client,
            Arc::clone(&sites),
        ))
        .add_service(tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(site.health.reporter.clone()),
        ))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(pb::mode_service_server::ModeServiceServer::new(
            mode::ModeSvc::new(Arc::clone(&site))
        )))
        .add_service(limited!(
            pb::status_service_server::StatusServiceServer::new(status::StatusSvc::new(
                Arc::clone(&site)
            ))
        ))
        .add_service(limited!(pb::gate_service_server::GateServiceServer::new(
            gate::GateSvc::new(Arc::clone(&site))
        )))
        .add_service(InterceptedService::new(
            limited!(pb::admin_service_server::AdminServiceServer::new(
                admin::AdminSvc::new(Arc::clone(&site))
            )),
            move |req| admin_guard.check(req),
        ))
        .add_service(InterceptedService::new(
            limited!(
                pb::replication_service_server::ReplicationServiceServer::new(
                    replication::ReplicationSvc::new(Arc::clone(&site))
                )
            ),
            move |req| site_guard.check(req),
        ))
        .add_service(InterceptedService::new(
            limited!(pb::object_service_server::ObjectServiceServer::new(
                objects::ObjectSvc::new(Arc::clone(&site))
            )),
            move |req| either_guard.check(req),
        ))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            site.shutdown.clone().cancelled_owned(),
        );
    let http_server = listen::serve(
        http,
        http::router(Arc::clone(&site)),
        limits.http,
        site.shutdown.clone(),
    );
    let end_watches = async {
        site.shutdown.cancelled().await;
        site.health.close().await;
    };
    let both = async {
        let (grpc_result, http_result, ()) = tokio::join!(grpc_server, http_server, end_watches);
        grpc_result?;
        http_result?;
        Ok(())
    };
    let grace = async {
        site.shutdown.cancelled().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    tokio::select! {
        r = both => r,
        _ = grace => {
            tracing::warn!(grace_secs = CLOSE_GRACE.as_secs(), "requests still open after the grace period; closing them");
            Ok(())
        }
    }
}
