//! One site: its storage, settings, follower and servers, wired together and run until
//! shutdown. This is the composition root the daemon and `dev` share.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument};

use crate::config::Config;
use crate::gate::{self, GateConfig};
use crate::replication::{Follower, FollowerError, FollowerStatus};
use crate::server::auth::Token;
use crate::server::client::GrpcLogSource;
use crate::server::{self, convert, pb, ServeError};
use crate::settings::{Role, Settings, SettingsError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Follower(#[from] FollowerError),
    #[error("a critical task panicked: {0}")]
    Panicked(String),
}

/// What the servers share while a site runs.
pub struct Site {
    pub settings: Arc<Settings>,
    pub follower: Option<watch::Receiver<FollowerStatus>>,
    pub admin_token: Token,
    pub site_token: Token,
    /// How often a serving site sends heartbeats on a log stream.
    pub heartbeat: Duration,
    /// How the gate enforces maintenance mode here.
    pub gate: GateConfig,
    /// Cancelled once, to stop everything.
    pub shutdown: CancellationToken,
    store: Store,
}

/// A site opened but not yet serving.
pub struct Opened {
    pub site: Arc<Site>,
    follower: Option<Follower<GrpcLogSource>>,
}

impl Site {
    /// Opens the site's storage and settings; builds its follower if it is a secondary.
    pub async fn open(config: &Config, shutdown: CancellationToken) -> Result<Opened, SiteError> {
        let store = Store::open(&config.data_dir)?;
        let settings = Arc::new(
            Settings::open(
                store.clone(),
                &config.site_id,
                config.role,
                config.primary.clone(),
            )
            .await?,
        );
        let (follower, status) = match (&config.role, &config.primary) {
            (Role::Secondary, Some(primary)) => {
                let source = GrpcLogSource {
                    primary: primary.clone(),
                    token: config.site_token.clone(),
                    site_id: config.site_id.clone(),
                };
                let (f, rx) = Follower::new(
                    Arc::clone(&settings),
                    source,
                    primary.clone(),
                    config.heartbeat * 5,
                );
                (Some(f), Some(rx))
            }
            _ => (None, None),
        };
        let site = Site {
            settings,
            follower: status,
            admin_token: config.admin_token.clone(),
            site_token: config.site_token.clone(),
            heartbeat: config.heartbeat,
            gate: config.gate.clone(),
            shutdown,
            store,
        };
        Ok(Opened {
            site: Arc::new(site),
            follower,
        })
    }

    pub fn follower_status(&self) -> Option<FollowerStatus> {
        self.follower.as_ref().map(|rx| rx.borrow().clone())
    }

    /// Asks the gate about `req` with the current mode (a `watch` borrow, no I/O).
    pub fn check(&self, req: &gate::Request) -> Result<gate::Decision, gate::GateError> {
        let mode = self.settings.mode();
        let view = gate::SiteView {
            role: match mode.role {
                Role::Primary => gate::SiteRole::Primary,
                Role::Secondary => gate::SiteRole::Secondary,
            },
            maintenance: mode.maintenance.enabled,
            message: mode.maintenance.message,
        };
        gate::decide(req, &view, &self.gate)
    }

    /// The mode as `GetMode` answers it.
    pub fn mode_state(&self) -> pb::ModeState {
        convert::mode_state(&self.settings.mode(), self.follower_status().as_ref())
    }
}

impl Opened {
    /// Serves until the shutdown token is cancelled. A follower that dies of a storage
    /// failure takes the site down with an error rather than leaving it serving stale data.
    pub async fn serve(self, grpc: TcpListener, http: TcpListener) -> Result<(), SiteError> {
        let site = self.site;
        let shutdown = site.shutdown.clone();
        let span = tracing::info_span!("site", id = %site.settings.site_id());
        let follower = self.follower.map(|f| {
            tokio::spawn(
                f.run(shutdown.clone())
                    .instrument(tracing::info_span!(parent: &span, "follower")),
            )
        });
        let servers = server::serve(Arc::clone(&site), grpc, http).instrument(span.clone());
        tokio::pin!(servers);
        let mut failure: Option<SiteError> = None;
        let served = match follower {
            None => servers.await,
            Some(mut task) => {
                tokio::select! {
                    r = &mut servers => {
                        shutdown.cancel();
                        if let Ok(Err(e)) = task.await { failure = Some(e.into()); }
                        r
                    }
                    r = &mut task => {
                        let err = match r {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(SiteError::from(e)),
                            Err(join) => Some(SiteError::Panicked(format!("settings follower: {join}"))),
                        };
                        if let Some(e) = &err {
                            error!(error = %e, "critical task failed; shutting the site down");
                        }
                        failure = err;
                        shutdown.cancel();
                        servers.await
                    }
                }
            }
        };
        site.store.flush().await?;
        info!(site = %site.settings.site_id(), "site stopped");
        if let Some(e) = failure {
            return Err(e);
        }
        served?;
        Ok(())
    }
}
