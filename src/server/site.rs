//! The state every service of a running site shares: its settings, objects, followers'
//! positions, credentials, limits and counters. The runtime builds it when it opens the
//! site; the services only read it (and ask it to reopen after a failover step).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::auth::Token;
use super::limits::Limits;
use super::tls::{ClientTls, ServerTls};
use super::{convert, pb, Health};
use crate::failover::Next;
use crate::gate::{self, GateConfig};
use crate::objects::Objects;
use crate::replication::FollowerStatus;
use crate::settings::Settings;
use crate::status::metrics::Counters;
use crate::status::{Local, Reports};
use crate::store::Store;
use crate::types::Role;

/// What the servers share while a site runs.
pub struct Site {
    pub settings: Arc<Settings>,
    pub objects: Arc<Objects>,
    /// The settings-log follower's state (secondaries).
    pub follower: Option<watch::Receiver<FollowerStatus>>,
    /// The event-log follower's state (secondaries).
    pub events_follower: Option<watch::Receiver<FollowerStatus>>,
    /// One connection to the primary (secondaries), shared by the followers, the sync
    /// workers, forwarded writes and read-through pulls.
    pub primary_channel: Option<Channel>,
    pub admin_token: Token,
    pub site_token: Token,
    /// How often a serving site sends heartbeats on a log stream.
    pub heartbeat: Duration,
    /// How the gate enforces maintenance mode here.
    pub gate: GateConfig,
    /// Cancelled once, to stop everything (after writes in flight have drained, when the
    /// process is stopping).
    pub shutdown: CancellationToken,
    /// What `grpc.health.v1.Health` and `/healthz` answer.
    pub health: Health,
    /// TLS on the gRPC port.
    pub server_tls: Option<ServerTls>,
    /// How this site connects to `https://` sites.
    pub client_tls: ClientTls,
    pub limits: Limits,
    /// How long a stopping site waits for writes in flight.
    pub shutdown_timeout: Duration,
    /// Plain gRPC to other hosts is allowed (`repoint` checks it).
    pub allow_plaintext: bool,
    /// Gate decisions and replication failures, for `/metrics`.
    pub counters: Counters,
    /// This site runs the gating proxy, so `/metrics` shows its figures.
    pub proxy_enabled: bool,
    /// The latest report of each secondary (on the primary).
    pub reports: Reports,
    /// Where this site serves other sites, as its reports say (`advertise_url`).
    pub advertise_url: Option<String>,
    /// A former primary to tell of this site's epoch (after a promotion).
    pub fence_target: Option<String>,
    /// The site that replaced this one as the primary, when known (a fenced site).
    pub replaced_by: Option<String>,
    /// Set when the site stops only to open again with a new placement.
    pub reopen: AtomicBool,
    pub store: Store,
}

impl Site {
    /// Stops this site so that it opens again with the placement just recorded (promote,
    /// demote, repoint, fence), on the same listeners. In-flight requests finish first.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Does what a failover step asks of the site.
    pub fn follow(&self, next: Next) {
        match next {
            Next::Reopen => self.reopen(),
            Next::Stay => {}
        }
    }

    /// Whether the site stopped only to open again (see [`Site::reopen`]).
    pub fn reopening(&self) -> bool {
        self.reopen.load(Ordering::Acquire)
    }

    /// What the status judgements read of this site.
    pub fn local(&self) -> Local<'_> {
        Local {
            settings: &self.settings,
            objects: &self.objects,
            settings_follower: self.follower_status(),
            events_follower: self.events_follower.as_ref().map(|rx| rx.borrow().clone()),
            reports: &self.reports,
            advertise_url: self.advertise_url.as_deref(),
        }
    }

    pub fn follower_status(&self) -> Option<FollowerStatus> {
        self.follower.as_ref().map(|rx| rx.borrow().clone())
    }

    /// Asks the gate about `req` with the current mode (a `watch` borrow, no I/O), and counts
    /// the decision for `/metrics`.
    pub fn check(&self, req: &gate::Request) -> Result<gate::Decision, gate::GateError> {
        let decision = self.decide(req)?;
        self.counters
            .gate_decision(decision.rule, decision.verdict.as_str());
        Ok(decision)
    }

    /// [`Site::check`] without counting: for asking again about a request already counted
    /// (nginx's `error_page` fetching the answer to render).
    pub fn decide(&self, req: &gate::Request) -> Result<gate::Decision, gate::GateError> {
        let mode = self.settings.mode();
        let view = gate::SiteView {
            role: match mode.role {
                Role::Primary => gate::SiteRole::Primary,
                Role::Secondary => gate::SiteRole::Secondary,
            },
            maintenance: mode.maintenance.enabled,
            message: mode.maintenance.message,
            // The reason is free text for people; the gate needs only the epoch that
            // replaced this site. Where the new primary is, this site does not know.
            fenced: mode.fenced.map(|_| gate::Fenced {
                epoch: mode.epoch.max(self.settings.epoch()),
                new_primary: self.replaced_by.clone(),
            }),
        };
        gate::decide(req, &view, &self.gate)
    }

    /// The mode as `GetMode` answers it.
    pub fn mode_state(&self) -> pb::ModeState {
        convert::mode_state(&self.settings.mode(), self.follower_status().as_ref())
    }
}
