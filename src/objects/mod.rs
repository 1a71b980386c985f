//! Replicated objects: named blobs with a kind label, their bytes as files under the data
//! directory or in a bucket ([`Blobs`]), their history in the event log.
//!
//! Every committed create, update or delete is an entry of the **event log** — the same
//! [`Log`] implementation as the settings log, with [`EventsMachine`] deriving the catalog
//! and this site's registry from it. On the primary a push is streamed to a temporary file,
//! hashed as it is written, installed atomically and only then made current by appending its
//! event; the append is the commit point. Secondaries apply the primary's events (recording
//! them is cheap) and their sync workers fetch the bytes (`replication::sync`).
//!
//! Where a write goes is decided here ([`Objects::route`]): committed on a primary outside
//! maintenance, forwarded by a secondary, refused in maintenance wherever it enters. Writes
//! are tracked as live guards ([`InFlight`]) so a push that began before maintenance may
//! finish and "drained" is exact.

pub mod blobs;
pub mod bucket;
pub mod catalog;
pub mod files;
pub mod inflight;
mod locks;
pub mod name;
mod ops;
mod registry;
mod selection;
mod state;

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use locks::{CommitGuard, CommitLocks};
use tracing::{info, warn};

use crate::gate::GIT_PUSH_MESSAGE;
use crate::log::{Entry, Head, Log, LogError, Replica, ReplicaError};
use crate::settings::Settings;
use crate::store::Store;
use crate::types::{Classify, ErrorKind, Role};
pub use blobs::{blob_id, Backend, Blobs, Sink, Staged};
pub use bucket::S3Options;
pub use catalog::{Event, EventsMachine};
pub use files::{Digested, Files};
pub use inflight::{Abort, InFlight, Write, WriteGuard};
pub use name::{parse_kind, parse_sha256, ObjectName};
pub use ops::{Listed, Operation, OperationKind, Scope, StaleCopy, StateFilter};
use registry::Transfers;
pub use registry::{retry_delay, Counts, Due, Started, SyncJob, REPAIR_RETRY};
pub use selection::{SelectionCell, Walked};
use state::{decode, key, CATALOG, REGISTRY};
pub use state::{Local, ObjectMeta, Row, SyncState, Verification};

/// Name of the event log's sled trees.
pub const LOG_NAME: &str = "events";
/// Largest page `List` returns.
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    Invalid(String),
    #[error("object {0:?} does not exist")]
    NotFound(String),
    /// Refused because of the mode, the role or the epoch.
    #[error("{message}")]
    Refused {
        message: String,
        /// Where the primary is, when a secondary refuses.
        primary: Option<String>,
    },
    /// The bytes received differ from what the header announced.
    #[error("{0}")]
    Mismatch(String),
    /// The version asked for is no longer current.
    #[error("{0}")]
    Superseded(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("object storage is corrupt: {0}")]
    Corrupt(String),
    /// An admin aborted the write (`geo-agent maintenance abort`).
    #[error(
        "an admin at site {0} aborted this push (geo-agent maintenance abort); nothing was stored"
    )]
    Aborted(String),
    /// The client sent nothing for too long.
    #[error("the client sent nothing for {0:.1}s (stream_idle_timeout); the push was abandoned and nothing was stored")]
    Idle(f64),
    /// This site's copy failed verification and waits for its repair.
    #[error("the copy of {0} here failed verification and is being repaired from another site; try again later")]
    Damaged(String),
    /// The version was replaced while it was being opened, more than once in a row.
    #[error("{0} is being replaced; try again")]
    Replacing(String),
    /// The disk is full: the write is refused before a byte is stored.
    #[error(transparent)]
    DiskFull(#[from] crate::store::DiskFull),
    /// The site is stopping and takes no new writes.
    #[error("site {0} is shutting down: it takes no new writes, and a write it could not finish is not stored; try again when it is back")]
    Stopping(String),
}

impl Classify for ObjectError {
    fn kind(&self) -> ErrorKind {
        match self {
            ObjectError::Invalid(_) | ObjectError::Mismatch(_) => ErrorKind::Invalid,
            ObjectError::NotFound(_) => ErrorKind::NotFound,
            ObjectError::Refused {
                primary: Some(_), ..
            } => ErrorKind::NotPrimary,
            ObjectError::Refused { primary: None, .. } => ErrorKind::Refused,
            ObjectError::Superseded(_) => ErrorKind::Conflict,
            ObjectError::Stopping(_) | ObjectError::Replacing(_) | ObjectError::Damaged(_) => {
                ErrorKind::Unavailable
            }
            ObjectError::Aborted(_) => ErrorKind::Aborted,
            ObjectError::Idle(_) => ErrorKind::TimedOut,
            ObjectError::Log(e) => e.kind(),
            ObjectError::DiskFull(e) => e.kind(),
            ObjectError::Io { source, .. } if crate::store::disk::is_full(source) => {
                ErrorKind::Exhausted
            }
            ObjectError::Io { .. } if self.is_bucket_failure() => ErrorKind::Unavailable,
            ObjectError::Io { .. } | ObjectError::Corrupt(_) => ErrorKind::Internal,
        }
    }

    fn primary(&self) -> Option<&str> {
        match self {
            ObjectError::Refused { primary, .. } => primary.as_deref(),
            _ => None,
        }
    }
}

impl ObjectError {
    /// True when the bucket refused or did not answer (a state of the bucket, which the
    /// site rides out).
    pub fn is_bucket_failure(&self) -> bool {
        matches!(self, ObjectError::Io { source, .. } if bucket::unanswered(source))
    }

    /// True when the failure is a full disk, which the site waits out.
    pub fn is_disk_full(&self) -> bool {
        self.kind() == ErrorKind::Exhausted
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ObjectError {
        let what = what.into();
        move |source| ObjectError::Io { what, source }
    }
}

/// A write forwarded by a secondary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxied {
    pub site_id: String,
    /// The highest epoch the forwarding site has seen.
    pub epoch: u64,
}

/// Where a write that entered this site goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This is the primary: commit it here.
    Commit,
    /// This is a secondary: forward it to the primary.
    Forward { primary: String },
}

/// The objects of one site.
pub struct Objects {
    log: Arc<Log<EventsMachine>>,
    blobs: Blobs,
    inflight: InFlight,
    settings: Arc<Settings>,
    /// Orders install → append → remove the old file per name, so the file an event names
    /// is always there once the event is, and the last commit of a name is the one every
    /// site keeps. Commits of different names run side by side and share the log's syncs.
    commit: CommitLocks,
    /// Fetches in progress, shown as `started` ([`Objects::row`]) but never stored: a
    /// crash ends them all.
    transfers: Transfers,
    /// The resync and reverification an admin last asked for (progress in `counts`).
    operations: ops::Operations,
    /// Why open rebuilt the registry's counters, if it did.
    recounted: Option<String>,
    /// Why open built the registry's state index again, if it did.
    reindexed: Option<String>,
    /// Set once the site is stopping: new writes are refused.
    stopping: AtomicBool,
    /// Set (with every commit lock held) once the site stops: nothing more is committed, even by a write
    /// that was already in flight.
    closed: AtomicBool,
    /// Failed syncs since the site opened (for metrics).
    sync_failures: AtomicU64,
    /// Wakes the verifier when a read found a copy's file missing ([`Objects::suspect`]).
    suspects: tokio::sync::Notify,
    /// Wakes the sync workers when a failed verification queued a copy again.
    requeued: tokio::sync::Notify,
    /// The data directory's disk: writes are refused while it is full.
    disk: Arc<crate::store::Disk>,
    /// What this site holds a copy of (selective sync on a secondary).
    selection: Arc<SelectionCell>,
}

impl Objects {
    /// Opens the event log and the object directory under `data_dir` (see
    /// [`Objects::open_with`]).
    pub async fn open(
        store: &Store,
        data_dir: &Path,
        settings: Arc<Settings>,
    ) -> Result<Objects, ObjectError> {
        let files = Files::open(data_dir).map_err(ObjectError::io(format!(
            "cannot open the object directory under {}",
            data_dir.display()
        )))?;
        Objects::open_with(store, Blobs::Disk(files), settings).await
    }

    /// Opens the event log over `blobs`, and removes the blobs a crash orphaned (written
    /// but never committed, or replaced but not yet removed).
    pub async fn open_with(
        store: &Store,
        blobs: Blobs,
        settings: Arc<Settings>,
    ) -> Result<Objects, ObjectError> {
        let selection = Arc::new(SelectionCell::new(
            settings.own_site_sync().and_then(|s| s.selective),
        ));
        let machine = EventsMachine {
            authoritative: settings.role() == Role::Primary,
            selection: Arc::clone(&selection),
        };
        let log = Arc::new(Log::open(store, LOG_NAME, machine).await?);
        let mut objects = Objects {
            log,
            blobs,
            inflight: InFlight::default(),
            settings,
            commit: CommitLocks::default(),
            transfers: Transfers::default(),
            operations: ops::Operations::default(),
            recounted: None,
            reindexed: None,
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            sync_failures: AtomicU64::new(0),
            suspects: tokio::sync::Notify::new(),
            requeued: tokio::sync::Notify::new(),
            disk: Arc::clone(store.disk()),
            selection,
        };
        let mut keep = HashSet::new();
        // The rows are read here anyway: what they add up to checks the stored counters.
        let mut seen = state::Recount::default();
        for item in objects.log.state().scan_prefix([REGISTRY]) {
            let (k, v) = item.map_err(|e| ObjectError::Corrupt(e.to_string()))?;
            let name = state::key_name(&k).map_err(ObjectError::Corrupt)?;
            let row: Row = decode(&v, "a registry row").map_err(ObjectError::Corrupt)?;
            seen.row(name, &row);
            if let Some(local) = row.local {
                keep.insert(blob_id(name, &local.sha256));
            }
        }
        objects.recounted =
            state::reconcile(objects.log.state(), seen).map_err(ObjectError::Corrupt)?;
        match objects.recounted.as_deref() {
            None => {}
            Some(state::MISSING | state::OLDER) => {
                info!("counted the registry once: a database from before its counters were kept")
            }
            Some(why) => warn!(reason = why, "rebuilt the registry counters with a recount"),
        }
        let rebuilt = objects.recounted.is_some();
        objects.reindexed =
            state::reconcile_index(objects.log.state(), rebuilt).map_err(ObjectError::Corrupt)?;
        if let Some(why) = &objects.reindexed {
            info!(
                reason = why,
                "built the registry's state index from the rows"
            );
        }
        // A prefix this start found without its marker (new, emptied, or a typo) holds
        // none of the copies the registry names: they are all verified again at once,
        // so status and readiness do not count what is not there.
        let unproven = objects.blobs.bucket().is_some_and(|b| b.fresh()) && !keep.is_empty();
        let removed = objects
            .blobs
            .collect_garbage(keep)
            .await
            .map_err(ObjectError::io(format!(
                "cannot remove orphaned objects from {}",
                objects.blobs.describe()
            )))?;
        if removed > 0 {
            info!(removed, "removed object files no commit refers to");
        }
        if unproven {
            let op = objects.reverify(&Scope::All, "object storage")?;
            warn!(
                at = %objects.blobs.describe(),
                copies = op.marked,
                "a new prefix, while the registry says this site holds copies: verifying them all"
            );
        }
        Ok(objects)
    }

    pub fn log(&self) -> &Arc<Log<EventsMachine>> {
        &self.log
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    pub fn inflight(&self) -> &InFlight {
        &self.inflight
    }

    pub fn disk(&self) -> &Arc<crate::store::Disk> {
        &self.disk
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Refuses every write that has not yet passed [`Objects::route`]; the writes already in
    /// flight go on (see [`InFlight::drained`]).
    pub fn stop_taking_writes(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Commits nothing more: waits for a commit under way, then refuses every later one
    /// (a write still in flight when its site stops fails, and nothing of it is stored).
    pub async fn close(&self) {
        let _commits = self.commit.quiesce().await;
        self.stopping.store(true, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// The commit lock of `name`, unless the site has closed.
    async fn lock_commit(&self, name: &str) -> Result<CommitGuard<'_>, ObjectError> {
        let guard = self.commit.lock(name).await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(ObjectError::Stopping(self.settings.site_id().to_string()));
        }
        Ok(guard)
    }

    /// Decides where a write entering this site goes (SPEC §3 "Git", DESIGN "Push").
    /// Call it *after* [`InFlight::begin`]: a write that passed this check is then already
    /// listed, so a drain that starts right after cannot miss it.
    pub fn route(&self, proxied: Option<&Proxied>) -> Result<Route, ObjectError> {
        let mode = self.settings.mode();
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ObjectError::Stopping(mode.site_id.to_string()));
        }
        let primary = self.settings.primary().map(str::to_string);
        let refuse = |message: String| ObjectError::Refused {
            message,
            primary: primary.clone(),
        };
        if let Some(reason) = mode.fenced {
            return Err(refuse(reason));
        }
        match mode.role {
            Role::Secondary => {
                if let Some(p) = proxied {
                    return Err(refuse(format!(
                        "site {} is a secondary and does not take writes forwarded by {}; forward them to the primary",
                        mode.site_id, p.site_id
                    )));
                }
                if mode.maintenance.enabled {
                    return Err(refuse(GIT_PUSH_MESSAGE.to_string()));
                }
                match &primary {
                    Some(url) => Ok(Route::Forward {
                        primary: url.clone(),
                    }),
                    None => Err(refuse(format!(
                        "site {} is a secondary and knows no primary to forward writes to",
                        mode.site_id
                    ))),
                }
            }
            Role::Primary => {
                if let Some(p) = proxied {
                    if p.epoch > mode.epoch {
                        let refusal = self.settings.superseded(mode.epoch, &p.site_id, p.epoch);
                        return Err(refuse(refusal.to_string()));
                    }
                    // Epoch 0: the forwarding site has not heard from any primary yet, so it
                    // cannot be following an old one.
                    if p.epoch != 0 && p.epoch < mode.epoch {
                        return Err(refuse(format!(
                            "{} forwarded a write at epoch {}, older than epoch {} here: it follows an old primary",
                            p.site_id, p.epoch, mode.epoch
                        )));
                    }
                }
                if mode.maintenance.enabled {
                    return Err(refuse(GIT_PUSH_MESSAGE.to_string()));
                }
                Ok(Route::Commit)
            }
        }
    }

    /// Makes received, durable staged bytes the current version of `name` (primary).
    pub async fn commit_put(
        &self,
        name: &ObjectName,
        kind: &str,
        staged: Staged,
        digest: Digested,
        author: &str,
    ) -> Result<ObjectMeta, ObjectError> {
        let sha = digest.hex();
        // The event's rules, before the file is installed: what the log would refuse
        // leaves nothing behind.
        let event = Event::Put {
            name: name.to_string(),
            kind: kind.to_string(),
            size: digest.size,
            sha256: sha.clone(),
        };
        if let Err(reason) = event
            .check()
            .and_then(|()| crate::log::validate_author(author))
        {
            return Err(ObjectError::Invalid(reason));
        }
        let _commit = self.lock_commit(name.as_str()).await?;
        let previous = self.meta(name.as_str())?;
        self.blobs
            .install(staged, name.as_str(), &sha)
            .await
            .map_err(ObjectError::io(format!("cannot install {name}")))?;
        let entry = match self
            .log
            .append(self.settings.epoch(), author, event.encode())
            .await
        {
            Ok(entry) => entry,
            Err(e) => {
                // Refused: nothing of it is in the log. A failure of this site's storage may
                // have left the event durable: the file stays (a start removes it if no
                // event names it).
                if !e.is_local_failure() && previous.as_ref().is_none_or(|p| p.sha256 != sha) {
                    self.remove_file(name.as_str(), &sha).await;
                }
                return Err(e.into());
            }
        };
        if let Some(old) = previous.filter(|p| p.sha256 != sha) {
            self.remove_file(name.as_str(), &old.sha256).await;
        }
        Ok(ObjectMeta {
            name: name.to_string(),
            kind: kind.to_string(),
            size: digest.size,
            sha256: sha,
            version: entry.index,
            updated_at_ms: entry.timestamp_ms,
            updated_by: entry.author,
        })
    }

    /// Deletes `name` (primary); returns the index of the delete event.
    pub async fn commit_delete(&self, name: &ObjectName, author: &str) -> Result<u64, ObjectError> {
        crate::log::validate_author(author).map_err(ObjectError::Invalid)?;
        let _commit = self.lock_commit(name.as_str()).await?;
        let Some(previous) = self.meta(name.as_str())? else {
            return Err(ObjectError::NotFound(name.to_string()));
        };
        let event = Event::Delete {
            name: name.to_string(),
        };
        let entry = self
            .log
            .append(self.settings.epoch(), author, event.encode())
            .await?;
        self.remove_file(name.as_str(), &previous.sha256).await;
        Ok(entry.index)
    }

    /// Removes a blob no row refers to any more. A failure only leaves an orphan, which the
    /// next start collects, so it is logged rather than returned.
    async fn remove_file(&self, name: &str, sha: &str) {
        if let Err(error) = self.blobs.remove(name, sha).await {
            warn!(object = name, %error, "cannot remove a replaced object's bytes");
        }
    }

    /// The object as the event log applied here describes it.
    pub fn meta(&self, name: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        self.read(&key(CATALOG, name), "a catalog record")
    }

    /// This site's registry row for `name`, `started` while a fetch of it is in progress.
    pub fn row(&self, name: &str) -> Result<Option<Row>, ObjectError> {
        let row: Option<Row> = self.read(&key(REGISTRY, name), "a registry row")?;
        Ok(row.map(|mut r| {
            r.sync = self.transfers.shown(name, r.sync);
            r
        }))
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
        what: &str,
    ) -> Result<Option<T>, ObjectError> {
        match self
            .log
            .state()
            .get(k)
            .map_err(|e| ObjectError::Corrupt(e.to_string()))?
        {
            None => Ok(None),
            Some(raw) => decode(&raw, what).map(Some).map_err(ObjectError::Corrupt),
        }
    }

    /// Objects whose name starts with `prefix`, after `after`, in name order; and the name
    /// to continue after when there are more.
    pub fn list(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), ObjectError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let start = if after.is_empty() {
            key(CATALOG, prefix)
        } else {
            let mut k = key(CATALOG, after);
            k.push(0);
            k
        };
        let wanted = key(CATALOG, prefix);
        let mut out = Vec::new();
        for item in self.log.state().range(start..) {
            let (k, v) = item.map_err(|e| ObjectError::Corrupt(e.to_string()))?;
            if !k.starts_with(&wanted) {
                break;
            }
            if out.len() == limit {
                let last = out.last().map(|m: &ObjectMeta| m.name.clone());
                return Ok((out, last));
            }
            out.push(decode(&v, "a catalog record").map_err(ObjectError::Corrupt)?);
        }
        Ok((out, None))
    }

    /// The current version of `name`, when this site holds exactly that version (always on
    /// the primary; once synced on a secondary); its bytes are [`Blobs::reader`]'s.
    pub fn local_copy(&self, name: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        let Some(meta) = self.meta(name)? else {
            return Ok(None);
        };
        let row = self.row(name)?;
        // A copy found damaged is not handed out while it waits for its repair: a client
        // would get bytes that do not match the recorded sha256.
        if let Some(r) = &row {
            if r.verification == Verification::Failed && r.local.is_some() {
                return Err(ObjectError::Damaged(name.to_string()));
            }
        }
        let held = row.and_then(|r| match r.local {
            Some(l) if l.sha256 == meta.sha256 && r.sync == SyncState::Synced => Some(l),
            _ => None,
        });
        Ok(held.map(|_| meta))
    }
}

impl Replica for Objects {
    fn log_name(&self) -> &str {
        LOG_NAME
    }

    fn head(&self) -> Head {
        self.log.head()
    }

    fn epoch(&self) -> u64 {
        self.settings.epoch()
    }

    fn proof(&self) -> Option<crate::types::Promotion> {
        self.settings.proof()
    }

    async fn observe_epoch(
        &self,
        epoch: u64,
        proof: Option<crate::types::Promotion>,
    ) -> Result<(), ReplicaError> {
        self.settings
            .observe_epoch(epoch, proof.as_ref(), "the primary")
            .await
            .map_err(crate::settings::replica_error)
    }

    async fn apply(&self, entries: Vec<Entry>) -> Result<(), ReplicaError> {
        self.settings.refuse_stale(LOG_NAME, &entries)?;
        self.settings
            .refuse_unproven(LOG_NAME, &entries)
            .map_err(|e| ReplicaError::Unproven(e.to_string()))?;
        // One selection judges the whole batch (see `selection.rs`).
        let gate = self.selection.gate.read().await;
        let applied = self.log.apply_batch(entries).await;
        drop(gate);
        // Entries before a refused one were applied: their epoch counts either way.
        self.settings
            .observe_epoch(self.log.head().epoch, None, "the primary")
            .await
            .map_err(crate::settings::replica_error)?;
        match applied {
            Ok(_) => Ok(()),
            Err(e) if e.is_local_failure() => Err(ReplicaError::storage(e)),
            Err(e) => Err(ReplicaError::Refused(e)),
        }
    }
}

#[cfg(test)]
mod tests;

/// Runs blocking file-system work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("a blocking task failed: {e}")))?
}
