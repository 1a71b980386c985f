//! Running one site: open its storage, settings and objects in the placement failover last
//! decided, build its followers and workers, serve its listeners, supervise its tasks, drain
//! it on stop, and open it again after a promotion, demotion, repoint or fence. This is the
//! composition root the daemon and `dev` share; everything below it knows nothing of it.

mod site_sync;
mod supervise;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::Config;
use crate::failover;
use crate::objects::{Blobs, ObjectError, Objects};
use crate::proxy::{self, ProxyConfig};
use crate::replication::{sync, verify, Bandwidth, Follower, FollowerError};
use crate::server::client::{
    lazy_channel, GrpcFencer, GrpcLogSource, GrpcObjectSource, GrpcPeers, LogKind,
};
use crate::server::{self, status, Health, ServeError, Site};
use crate::settings::{Settings, SettingsError};
use crate::status::metrics::Counters;
use crate::status::Reports;
use crate::store::{Store, StoreError};
use crate::types::Role;
use supervise::{supervise, BoxFuture, Tasks};

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Follower(#[from] FollowerError),
    #[error("the primary's address: {0}")]
    Primary(String),
    #[error("cannot serve on the listener again: {0}")]
    Listen(std::io::Error),
    #[error("a critical task panicked: {0}")]
    Panicked(String),
}

impl SiteError {
    /// True when the failure is a full disk: the site stays up and waits for space.
    pub fn is_disk_full(&self) -> bool {
        use crate::types::{Classify, ErrorKind};
        match self {
            SiteError::Store(e) => e.is_disk_full(),
            SiteError::Settings(e) => e.kind() == ErrorKind::Exhausted,
            SiteError::Objects(e) => e.is_disk_full(),
            _ => false,
        }
    }
}

/// The background work of a secondary.
struct Secondary {
    settings: Follower<GrpcLogSource, Settings>,
    events: Follower<GrpcLogSource, Objects>,
    fetch: GrpcObjectSource,
}

/// A site opened but not yet serving.
pub struct Opened {
    pub site: Arc<Site>,
    secondary: Option<Secondary>,
    sync_concurrency: usize,
    reverify_interval: Duration,
    /// This site's own bandwidth flags (the primary's per-site setting overrides them).
    sync_bandwidth_limit: Option<u64>,
    verify_bandwidth_limit: Option<u64>,
    proxy: Option<ProxyConfig>,
}

/// Opens the site's settings and objects in `store`; builds its followers and sync
/// workers if it is a secondary. The role and primary are the configuration's unless
/// promote, demote, repoint or a fence placed the site otherwise.
pub async fn open(
    config: &Config,
    store: Store,
    shutdown: CancellationToken,
) -> Result<Opened, SiteError> {
    let placement = store.placement()?;
    let (role, primary, fenced) = match &placement {
        None => (config.role, config.primary.clone(), None),
        Some(p) => {
            if p.role != config.role || (p.role == Role::Secondary && p.primary != config.primary) {
                warn!(
                    configured_role = %config.role,
                    role = %p.role,
                    primary = p.primary.as_deref().unwrap_or("none"),
                    "promote, demote or repoint placed this site otherwise than its configuration; that placement stands"
                );
            }
            (p.role, p.primary.clone(), p.fenced.clone())
        }
    };
    let settings = Settings::open(
        store.clone(),
        &config.site_id,
        role,
        primary.clone(),
        fenced,
    )
    .await?;
    let settings = Arc::new(match config.promotion_key {
        Some(key) => settings.verifying(Arc::new(key)),
        None => settings,
    });
    if role == Role::Primary
        && placement.is_some()
        && settings.log().head().epoch < settings.primary_epoch()
    {
        settings.record_promotion("promote").await?;
        info!(
            epoch = settings.primary_epoch(),
            "recorded the promotion in the settings log"
        );
    }
    let blobs = Blobs::open(&config.objects, &config.data_dir, &config.site_id)
        .await
        .map_err(|e| ObjectError::Io {
            what: "cannot open where object bytes are kept".into(),
            source: e,
        })?;
    info!(at = %blobs.describe(), "object bytes");
    let objects = Arc::new(Objects::open_with(&store, blobs, Arc::clone(&settings)).await?);
    let (secondary, channel, status, events_status) = match (&role, &primary) {
        (Role::Secondary, Some(primary)) => {
            let channel = lazy_channel(primary, &config.client_tls).map_err(SiteError::Primary)?;
            let source = |log| GrpcLogSource {
                primary: primary.clone(),
                channel: channel.clone(),
                token: config.site_token.clone(),
                site_id: config.site_id.clone(),
                log,
            };
            let idle = config.heartbeat * 5;
            let (settings_follower, status) = Follower::new(
                Arc::clone(&settings),
                source(LogKind::Settings),
                primary.clone(),
                idle,
            );
            let (events_follower, events_status) = Follower::new(
                Arc::clone(&objects),
                source(LogKind::Events),
                primary.clone(),
                idle,
            );
            let fetch = GrpcObjectSource {
                primary: primary.clone(),
                channel: channel.clone(),
                token: config.site_token.clone(),
                site_id: config.site_id.clone(),
            };
            let secondary = Secondary {
                settings: settings_follower,
                events: events_follower,
                fetch,
            };
            (
                Some(secondary),
                Some(channel),
                Some(status),
                Some(events_status),
            )
        }
        _ => (None, None, None, None),
    };
    let site = Site {
        settings,
        objects,
        follower: status,
        events_follower: events_status,
        primary_channel: channel,
        admin_token: config.admin_token.clone(),
        site_token: config.site_token.clone(),
        heartbeat: config.heartbeat,
        gate: config.gate.clone(),
        shutdown,
        health: Health::default(),
        server_tls: config.tls.clone(),
        client_tls: config.client_tls.clone(),
        limits: config.limits,
        shutdown_timeout: config.shutdown_timeout,
        allow_plaintext: config.allow_plaintext,
        counters: Counters::default(),
        proxy_enabled: config.proxy.is_some(),
        reports: Reports::default(),
        advertise_url: config.advertise_url.clone(),
        fence_target: placement.as_ref().and_then(|p| p.fence_target.clone()),
        replaced_by: placement.and_then(|p| p.replaced_by),
        reopen: AtomicBool::new(false),
        store,
    };
    Ok(Opened {
        site: Arc::new(site),
        secondary,
        sync_concurrency: config.sync_concurrency,
        reverify_interval: config.reverify_interval,
        sync_bandwidth_limit: config.sync_bandwidth_limit,
        verify_bandwidth_limit: config.verify_bandwidth_limit,
        proxy: config.proxy.clone(),
    })
}

impl Opened {
    /// Serves until `stop` or the site's own shutdown token is cancelled. A critical task
    /// (a follower, the sync workers, the verifier) that dies of a storage failure takes the
    /// site down with an error rather than leaving it serving stale data.
    ///
    /// `stop` stops the site gracefully: health turns NOT_SERVING, new writes are refused,
    /// writes in flight finish (for at most the shutdown timeout), then the servers and tasks
    /// stop and storage is flushed.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: TcpListener,
        stop: CancellationToken,
    ) -> Result<(), SiteError> {
        self.serve_with_proxy(grpc, http, None, stop).await
    }

    /// [`Opened::serve`], with the gating proxy on `proxy` when the configuration has one.
    pub async fn serve_with_proxy(
        self,
        grpc: TcpListener,
        http: TcpListener,
        proxy: Option<TcpListener>,
        stop: CancellationToken,
    ) -> Result<(), SiteError> {
        let site = self.site;
        let shutdown = site.shutdown.clone();
        site.health.set_serving(false).await;
        let span = tracing::info_span!("site", id = %site.settings.site_id());
        let mut tasks = Tasks::default();
        let mut spawn = |name: &'static str, task: BoxFuture<Result<(), SiteError>>| {
            let child = tracing::info_span!(parent: &span, "task", name);
            tasks.spawn(name, task.instrument(child));
        };
        // One limit per kind of work, shared by all its workers; the primary's per-site
        // setting (followed by `site_sync`) changes them in place.
        let sync_bandwidth = Arc::new(Bandwidth::new(self.sync_bandwidth_limit));
        let verify_bandwidth = Arc::new(Bandwidth::new(self.verify_bandwidth_limit));
        let limits = site_sync::Limits {
            sync: Arc::clone(&sync_bandwidth),
            verify: Arc::clone(&verify_bandwidth),
            sync_flag: self.sync_bandwidth_limit,
            verify_flag: self.verify_bandwidth_limit,
        };
        let (followed, s) = (Arc::clone(&site), shutdown.clone());
        spawn(
            "site replication settings",
            Box::pin(site_sync::follow(followed, limits, s)),
        );
        // On the primary the verifier repairs a damaged copy from a secondary's verified one.
        let verifier = verify::run(
            Arc::clone(&site.objects),
            Arc::new(GrpcPeers {
                site: Arc::clone(&site),
            }),
            self.reverify_interval,
            verify_bandwidth,
            shutdown.clone(),
        );
        spawn("verifier", Box::pin(async { Ok(verifier.await?) }));
        let (watched, s) = (Arc::clone(&site), shutdown.clone());
        spawn("disk monitor", Box::pin(watch_disk(watched, s)));
        if site.settings.role() == Role::Primary {
            // Only the primary's clock decides a maintenance window (SPEC §6).
            let (settings, s) = (Arc::clone(&site.settings), shutdown.clone());
            spawn(
                "maintenance scheduler",
                Box::pin(async {
                    crate::settings::schedule::run(settings, s).await;
                    Ok(())
                }),
            );
        }
        if let (Some(target), Role::Primary) = (site.fence_target.clone(), site.settings.role()) {
            // Not critical: it ends once delivered, and failing to deliver it breaks nothing
            // here (the former primary also fences itself on meeting the epoch elsewhere).
            let (site, s) = (Arc::clone(&site), shutdown.clone());
            let child = tracing::info_span!(parent: &span, "task", name = "fence");
            tokio::spawn(
                async move {
                    let sender = GrpcFencer {
                        tls: site.client_tls.clone(),
                        token: site.site_token.clone(),
                    };
                    let delivered =
                        failover::deliver_fence(&sender, &site.settings, &site.store, &target, &s);
                    if let Err(error) = delivered.await {
                        warn!(%error, "cannot record that the former primary is fenced");
                    }
                }
                .instrument(child),
            );
        }
        if let Some(secondary) = self.secondary {
            let (settings, events) = (secondary.settings, secondary.events);
            let s = shutdown.clone();
            spawn(
                "settings follower",
                Box::pin(async { Ok(settings.run(s).await?) }),
            );
            let s = shutdown.clone();
            spawn(
                "events follower",
                Box::pin(async { Ok(events.run(s).await?) }),
            );
            let sync = sync::run(
                Arc::clone(&site.objects),
                Arc::new(secondary.fetch),
                self.sync_concurrency,
                sync_bandwidth,
                shutdown.clone(),
            );
            spawn("sync workers", Box::pin(async { Ok(sync.await?) }));
            let (reporter, s) = (Arc::clone(&site), shutdown.clone());
            spawn("status reporter", Box::pin(report_status(reporter, s)));
        }
        let servers = server::serve(Arc::clone(&site), grpc, http).instrument(span.clone());
        let gating = match (proxy, self.proxy) {
            (Some(listener), Some(config)) => Some(
                proxy::serve_on_own_thread(
                    listener,
                    Arc::clone(&site),
                    config,
                    shutdown.clone(),
                    site.shutdown_timeout,
                )
                .instrument(span.clone()),
            ),
            _ => None,
        };
        let servers = async {
            let (served, ()) = tokio::join!(servers, async {
                if let Some(gating) = gating {
                    gating.await;
                }
            });
            served
        };
        site.health.set_serving(true).await;
        // After SERVING: a stop that is already due must be able to turn it off again.
        tokio::spawn(drain_on(stop, Arc::clone(&site)).instrument(span.clone()));
        let result = supervise(servers, tasks, &shutdown, site.store.disk()).await;
        // Also when the site stops to open again (promote, repoint): a push still running
        // in the old one must not commit beside the new one.
        site.objects.close().await;
        // Let go of the log stores, so that a site opening again can take them: a request
        // stuck on a dead connection may keep the old handles a while, for reads only.
        site.objects.log().close().await;
        site.settings.close().await;
        match site.store.sync().await {
            // What did not reach the disk failed when it was written, and its callers heard.
            Err(e) if e.is_disk_full() => {
                warn!(error = %e, "the disk is full: the last flush failed")
            }
            other => other?,
        }
        info!(site = %site.settings.site_id(), "site stopped");
        result
    }
}

/// Runs a site until `stop`, opening it again on the same listeners whenever its
/// placement changes (promote, demote, repoint, fence). `proxy` is the gating proxy's
/// listener, when the configuration has one.
pub async fn run(
    config: &Config,
    first: Opened,
    grpc: std::net::TcpListener,
    http: std::net::TcpListener,
    proxy: Option<std::net::TcpListener>,
    stop: CancellationToken,
) -> Result<(), SiteError> {
    let mut opened = first;
    loop {
        let site = Arc::clone(&opened.site);
        let listen = |l: &std::net::TcpListener| {
            l.try_clone()
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                })
                .map_err(SiteError::Listen)
        };
        let gating = proxy.as_ref().map(listen).transpose()?;
        opened
            .serve_with_proxy(listen(&grpc)?, listen(&http)?, gating, stop.clone())
            .await?;
        if stop.is_cancelled() || !site.reopening() {
            return Ok(());
        }
        let mut store = site.store.clone();
        drop(site);
        if store.disk().poisoned() {
            // The database kept a write error from the full disk: open it afresh.
            drop(store);
            store = open_store_again(config, &stop).await?;
            info!("opening the site again now that the disk has space");
        } else {
            info!("opening the site again with its new placement");
        }
        opened = open(config, store, CancellationToken::new()).await?;
    }
}

/// Opens the database again after a full disk made it fail: the last handles of the old one
/// are being dropped (sled locks its files), so it retries until `stop`.
async fn open_store_again(config: &Config, stop: &CancellationToken) -> Result<Store, SiteError> {
    let mut attempt = 0u32;
    loop {
        match Store::open(&config.data_dir) {
            Ok(store) => return Ok(store),
            Err(e) if stop.is_cancelled() => return Err(e.into()),
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(30) {
                    warn!(error = %e, attempt, "cannot open the database again yet; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Watches the data directory's disk (see `store::disk`): checks free space every few
/// seconds, keeps the reserve, publishes the state (writes refused while full), and once
/// space is back after an `ENOSPC`, finds out whether the database still writes; if it
/// does not, the site opens again (on the same listeners) with a fresh database handle.
async fn watch_disk(site: Arc<Site>, shutdown: CancellationToken) -> Result<(), SiteError> {
    use crate::store::disk;
    let disk = Arc::clone(site.store.disk());
    let mut seen = disk::enospc_seen();
    // An episode starts with an ENOSPC or a full disk, and ends once the database writes.
    let mut episode = disk.state().full;
    let mut tick = tokio::time::interval(disk::CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now_seen = disk::enospc_seen();
        let enospc = now_seen != seen;
        seen = now_seen;
        let d = Arc::clone(&disk);
        let state = tokio::task::spawn_blocking(move || d.check(enospc))
            .await
            .map_err(|e| SiteError::Panicked(format!("disk monitor: {e}")))?;
        episode |= enospc || state.full;
        if !episode || state.free < disk::LOW_WATER {
            continue;
        }
        let store = site.store.clone();
        let probed = tokio::task::spawn_blocking(move || store.probe())
            .await
            .map_err(|e| SiteError::Panicked(format!("disk monitor: {e}")))?;
        match probed {
            Ok(()) if !disk.poisoned() => {
                episode = false;
                info!(
                    free = state.free,
                    "the disk has space again and the database writes"
                );
            }
            Ok(()) => {}
            Err(e) if e.is_disk_full() => disk.poison(),
            Err(e) => return Err(e.into()),
        }
        if disk.poisoned() {
            warn!(free = state.free, "the disk has space again: opening the site again to reset its database after the write error");
            site.reopen();
            return Ok(());
        }
    }
}

/// Once `stop` is cancelled: NOT_SERVING, refuse new writes, wait (bounded) for the writes
/// in flight, then shut the site down. Returns at once if the site shuts down first.
async fn drain_on(stop: CancellationToken, site: Arc<Site>) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = site.shutdown.cancelled() => return,
    }
    site.health.set_serving(false).await;
    site.objects.stop_taking_writes();
    let open = site.objects.inflight().list().len();
    if open > 0 {
        info!(
            writes = open,
            timeout_secs = site.shutdown_timeout.as_secs_f64(),
            "stopping: waiting for writes in flight"
        );
    }
    let drained =
        tokio::time::timeout(site.shutdown_timeout, site.objects.inflight().drained()).await;
    if drained.is_err() {
        let left: Vec<String> = site
            .objects
            .inflight()
            .list()
            .iter()
            .map(|w| format!("{} from {}", w.what, w.from))
            .collect();
        warn!(timeout_secs = site.shutdown_timeout.as_secs_f64(), left = ?left, "stopping without waiting longer for writes in flight; they fail and nothing of them is stored");
    }
    site.objects.close().await;
    site.shutdown.cancel();
}

/// Reports this secondary's status to the primary every heartbeat interval, in maintenance
/// mode too. A failed report is retried at the next tick; only the first of a run of
/// failures is logged as a warning.
async fn report_status(site: Arc<Site>, shutdown: CancellationToken) -> Result<(), SiteError> {
    let mut tick = tokio::time::interval(site.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let reported = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = status::report_to_primary(&site) => r,
        };
        match reported {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                site.counters.replication_error("report");
                warn!(%error, "cannot report status to the primary");
                failing = true;
            }
            Err(_) => site.counters.replication_error("report"),
        }
    }
}
