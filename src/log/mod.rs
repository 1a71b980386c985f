//! The one replicated-log implementation, used by both the settings log and the event log.
//!
//! A log's entries live in a [`segments::SegmentLog`] (append-only files, `fdatasync`ed
//! before anything is acknowledged); the materialised state a [`Machine`] derives from them
//! lives in two sled trees, `<name>/state` and `<name>/meta` (which entry the state has
//! applied, written in the same transaction as the state).
//!
//! A primary [`Log::append`]s; a secondary [`Log::apply_batch`]es what the primary streamed,
//! after checking that it is the next index, does not lower the epoch and extends its own
//! hash chain. Either way an entry goes through three steps:
//!
//! 1. **queued**, under the writer lock, which only orders entries (index, hash chain): it
//!    is not held while the disk syncs, so appends that arrive during a sync share the next
//!    one (group commit);
//! 2. **durable**: the log store has synced it;
//! 3. **applied and published**: the state takes every durable entry not yet applied, in
//!    one sled transaction, and only then do readers, subscribers and the caller hear of it.
//!
//! So the state is never ahead of the durable log: after a crash or a loss of power it is
//! the same or behind, and opening replays what it misses. A state ahead of the log or
//! unlike it is refused loudly, never wiped: it means the log lost acknowledged entries,
//! and a secondary's state also holds what only it knows (the copies it has). sled's own flush is therefore not
//! needed for the log's promises, and is not waited for. Subscribers see only durable
//! entries, so nothing leaves a site that a crash could take back.
//!
//! [`Machine::apply`] must not refuse an entry that passed [`Machine::check`]: when it fails
//! anyway (a storage error), the entry is durable but not applied, and the log stops taking
//! entries until it is opened again, which replays it.

mod entry;
mod open;
mod replica;
pub mod segments;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::{watch, Mutex};
use tracing::warn;

use crate::store::Store;
use open::{migrate, open_segments, recover};
use segments::{LogStoreError, SegmentLog};

pub use entry::{Entry, Hash, GENESIS, HASH_LEN};
pub use replica::{Replica, ReplicaError};

const HEAD_KEY: &[u8] = b"head";

/// Largest encoded entry a log takes, from its own primary or from a stream. Far below the
/// smallest allowed gRPC message limit (1 MiB), so every entry fits in one stream message
/// with room for the envelope: an entry that could not be streamed would stop every
/// secondary for good.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Longest author of an entry, in bytes (an actor, perhaps with " via <site id>").
pub const MAX_AUTHOR_BYTES: usize = 256;

/// Whether `author` may sign an entry: 1-256 bytes, no control characters (authors are
/// shown in terminals, logs and the status page).
pub fn validate_author(author: &str) -> Result<(), String> {
    if author.is_empty() {
        return Err("the author must not be empty".into());
    }
    if author.len() > MAX_AUTHOR_BYTES {
        return Err(format!(
            "the author is {} bytes; the limit is {MAX_AUTHOR_BYTES}",
            author.len()
        ));
    }
    if let Some(c) = author.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the author contains the control character U+{:04X}",
            c as u32
        ));
    }
    Ok(())
}

/// What a log is *for*: how its entries change the materialised state, and what
/// subscribers are shown of that state.
pub trait Machine: Send + Sync + 'static {
    /// What subscribers see after each entry (e.g. the settings).
    type View: Send + Sync + 'static;

    /// Applies `entry` to `state`, inside the log's transaction. sled may run it more than
    /// once, so it must depend on nothing but `state` and `entry`. The entry is already
    /// durable: this must not refuse what [`Machine::check`] let through.
    fn apply(&self, state: &TransactionalTree, entry: &Entry) -> Result<(), String>;

    /// Reads the view from the committed state.
    fn view(&self, state: &sled::Tree) -> Result<Self::View, String>;

    /// The rules an entry must obey to enter this log, whatever the state: checked by the
    /// primary before it appends and by every secondary before it applies, so a secondary
    /// never takes what its primary would have refused.
    fn check(&self, _entry: &Entry) -> Result<(), String> {
        Ok(())
    }
}

/// The last entry of a log: index 0 and the genesis hash when empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub index: u64,
    pub hash: Hash,
    pub epoch: u64,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            index: 0,
            hash: GENESIS,
            epoch: 0,
        }
    }
}

impl Head {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 + HASH_LEN);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out
    }

    fn decode(raw: &[u8]) -> Option<Head> {
        if raw.len() != 16 + HASH_LEN {
            return None;
        }
        Some(Head {
            index: u64::from_be_bytes(raw[0..8].try_into().ok()?),
            epoch: u64::from_be_bytes(raw[8..16].try_into().ok()?),
            hash: raw[16..].try_into().ok()?,
        })
    }
}

/// What a log publishes after each durable entry.
pub struct Published<V> {
    pub head: Head,
    pub view: Arc<V>,
}

impl<V> Clone for Published<V> {
    fn clone(&self) -> Self {
        Published {
            head: self.head,
            view: Arc::clone(&self.view),
        }
    }
}

/// What became of an offered entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Appended and applied.
    New,
    /// Already here with the same hash (a resent entry); nothing changed.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{log} log: storage error: {source}")]
    Storage { log: String, source: sled::Error },
    #[error("{log} log: entry {index} is corrupt on disk: {detail}")]
    Corrupt {
        log: String,
        index: u64,
        detail: String,
    },
    #[error("{log} log: refused entry {got}: not contiguous, the next index here is {expected}")]
    Gap {
        log: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "{log} log: refused entry {index}: its hash does not extend this site's hash chain (diverged)"
    )]
    HashMismatch { log: String, index: u64 },
    #[error("{log} log: refused entry {index}: it differs from the entry this site already has at that index (diverged)")]
    Conflict { log: String, index: u64 },
    #[error("{log} log: refused entry {index}: epoch {epoch} is lower than epoch {current} already in the log")]
    StaleEpoch {
        log: String,
        index: u64,
        epoch: u64,
        current: u64,
    },
    #[error("{log} log: refused entry {index}: it is {size} bytes encoded; the limit is {limit}")]
    TooLarge {
        log: String,
        index: u64,
        size: usize,
        limit: usize,
    },
    #[error("{log} log: refused entry {index}: {reason}")]
    Invalid {
        log: String,
        index: u64,
        reason: String,
    },
    #[error("{log} log: cannot apply entry {index}: {reason}")]
    Apply {
        log: String,
        index: u64,
        reason: String,
    },
    #[error("{log} log: {source}")]
    Store { log: String, source: LogStoreError },
    #[error("{log} log stopped: {reason}; it takes no entries until the site opens it again")]
    Stopped {
        log: String,
        reason: String,
        disk_full: bool,
    },
}

impl crate::types::Classify for LogError {
    fn kind(&self) -> crate::types::ErrorKind {
        use crate::types::ErrorKind;
        match self {
            // Offered entries this log will not take: facts about the request or the stream.
            LogError::Gap { .. }
            | LogError::HashMismatch { .. }
            | LogError::Conflict { .. }
            | LogError::StaleEpoch { .. } => ErrorKind::Refused,
            // Entries no log may hold, whoever offers them.
            LogError::TooLarge { .. } | LogError::Invalid { .. } => ErrorKind::Invalid,
            _ if self.is_disk_full() => ErrorKind::Exhausted,
            LogError::Store { source, .. } => source.kind(),
            LogError::Storage { .. }
            | LogError::Corrupt { .. }
            | LogError::Apply { .. }
            | LogError::Stopped { .. } => ErrorKind::Internal,
        }
    }
}

impl LogError {
    /// True when this site failed (its storage, its state, a stopped log) rather than the
    /// entry being refused: the entry may be durable, or not; nothing about it is known.
    pub fn is_local_failure(&self) -> bool {
        matches!(
            self,
            LogError::Storage { .. }
                | LogError::Store { .. }
                | LogError::Stopped { .. }
                | LogError::Corrupt { .. }
                | LogError::Apply { .. }
        )
    }

    /// True when the disk is full (a state the site waits out, not a fault).
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Storage { source, .. } => crate::store::disk::sled_is_full(source),
            LogError::Store { source, .. } => source.is_disk_full(),
            LogError::Stopped { disk_full, .. } => *disk_full,
            _ => false,
        }
    }

    /// True when the offered history contradicts this site's: following must stop.
    pub fn is_divergence(&self) -> bool {
        matches!(
            self,
            LogError::HashMismatch { .. } | LogError::Conflict { .. }
        )
    }

    /// True when the entry itself breaks the rules every log obeys (too large, malformed):
    /// offering it again cannot help, so following must stop.
    pub fn is_inadmissible(&self) -> bool {
        matches!(self, LogError::TooLarge { .. } | LogError::Invalid { .. })
    }
}

/// Entries per sled transaction when opening replays the log into the state.
const REPLAY_BATCH: usize = 4096;
/// How long opening waits for an earlier instance of the same log (a site opening again) to
/// let go of its files.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One replicated log: its entries in the log store under [`Store::log_dir`], its state in
/// the sled trees `<name>/state` and `<name>/meta`.
pub struct Log<M: Machine> {
    name: String,
    store: Store,
    segments: SegmentLog,
    /// What the state has applied (see [`State`]).
    state: State,
    machine: M,
    /// The last queued entry: held while an entry is checked, chained and queued, not
    /// while it syncs (see the module doc).
    writer: Mutex<Head>,
    /// Entries queued to the log store and not yet applied to the state, in index order.
    staged: std::sync::Mutex<VecDeque<Entry>>,
    /// Held while durable entries are applied to the state and published, so each is
    /// applied once, in order.
    applier: Mutex<()>,
    /// Why the log stopped taking entries, once it has.
    stopped: std::sync::Mutex<Option<Stop>>,
    published: watch::Sender<Published<M::View>>,
}

/// Why a log takes no more entries.
#[derive(Clone)]
struct Stop {
    reason: String,
    disk_full: bool,
    /// The state could not apply a durable entry: nothing after it can be applied either.
    /// Otherwise (the log store failed, or the log was closed) entries that did become
    /// durable are still applied.
    apply_failed: bool,
}

/// The materialised state and the head of what it has applied, written together.
struct State {
    name: String,
    meta: sled::Tree,
    tree: sled::Tree,
}

impl State {
    fn head(&self) -> Result<Head, LogError> {
        match self.meta.get(HEAD_KEY).map_err(|e| self.storage(e))? {
            None => Ok(Head::default()),
            Some(raw) => Head::decode(&raw).ok_or_else(|| LogError::Corrupt {
                log: self.name.clone(),
                index: 0,
                detail: format!("the state's head record has {} bytes", raw.len()),
            }),
        }
    }

    /// Applies durable, consecutive `entries` in one transaction with the new head.
    fn apply<M: Machine>(&self, machine: &M, entries: &[Entry]) -> Result<Head, LogError> {
        let Some(last) = entries.last() else {
            return self.head();
        };
        let head = Head {
            index: last.index,
            hash: last.hash,
            epoch: last.epoch,
        };
        let head_raw = head.encode();
        (&self.tree, &self.meta)
            .transaction(|(state, meta)| {
                for entry in entries {
                    machine.apply(state, entry).map_err(|reason| {
                        ConflictableTransactionError::Abort((entry.index, reason))
                    })?;
                }
                meta.insert(HEAD_KEY, head_raw.as_slice())?;
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort((index, reason)) => LogError::Apply {
                    log: self.name.clone(),
                    index,
                    reason,
                },
                TransactionError::Storage(source) => self.storage(source),
            })?;
        Ok(head)
    }

    fn view<M: Machine>(&self, machine: &M, index: u64) -> Result<M::View, LogError> {
        machine
            .view(&self.tree)
            .map_err(|detail| LogError::Corrupt {
                log: self.name.clone(),
                index,
                detail,
            })
    }

    fn storage(&self, source: sled::Error) -> LogError {
        LogError::Storage {
            log: self.name.clone(),
            source,
        }
    }
}

impl<M: Machine> Log<M> {
    /// Opens the log `name` of `store`: its log store (cutting a torn tail), the entries an
    /// older layout kept in sled (moved over once), and its state, which is brought up to
    /// the log by replaying what it misses (see `open::recover`).
    pub async fn open(store: &Store, name: &str, machine: M) -> Result<Log<M>, LogError> {
        let storage = |source| LogError::Storage {
            log: name.to_string(),
            source,
        };
        let segments = open_segments(store, name).await?;
        let db = store.db();
        migrate(db, name, &segments).await?;
        let state = State {
            name: name.to_string(),
            meta: db.open_tree(format!("{name}/meta")).map_err(storage)?,
            tree: db.open_tree(format!("{name}/state")).map_err(storage)?,
        };
        let (head, view) = recover(&segments, &state, &machine)?;
        let (published, _) = watch::channel(Published {
            head,
            view: Arc::new(view),
        });
        Ok(Log {
            name: name.to_string(),
            store: store.clone(),
            writer: Mutex::new(head),
            segments,
            state,
            machine,
            staged: std::sync::Mutex::new(VecDeque::new()),
            applier: Mutex::new(()),
            stopped: std::sync::Mutex::new(None),
            published,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last durable, applied entry's head.
    pub fn head(&self) -> Head {
        self.published.borrow().head
    }

    /// The view after the last durable entry.
    pub fn view(&self) -> Arc<M::View> {
        Arc::clone(&self.published.borrow().view)
    }

    /// Head and view, from one moment.
    pub fn published(&self) -> Published<M::View> {
        self.published.borrow().clone()
    }

    /// Wakes on every durable entry.
    pub fn subscribe(&self) -> watch::Receiver<Published<M::View>> {
        self.published.subscribe()
    }

    /// The materialised state, for reads the view does not cover. It holds durable
    /// entries only.
    pub fn state(&self) -> &sled::Tree {
        &self.state.tree
    }

    /// How many `fdatasync`s the log store has made (group commit makes it fewer than the
    /// entries).
    pub fn syncs(&self) -> u64 {
        self.segments.syncs()
    }

    /// Appends a new entry (primary). Returns once it is durable, applied and published.
    /// Cancel-safe: once queued, the entry is made durable, applied and published even if
    /// the caller goes away.
    pub async fn append(
        self: &Arc<Self>,
        epoch: u64,
        author: &str,
        payload: Vec<u8>,
    ) -> Result<Entry, LogError> {
        let (entry, pending) = {
            let mut tip = self.writer.lock().await;
            self.check_running()?;
            if epoch < tip.epoch {
                return Err(LogError::StaleEpoch {
                    log: self.name.clone(),
                    index: tip.index + 1,
                    epoch,
                    current: tip.epoch,
                });
            }
            let entry = Entry::new(
                &tip.hash,
                tip.index + 1,
                epoch,
                now_ms(),
                author.to_string(),
                payload,
            );
            self.admit(&entry)?;
            let pending = self.queue(std::slice::from_ref(&entry))?;
            *tip = head_of(&entry);
            (entry, pending)
        };
        self.settled(pending, entry.index).await?;
        Ok(entry)
    }

    /// Applies an entry streamed from the primary (secondary), after checking that it is
    /// the next index, keeps the epoch and extends this site's hash chain.
    pub async fn apply(self: &Arc<Self>, entry: Entry) -> Result<Applied, LogError> {
        self.apply_batch(vec![entry]).await.map(|new| {
            if new == 0 {
                Applied::Duplicate
            } else {
                Applied::New
            }
        })
    }

    /// Applies consecutive entries as [`Log::apply`] does each, with one sync and one
    /// transaction (how a follower catches up quickly). Entries this site already has are
    /// skipped if identical. At the first entry that is refused, the entries before it are
    /// still applied — exactly as one at a time — and the refusal is returned. Returns how
    /// many entries were new. Cancel-safe, as [`Log::append`].
    pub async fn apply_batch(self: &Arc<Self>, batch: Vec<Entry>) -> Result<usize, LogError> {
        let mut refused = None;
        // The highest entry found already queued: it must be applied before this returns.
        let mut known = 0;
        let (count, pending, last) = {
            let mut tip = self.writer.lock().await;
            self.check_running()?;
            let mut head = *tip;
            let mut new = Vec::with_capacity(batch.len());
            for entry in batch {
                match self.check_next(&head, &entry) {
                    Ok(()) => {}
                    Err(Checked::Duplicate) => {
                        known = known.max(entry.index);
                        continue;
                    }
                    Err(Checked::Refused(e)) => {
                        refused = Some(e);
                        break;
                    }
                }
                head = head_of(&entry);
                new.push(entry);
            }
            if new.is_empty() {
                (0, None, 0)
            } else {
                let pending = self.queue(&new)?;
                *tip = head;
                (new.len(), Some(pending), head.index)
            }
        };
        if let Some(pending) = pending {
            self.settled(pending, last).await?;
        } else if known > self.head().index {
            self.published_up_to(known).await?;
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// Queues checked, consecutive entries to the log store. The caller holds the writer
    /// lock, so the staged entries stay in index order.
    fn queue(&self, entries: &[Entry]) -> Result<segments::Pending, LogError> {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        let pending = self.segments.submit(entries).map_err(|e| {
            self.stop(LogError::Store {
                log: self.name.clone(),
                source: e,
            })
        })?;
        staged.extend(entries.iter().cloned());
        Ok(pending)
    }

    /// [`Log::settle`] on a task of its own, so that it finishes if the caller goes away.
    async fn settled(
        self: &Arc<Self>,
        pending: segments::Pending,
        index: u64,
    ) -> Result<(), LogError> {
        let log = Arc::clone(self);
        tokio::spawn(async move { log.settle(pending, index).await })
            .await
            .unwrap_or_else(|e| {
                Err(self.stop(LogError::Apply {
                    log: self.name.clone(),
                    index,
                    reason: format!("the task applying it failed: {e}"),
                }))
            })
    }

    /// Waits until the entries up to `index` are durable, then applies every durable entry
    /// the state lacks and publishes them.
    async fn settle(&self, pending: segments::Pending, index: u64) -> Result<(), LogError> {
        let durable = pending.durable().await;
        let _applier = self.applier.lock().await;
        if self.head().index >= index {
            return Ok(());
        }
        if let Err(source) = durable {
            return Err(self.stop(LogError::Store {
                log: self.name.clone(),
                source,
            }));
        }
        // Durable: apply it even if the store failed since, on a later batch.
        if let Some(stop) = self.stop_reason().filter(|s| s.apply_failed) {
            return Err(self.stopped_error(stop));
        }
        self.apply_durable()
    }

    /// Applies every durable entry the state lacks and publishes them. The caller holds
    /// the applier lock.
    fn apply_durable(&self) -> Result<(), LogError> {
        let durable = self.segments.head().index;
        let batch: Vec<Entry> = {
            let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
            let n = staged.iter().take_while(|e| e.index <= durable).count();
            staged.drain(..n).collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let applied = self
            .state
            .apply(&self.machine, &batch)
            .and_then(|head| Ok((head, self.state.view(&self.machine, head.index)?)));
        match applied {
            Ok((head, view)) => {
                self.published.send_replace(Published {
                    head,
                    view: Arc::new(view),
                });
                Ok(())
            }
            Err(e) => Err(self.stop(e)),
        }
    }

    /// Waits until the published head reaches `index` (entries another call queued), or
    /// the log stops.
    async fn published_up_to(&self, index: u64) -> Result<(), LogError> {
        let mut rx = self.subscribe();
        loop {
            if rx.borrow_and_update().head.index >= index {
                return Ok(());
            }
            if let Some(stop) = self.stop_reason() {
                return Err(self.stopped_error(stop));
            }
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Stops the log after `e` left the state behind the log store (or the store unusable):
    /// from now on it refuses entries, until the site opens it again. A full disk also
    /// marks the site's database for opening again once there is space.
    fn stop(&self, e: LogError) -> LogError {
        let disk_full = e.is_disk_full();
        if disk_full {
            self.store.disk().poison();
        }
        let stop = Stop {
            reason: e.to_string(),
            disk_full,
            apply_failed: matches!(
                e,
                LogError::Apply { .. } | LogError::Storage { .. } | LogError::Corrupt { .. }
            ),
        };
        self.halt(stop, Some(&e));
        e
    }

    /// Records why the log stops (the first reason stays) and wakes whoever waits for it.
    fn halt(&self, stop: Stop, error: Option<&LogError>) {
        {
            let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
            if stopped.is_none() {
                if let Some(e) = error {
                    warn!(log = %self.name, error = %e, "the log stops taking entries until it is opened again");
                }
                *stopped = Some(stop);
            }
        }
        self.published.send_modify(|_| {});
    }

    fn stop_reason(&self) -> Option<Stop> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stopped_error(&self, stop: Stop) -> LogError {
        LogError::Stopped {
            log: self.name.clone(),
            reason: stop.reason,
            disk_full: stop.disk_full,
        }
    }

    fn check_running(&self) -> Result<(), LogError> {
        match self.stop_reason() {
            None => Ok(()),
            Some(stop) => Err(self.stopped_error(stop)),
        }
    }

    /// Whether `entry` may follow `head` here.
    fn check_next(&self, head: &Head, entry: &Entry) -> Result<(), Checked> {
        let refuse = |e| Err(Checked::Refused(e));
        if entry.index >= 1 && entry.index <= head.index {
            return match self.known(entry.index) {
                Ok(Some(ours)) if ours == *entry => Err(Checked::Duplicate),
                Ok(_) => refuse(LogError::Conflict {
                    log: self.name.clone(),
                    index: entry.index,
                }),
                Err(e) => refuse(e),
            };
        }
        if entry.index != head.index + 1 {
            return refuse(LogError::Gap {
                log: self.name.clone(),
                expected: head.index + 1,
                got: entry.index,
            });
        }
        if entry.epoch < head.epoch {
            return refuse(LogError::StaleEpoch {
                log: self.name.clone(),
                index: entry.index,
                epoch: entry.epoch,
                current: head.epoch,
            });
        }
        if entry.chained_hash(&head.hash) != entry.hash {
            return refuse(LogError::HashMismatch {
                log: self.name.clone(),
                index: entry.index,
            });
        }
        self.admit(entry).map_err(Checked::Refused)
    }

    /// The entry at `index` among those queued, durable or not.
    fn known(&self, index: u64) -> Result<Option<Entry>, LogError> {
        {
            let staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(first) = staged.front().map(|e| e.index) {
                if index >= first {
                    return Ok(staged.get((index - first) as usize).cloned());
                }
            }
        }
        self.segments.read(index).map_err(|e| self.in_store(e))
    }

    /// The rules every entry of this log obeys, on the primary and on secondaries alike:
    /// the size cap, the author, and the machine's own [`Machine::check`].
    fn admit(&self, entry: &Entry) -> Result<(), LogError> {
        let size = entry.encoded_len();
        if size > MAX_ENTRY_BYTES {
            return Err(LogError::TooLarge {
                log: self.name.clone(),
                index: entry.index,
                size,
                limit: MAX_ENTRY_BYTES,
            });
        }
        let invalid = |reason| LogError::Invalid {
            log: self.name.clone(),
            index: entry.index,
            reason,
        };
        validate_author(&entry.author).map_err(invalid)?;
        self.machine.check(entry).map_err(invalid)
    }

    /// The durable, published entry at `index`, if any.
    pub fn entry(&self, index: u64) -> Result<Option<Entry>, LogError> {
        if index == 0 || index > self.head().index {
            return Ok(None);
        }
        self.segments.read(index).map_err(|e| self.in_store(e))
    }

    /// Up to `max` durable, published entries from `from` (1-based) on, contiguous.
    pub fn range(&self, from: u64, max: usize) -> Result<Vec<Entry>, LogError> {
        let from = from.max(1);
        let last = self.head().index;
        if from > last || max == 0 {
            return Ok(Vec::new());
        }
        let n = (last - from + 1).min(max as u64) as usize;
        let out = self.segments.range(from, n).map_err(|e| self.in_store(e))?;
        if out.len() != n {
            return Err(LogError::Corrupt {
                log: self.name.clone(),
                index: from + out.len() as u64,
                detail: "missing from the log store".into(),
            });
        }
        Ok(out)
    }

    /// Follows the log from `from`: every durable entry, in order, as it arrives.
    pub fn tail(self: &Arc<Self>, from: u64) -> Tail<M> {
        Tail {
            log: Arc::clone(self),
            next: from.max(1),
            rx: self.subscribe(),
        }
    }

    /// Stops taking entries, waits until the log store has written what was queued,
    /// applies what became durable, and only then lets go of the log store's directory: a
    /// site opening again finds the state and the log in step, and nothing of this instance
    /// writes after that. Reads keep working.
    pub async fn close(&self) {
        self.segments.close().await;
        let _applier = self.applier.lock().await;
        if self.stop_reason().is_none_or(|s| !s.apply_failed) {
            if let Err(e) = self.apply_durable() {
                warn!(log = %self.name, error = %e, "closing: durable entries are left for the next open to apply");
            }
        }
        let closed = Stop {
            reason: "the log was closed".into(),
            disk_full: false,
            apply_failed: false,
        };
        self.halt(closed, None);
        self.segments.release();
    }

    fn in_store(&self, source: LogStoreError) -> LogError {
        LogError::Store {
            log: self.name.clone(),
            source,
        }
    }
}

fn head_of(entry: &Entry) -> Head {
    Head {
        index: entry.index,
        hash: entry.hash,
        epoch: entry.epoch,
    }
}

/// Why [`Log::check_next`] did not accept an entry.
enum Checked {
    /// Already here, identical.
    Duplicate,
    Refused(LogError),
}

/// A reader that follows a log from an index. See [`Log::tail`].
pub struct Tail<M: Machine> {
    log: Arc<Log<M>>,
    next: u64,
    rx: watch::Receiver<Published<M::View>>,
}

impl<M: Machine> Tail<M> {
    /// The next batch of at most `max` entries, waiting until there is one. Cancel-safe:
    /// dropping the future loses nothing. Returns `None` when the log is closed.
    pub async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Entry>, LogError>> {
        loop {
            let head = self.rx.borrow_and_update().head.index;
            if head >= self.next {
                return Some(self.log.range(self.next, max).inspect(|batch| {
                    self.next += batch.len() as u64;
                }));
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The index the next batch starts at.
    pub fn position(&self) -> u64 {
        self.next
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
