//! The registry's state transitions: what sync work is due, and how a fetch, a removal, a
//! failure or a verification is recorded.
//!
//! Each transition is one sled transaction that re-reads the catalog, so a worker that
//! finishes after a newer event arrived never records the older version as current, and
//! writes the row through `state::set_row`, which moves the registry's counters with it.
//! Rows written here are not flushed one by one: if a crash takes such an update back, the
//! row says "pending" again and the object is fetched once more, which is safe. The file
//! work (install, fsync, remove) is always done before the row that describes it.
//!
//! Starting a fetch writes nothing: the transfer is [`Started`] in memory only, so the
//! scheduler's busiest call costs a read. Finishes are not batched across workers: each is
//! one unflushed transaction of a few microseconds after a transfer that ends with fsyncs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tracing::warn;

use super::state::{
    decode, key, key_name, load, set_queued, set_row, Local, ObjectMeta, Row, SyncState, Tally,
    Verification, CATALOG, QUEUE, REGISTRY,
};
use super::{Digested, ObjectError, Objects, Staged};
use crate::types::Role;

/// First retry after a failed sync.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between retries of one object.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// How soon the primary verifies a damaged copy again (and tries to repair it), when the
/// re-verification interval is longer.
pub const REPAIR_RETRY: Duration = Duration::from_secs(60);

/// The wait before retry number `retries` (1 = the first retry): doubling from
/// [`RETRY_INITIAL`] up to [`RETRY_MAX`], scaled by `jitter` (0.5..1.5 spreads retries of
/// many objects that failed together).
pub fn retry_delay(retries: u32, jitter: f64) -> Duration {
    let exp = retries.saturating_sub(1).min(16);
    let base = RETRY_INITIAL.saturating_mul(1 << exp).min(RETRY_MAX);
    base.mul_f64(jitter.clamp(0.5, 1.5))
}

/// Work that is due now, and when more falls due (`None`: nothing else is scheduled, or
/// the scan stopped early because it found enough).
#[derive(Debug, Default)]
pub struct Due<T> {
    pub now: Vec<T>,
    pub next_ms: Option<i64>,
}

/// How this site's copies stand, from the registry's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Objects in the catalog (what the primary has, as far as this site has applied).
    pub objects: u64,
    pub synced: u64,
    /// Waiting for a first attempt or a deferred one, or in progress.
    pub pending: u64,
    /// The last attempt failed (also while it is retried: a retry that succeeds makes it
    /// synced, one that fails leaves it failed).
    pub failed: u64,
    pub verified: u64,
    pub verification_failed: u64,
    /// Event-log index applied here.
    pub events_applied: u64,
    /// What this site replicates when it is selectively synced (`None`: everything). The
    /// counters above, but `objects`, then count the selection only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selective: Option<crate::settings::Selection>,
    /// Why copies failed verification: the first [`DAMAGED_LISTED`], as `name: failure`
    /// (on the primary the failure says why no repair succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
    /// How the resync and reverification an admin last asked for here stand, a line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<String>,
}

/// How many failed verifications [`Counts::damaged`] names.
pub const DAMAGED_LISTED: usize = 5;

impl Counts {
    /// Objects this site replicates: synced, pending or failed. Saturating, as a report from
    /// another site can carry any numbers.
    pub fn selected(&self) -> u64 {
        self.synced
            .saturating_add(self.pending)
            .saturating_add(self.failed)
    }

    /// The counts `tally` holds, with the damaged copies listed and the log's position.
    pub(super) fn from_tally(t: &Tally, damaged: Vec<String>, events_applied: u64) -> Counts {
        Counts {
            objects: t.objects,
            synced: t.synced,
            pending: t.pending,
            failed: t.failed,
            verified: t.verified,
            verification_failed: t.verification_failed,
            events_applied,
            selective: None,
            damaged,
            progress: Vec::new(),
        }
    }
}

/// What a sync worker has to do for one name.
#[derive(Debug)]
pub enum SyncJob {
    /// Fetch this version from the primary; a pending row shows `started` while the guard
    /// lives.
    Fetch(ObjectMeta, Started),
    /// The object was deleted: remove the local copy.
    Remove(Local),
    /// Nothing (already in step).
    Nothing,
}

/// What [`Objects::start_sync`] decided inside its transaction (a guard is made outside it).
enum Decided {
    Job(SyncJob),
    Fetch(ObjectMeta),
}

/// Fetches in progress by name (a count, should two ever overlap).
#[derive(Clone, Debug, Default)]
pub(crate) struct Transfers(Arc<Mutex<HashMap<String, usize>>>);

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(&self, name: &str) -> Started {
        *self.lock().entry(name.to_string()).or_insert(0) += 1;
        Started {
            transfers: self.clone(),
            name: name.to_string(),
        }
    }

    /// The names being fetched now.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// How a row stored with `sync` is shown: a pending one as `started` while a fetch is
    /// in progress, and a `started` stored by an earlier version (no fetch survives a
    /// restart) as pending. A failed one stays failed while it is retried, as
    /// [`Counts::failed`] counts it.
    pub(crate) fn shown(&self, name: &str, sync: SyncState) -> SyncState {
        match sync {
            SyncState::Pending | SyncState::Started if self.lock().contains_key(name) => {
                SyncState::Started
            }
            SyncState::Started => SyncState::Pending,
            other => other,
        }
    }
}

/// A fetch in progress: while it lives, [`Objects::row`] shows a pending row as `started`.
#[derive(Debug)]
pub struct Started {
    transfers: Transfers,
    name: String,
}

impl Drop for Started {
    fn drop(&mut self) {
        let mut m = self.transfers.lock();
        if let Some(n) = m.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.name);
            }
        }
    }
}

pub(super) fn get<T: serde::de::DeserializeOwned>(
    t: &TransactionalTree,
    k: &[u8],
    what: &str,
) -> Result<Option<T>, ConflictableTransactionError<String>> {
    match t.get(k)? {
        None => Ok(None),
        Some(raw) => decode(&raw, what)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
    }
}

impl Objects {
    /// Names whose sync is due (at most `limit`, skipping `busy`), scanning the queue from
    /// just after `cursor` and wrapping around; and, when the whole queue was scanned, the
    /// earliest time a failed one is due again.
    pub fn sync_due(
        &self,
        cursor: Option<&str>,
        now_ms: i64,
        limit: usize,
        busy: &HashSet<String>,
    ) -> Result<Due<String>, ObjectError> {
        let state = self.log.state();
        let start = match cursor {
            Some(c) => {
                let mut k = key(QUEUE, c);
                k.push(0);
                k
            }
            None => key(QUEUE, ""),
        };
        let end = vec![QUEUE + 1];
        let wrapped = state
            .range(start.clone()..end)
            .chain(state.range(key(QUEUE, "")..start));
        let mut due = Vec::new();
        let mut next: Option<i64> = None;
        for item in wrapped {
            let (k, _) = item.map_err(|e| ObjectError::Corrupt(e.to_string()))?;
            let name = key_name(&k).map_err(ObjectError::Corrupt)?;
            if busy.contains(name) {
                continue;
            }
            let at = self.row(name)?.map_or(0, |r| r.next_retry_ms);
            if at <= now_ms {
                due.push(name.to_string());
                if due.len() == limit {
                    return Ok(Due {
                        now: due,
                        next_ms: None,
                    });
                }
            } else {
                next = Some(next.map_or(at, |n: i64| n.min(at)));
            }
        }
        Ok(Due {
            now: due,
            next_ms: next,
        })
    }

    /// Syncs that failed since the site opened.
    pub fn sync_failures(&self) -> u64 {
        self.sync_failures.load(Ordering::Relaxed)
    }

    /// How this site's copies stand: the registry's counters and the first
    /// [`DAMAGED_LISTED`] damaged copies, a handful of reads whatever the registry holds.
    /// (The counters and the damaged list are read one after the other; a transition
    /// between the two shows in the second only.)
    pub fn counts(&self) -> Result<Counts, ObjectError> {
        let state = self.log.state();
        let events_applied = self.log.head().index;
        let tally = self.tally()?;
        let damaged = super::state::damaged(state, DAMAGED_LISTED).map_err(ObjectError::Corrupt)?;
        let mut counts = Counts::from_tally(&tally, damaged, events_applied);
        counts.progress = self.operations.progress(&tally);
        counts.selective = self.selection().map(|s| (*s).clone());
        Ok(counts)
    }

    /// How many names wait for sync work.
    pub fn queued(&self) -> Result<u64, ObjectError> {
        Ok(self.tally()?.queued)
    }

    fn tally(&self) -> Result<Tally, ObjectError> {
        load(self.log.state())
            .map_err(ObjectError::Corrupt)?
            .ok_or_else(|| ObjectError::Corrupt(super::state::MISSING.into()))
    }

    /// A transition's transaction failed: this site's storage is broken. (Counters that
    /// are wrong never fail one: they are marked, see `state::shift`.)
    fn failed(&self, e: TransactionError<String>) -> ObjectError {
        ObjectError::Corrupt(e.to_string())
    }

    /// Why open built the registry's state index from the rows, if it did.
    pub fn index_rebuilt(&self) -> Option<&str> {
        self.reindexed.as_deref()
    }

    /// Why open rebuilt the registry's counters with a recount, if it did.
    pub fn counters_rebuilt(&self) -> Option<&str> {
        self.recounted.as_deref()
    }

    /// Decides what `name` needs. A fetch is marked started in memory only (see
    /// [`Started`]); only what settles the row without a transfer is written.
    pub fn start_sync(&self, name: &str, now_ms: i64) -> Result<SyncJob, ObjectError> {
        let decided = self
            .log
            .state()
            .transaction(|t| {
                let meta: Option<ObjectMeta> = get(t, &key(CATALOG, name), "a catalog record")?;
                let row: Option<Row> = get(t, &key(REGISTRY, name), "a registry row")?;
                let Some(row) = row else {
                    set_queued(t, name, false)?;
                    return Ok(Decided::Job(SyncJob::Nothing));
                };
                if meta.as_ref().is_some_and(|m| !self.selects(name, &m.kind)) {
                    // No longer selected (selective sync): drop the copy, then the row.
                    return match row.local {
                        Some(local) => Ok(Decided::Job(SyncJob::Remove(local))),
                        None => {
                            set_row(t, name, None)?;
                            set_queued(t, name, false)?;
                            Ok(Decided::Job(SyncJob::Nothing))
                        }
                    };
                }
                match (meta, row.local.clone()) {
                    (None, None) => {
                        set_row(t, name, None)?;
                        set_queued(t, name, false)?;
                        Ok(Decided::Job(SyncJob::Nothing))
                    }
                    (None, Some(local)) => Ok(Decided::Job(SyncJob::Remove(local))),
                    (Some(meta), Some(local)) if local.sha256 == meta.sha256 && !row.resync => {
                        // The same bytes again (re-pushed unchanged): only the version moved.
                        let verified = row.verified_at_ms.unwrap_or(now_ms);
                        let mut synced = Row::synced(
                            Local {
                                version: meta.version,
                                ..local
                            },
                            verified,
                        );
                        synced.verification = row.verification;
                        set_row(t, name, Some(&synced))?;
                        set_queued(t, name, false)?;
                        Ok(Decided::Job(SyncJob::Nothing))
                    }
                    (Some(meta), _) => Ok(Decided::Fetch(meta)),
                }
            })
            .map_err(|e| self.failed(e))?;
        Ok(match decided {
            Decided::Job(job) => job,
            Decided::Fetch(meta) => SyncJob::Fetch(meta, self.transfers.begin(name)),
        })
    }

    /// Records fetched, checked, durable staged bytes as `meta`'s copy — unless the
    /// catalog has moved on meanwhile, in which case they are dropped and the name stays
    /// queued for the newer version.
    pub async fn finish_fetch(
        &self,
        meta: &ObjectMeta,
        staged: Staged,
        digest: Digested,
        now_ms: i64,
    ) -> Result<bool, ObjectError> {
        let name = meta.name.clone();
        let sha = digest.hex();
        self.blobs
            .install(staged, &name, &sha)
            .await
            .map_err(ObjectError::io(format!("cannot install {name}")))?;
        let outcome = self
            .log
            .state()
            .transaction(|t| {
                let current: Option<ObjectMeta> = get(t, &key(CATALOG, &name), "a catalog record")?;
                match current {
                    Some(c) if c.sha256 == sha => {
                        let local = Local {
                            version: c.version,
                            sha256: sha.clone(),
                            size: digest.size,
                        };
                        let old = set_row(t, &name, Some(&Row::synced(local, now_ms)))?;
                        // Unselected meanwhile: stays queued, and a worker removes it.
                        set_queued(t, &name, !self.selects(&name, &c.kind))?;
                        let old = old.and_then(|r| r.local);
                        Ok((true, old.filter(|o| o.sha256 != sha)))
                    }
                    _ => {
                        let row: Option<Row> = get(t, &key(REGISTRY, &name), "a registry row")?;
                        Ok((false, row.and_then(|r| r.local)))
                    }
                }
            })
            .map_err(|e| self.failed(e))?;
        match outcome {
            (true, Some(old)) => self.remove_file(&name, &old.sha256).await,
            (false, old) if old.as_ref().is_none_or(|o| o.sha256 != sha) => {
                self.remove_file(&name, &sha).await
            }
            _ => {}
        }
        Ok(outcome.0)
    }

    /// Removes the local copy of a deleted object, then its row.
    pub async fn finish_remove(&self, name: &str, local: &Local) -> Result<(), ObjectError> {
        self.blobs
            .remove(name, &local.sha256)
            .await
            .map_err(ObjectError::io(format!("cannot remove {name}")))?;
        self.log
            .state()
            .transaction(|t| {
                let meta: Option<ObjectMeta> = get(t, &key(CATALOG, name), "a catalog record")?;
                // Deleted, or no longer selected here (selective sync).
                if meta.as_ref().is_none_or(|m| !self.selects(name, &m.kind)) {
                    set_row(t, name, None)?;
                    set_queued(t, name, false)?;
                } else {
                    // Re-created meanwhile: the file is gone, fetch the new version.
                    let mut row: Row = get(t, &key(REGISTRY, name), "a registry row")?
                        .unwrap_or_else(|| Row::pending(None));
                    row.local = None;
                    row.sync = SyncState::Pending;
                    set_row(t, name, Some(&row))?;
                }
                Ok(())
            })
            .map_err(|e| self.failed(e))
    }

    /// Records a failed sync of `version` (`None`: the removal of a deleted object's copy)
    /// with its retry time; returns the row.
    pub fn fail_sync(
        &self,
        name: &str,
        version: Option<u64>,
        error: &str,
        now_ms: i64,
        jitter: f64,
    ) -> Result<Option<Row>, ObjectError> {
        self.sync_failures.fetch_add(1, Ordering::Relaxed);
        self.log
            .state()
            .transaction(|t| {
                let meta: Option<ObjectMeta> = get(t, &key(CATALOG, name), "a catalog record")?;
                let Some(mut row) = get::<Row>(t, &key(REGISTRY, name), "a registry row")? else {
                    return Ok(None);
                };
                if meta.as_ref().map(|m| m.version) != version {
                    // A newer event reset the row; this failure is about an old version.
                    return Ok(Some(row));
                }
                row.sync = SyncState::Failed;
                row.retries = row.retries.saturating_add(1);
                row.next_retry_ms =
                    now_ms.saturating_add(retry_delay(row.retries, jitter).as_millis() as i64);
                row.last_error = Some(error.to_string());
                set_row(t, name, Some(&row))?;
                Ok(Some(row))
            })
            .map_err(|e| self.failed(e))
    }

    /// Puts off the sync of `version` until `at`, without counting a failure (the primary
    /// has a newer version; its event resets the row when it arrives).
    pub fn defer_sync(&self, name: &str, version: u64, at: i64) -> Result<(), ObjectError> {
        self.log
            .state()
            .transaction(|t| {
                let meta: Option<ObjectMeta> = get(t, &key(CATALOG, name), "a catalog record")?;
                let Some(mut row) = get::<Row>(t, &key(REGISTRY, name), "a registry row")? else {
                    return Ok(());
                };
                if meta.map(|m| m.version) == Some(version) {
                    row.sync = SyncState::Pending;
                    row.next_retry_ms = at;
                    set_row(t, name, Some(&row))?;
                }
                Ok(())
            })
            .map_err(|e| self.failed(e))
    }

    /// Copies due for (re-)verification: never verified, or verified `interval` or more
    /// ago. Also the earliest time the next one falls due.
    pub fn verification_due(
        &self,
        now_ms: i64,
        interval: Duration,
        limit: usize,
    ) -> Result<Due<(String, Local)>, ObjectError> {
        // A damaged copy on the primary is looked at again sooner: a secondary that holds a
        // verified copy may have appeared (or an operator put the file back).
        let retry = match self.settings.role() {
            Role::Primary => interval.min(REPAIR_RETRY).as_millis() as i64,
            Role::Secondary => interval.as_millis() as i64,
        };
        let interval = interval.as_millis() as i64;
        let mut due = Vec::new();
        let mut next: Option<i64> = None;
        for item in self.log.state().scan_prefix([REGISTRY]) {
            let (k, v) = item.map_err(|e| ObjectError::Corrupt(e.to_string()))?;
            let row: Row = decode(&v, "a registry row").map_err(ObjectError::Corrupt)?;
            let (SyncState::Synced, Some(local)) = (row.sync, row.local) else {
                continue;
            };
            let at = match (row.verification, row.verified_at_ms) {
                (Verification::Pending, _) | (_, None) => 0,
                (Verification::Failed, Some(v)) => v.saturating_add(retry),
                (_, Some(v)) => v.saturating_add(interval),
            };
            if at <= now_ms {
                let name = key_name(&k).map_err(ObjectError::Corrupt)?;
                due.push((name.to_string(), local));
                if due.len() == limit {
                    // A full batch: the verifier asks again right after it, so when the
                    // next one falls due does not matter yet.
                    return Ok(Due {
                        now: due,
                        next_ms: None,
                    });
                }
            } else {
                next = Some(next.map_or(at, |n: i64| n.min(at)));
            }
        }
        Ok(Due {
            now: due,
            next_ms: next,
        })
    }

    /// Makes `name`'s copy due for verification now and wakes the verifier: a read found its
    /// file missing (on the primary the verifier then repairs it).
    pub fn suspect(&self, name: &str) -> Result<(), ObjectError> {
        self.log
            .state()
            .transaction(|t| {
                let Some(mut row) = get::<Row>(t, &key(REGISTRY, name), "a registry row")? else {
                    return Ok(());
                };
                if row.sync == SyncState::Synced && row.verified_at_ms.is_some() {
                    row.verified_at_ms = Some(0);
                    set_row(t, name, Some(&row))?;
                }
                Ok(())
            })
            .map_err(|e| self.failed(e))?;
        self.suspects.notify_one();
        Ok(())
    }

    /// Resolves when a copy was queued again outside the event log (a failed verification
    /// dropped it), so the sync workers fetch it without waiting for their rescan.
    pub async fn requeued(&self) {
        self.requeued.notified().await
    }

    /// Resolves when a read asked for a verification ([`Objects::suspect`]).
    pub async fn suspected(&self) {
        self.suspects.notified().await
    }

    /// Whether this site holds `name`'s current version with checksum `sha256`, synced and
    /// verified: the only copies a secondary serves other sites (a primary repairing its own).
    pub fn holds_verified(&self, name: &str, sha256: &str) -> Result<bool, ObjectError> {
        let (Some(meta), Some(row)) = (self.meta(name)?, self.row(name)?) else {
            return Ok(false);
        };
        Ok(meta.sha256 == sha256
            && row.sync == SyncState::Synced
            && row.verification == Verification::Succeeded
            && row.local.is_some_and(|l| l.sha256 == sha256))
    }

    /// Puts checked, durable staged bytes back in place of the damaged copy `local`
    /// (primary), durably (over it), and records the copy verified.
    /// Returns false, and installs nothing, when `name` moved on meanwhile (replaced,
    /// deleted or already repaired): the caller had nothing left to repair.
    pub async fn restore(
        &self,
        name: &str,
        local: &Local,
        staged: Staged,
        digest: Digested,
        now_ms: i64,
    ) -> Result<bool, ObjectError> {
        if digest.hex() != local.sha256 || digest.size != local.size {
            return Err(ObjectError::Mismatch(format!(
                "{name}: {} bytes with sha256 {} are not the copy recorded ({} bytes, sha256 {})",
                digest.size,
                digest.hex(),
                local.size,
                local.sha256
            )));
        }
        // Under the commit lock: a push or delete of the same name cannot interleave, so the
        // file is never put back after its version was replaced and its file removed.
        let _commit = self.lock_commit(name).await?;
        let current = self.row(name)?;
        let damaged = current.as_ref().is_some_and(|r| {
            r.local.as_ref() == Some(local) && r.verification != Verification::Succeeded
        });
        if !damaged || self.meta(name)?.is_none_or(|m| m.sha256 != local.sha256) {
            return Ok(false);
        }
        self.blobs
            .install(staged, name, &local.sha256)
            .await
            .map_err(ObjectError::io(format!("cannot put back {name}")))?;
        let recorded = self
            .log
            .state()
            .transaction(|t| {
                let Some(mut row) = get::<Row>(t, &key(REGISTRY, name), "a registry row")? else {
                    return Ok(false);
                };
                if row.local.as_ref() != Some(local) {
                    return Ok(false);
                }
                row.verification = Verification::Succeeded;
                row.verified_at_ms = Some(now_ms);
                row.checksum_mismatch = false;
                row.verification_failure = None;
                set_row(t, name, Some(&row))?;
                Ok(true)
            })
            .map_err(|e| self.failed(e))?;
        Ok(recorded)
    }

    /// Records the outcome of re-hashing `local`. A mismatch on a secondary drops the copy
    /// and queues a fresh sync; on the primary the copy stays marked failed (and is handed to
    /// no one) until the verifier repairs it from a secondary's verified copy.
    pub async fn record_verification(
        &self,
        name: &str,
        local: &Local,
        outcome: Result<(), String>,
        now_ms: i64,
    ) -> Result<(), ObjectError> {
        let resync = self.settings.role() == Role::Secondary;
        // A secondary drops a damaged copy before it queues the name again: removed after,
        // the removal could land on the copy a sync worker fetched meanwhile (same version,
        // same blob). Should the row have moved on meanwhile, a later read or verification
        // finds what is missing.
        if resync && outcome.is_err() {
            self.remove_file(name, &local.sha256).await;
        }
        let dropped = self
            .log
            .state()
            .transaction(|t| {
                let Some(mut row) = get::<Row>(t, &key(REGISTRY, name), "a registry row")? else {
                    return Ok(false);
                };
                if row.local.as_ref() != Some(local) {
                    return Ok(false); // replaced meanwhile
                }
                row.verified_at_ms = Some(now_ms);
                match &outcome {
                    Ok(()) => {
                        row.verification = Verification::Succeeded;
                        row.checksum_mismatch = false;
                        row.verification_failure = None;
                    }
                    Err(failure) => {
                        row.verification = Verification::Failed;
                        row.checksum_mismatch = true;
                        row.verification_failure = Some(failure.clone());
                        if resync {
                            row.local = None;
                            row.local_verified_ms = None;
                            row.sync = SyncState::Pending;
                            row.next_retry_ms = 0;
                            set_queued(t, name, true)?;
                        }
                    }
                }
                set_row(t, name, Some(&row))?;
                Ok(resync && outcome.is_err())
            })
            .map_err(|e| self.failed(e))?;
        if let Err(failure) = &outcome {
            warn!(object = name, %failure, resync, "verification failed");
        }
        if dropped {
            // Queued again: the sync workers need not wait for their idle rescan.
            self.requeued.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        assert_eq!(retry_delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(5, 1.0), Duration::from_secs(16));
        assert_eq!(retry_delay(7, 1.0), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX, 1.0), RETRY_MAX);
        assert_eq!(retry_delay(1, 0.5), Duration::from_millis(500));
        assert_eq!(retry_delay(1, 9.0), Duration::from_millis(1500));
    }
}
