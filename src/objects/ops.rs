//! What an operator does with objects one by one: list them by state, ask for a resync or a
//! reverification, and — on a secondary whose primary cannot be reached — find the newest
//! verified copy to serve as a stale read.
//!
//! A page of the rows in one sync state is a range read of the registry's `s` index (and
//! of the damaged index for failed verifications), so `objects list --state failed` costs
//! the same at a million objects as at a thousand. A resync or reverification only marks
//! rows, in transactions of [`MARK_BATCH`] names, through the same writers every transition
//! uses (counters and indexes in step), and wakes the workers that do the work: the sync
//! workers fetch, the verifier re-hashes (on the primary a mismatch goes on to its repair
//! from a secondary). Progress is read off the counters; what was asked, by whom and when
//! is kept in memory ([`Operation`]), since the rows it marked say the rest.

use std::sync::Mutex;

use sled::transaction::TransactionalTree;

use super::registry::get;
use super::state::{
    key, key_name, set_queued, set_row, state_key, state_key_name, ObjectMeta, Row, SyncState,
    Tally, Verification, CATALOG, DAMAGED, REGISTRY,
};
use super::{ObjectError, Objects, MAX_PAGE};
use crate::types::{truncate_chars, Role};

/// Names marked per transaction by a resync or reverification of many.
pub const MARK_BATCH: usize = 1000;
/// Operations whose progress `counts` reports (the latest of each kind).
const KINDS: usize = 2;
/// Characters of an operation's scope (an object's name) shown in its progress line.
const PROGRESS_SCOPE_CHARS: usize = 200;

/// Which rows a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    Synced,
    Pending,
    /// A fetch in progress (in memory only).
    Started,
    Failed,
    VerificationFailed,
}

impl std::str::FromStr for StateFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<StateFilter, String> {
        Ok(match s {
            "synced" => StateFilter::Synced,
            "pending" => StateFilter::Pending,
            "started" => StateFilter::Started,
            "failed" => StateFilter::Failed,
            "verification-failed" => StateFilter::VerificationFailed,
            other => {
                return Err(format!(
                "unknown state {other:?}: one of synced, pending, started, failed, verification-failed"
            ))
            }
        })
    }
}

/// One object as a listing shows it: the catalog record (none for a deleted object whose
/// copy here waits for its removal) and this site's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub meta: Option<ObjectMeta>,
    pub row: Row,
}

/// Which rows a resync or reverification marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    One(String),
    /// Sync failed or verification failed.
    Failed,
    All,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::One(name) => write!(f, "{name}"),
            Scope::Failed => f.write_str("the failed objects"),
            Scope::All => f.write_str("all objects"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    Resync,
    Reverify,
}

/// A resync or reverification an admin asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub kind: OperationKind,
    pub scope: String,
    pub marked: u64,
    /// Rows the scope named that had nothing to do (no copy to verify, deleted, …).
    pub skipped: u64,
    pub by: String,
    pub at_ms: i64,
}

/// The latest operation of each kind.
#[derive(Debug, Default)]
pub(crate) struct Operations(Mutex<Vec<Operation>>);

impl Operations {
    fn record(&self, op: Operation) {
        let mut ops = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ops.retain(|o| o.kind != op.kind);
        ops.push(op);
        ops.truncate(KINDS);
    }

    /// One line per operation: what was asked and how far the workers are, from `t`.
    pub(crate) fn progress(&self, t: &Tally) -> Vec<String> {
        let ops = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ops.iter()
            .map(|op| {
                let (verb, left) = match op.kind {
                    OperationKind::Resync => (
                        "resync",
                        format!("{} pending, {} failed", t.pending, t.failed),
                    ),
                    OperationKind::Reverify => (
                        "reverify",
                        format!(
                            "{} waiting for verification, {} failed verification",
                            t.unverified, t.verification_failed
                        ),
                    ),
                };
                let done = match op.kind {
                    OperationKind::Resync => t.pending == 0,
                    OperationKind::Reverify => t.unverified == 0,
                };
                // A name may be 1,024 bytes long: the line stays well under what a
                // report may carry.
                format!(
                    "{verb} of {} asked by {} at {}: {} marked; {left}{}",
                    truncate_chars(&op.scope, PROGRESS_SCOPE_CHARS),
                    op.by,
                    when(op.at_ms),
                    op.marked,
                    if done { " (done)" } else { "" }
                )
            })
            .collect()
    }
}

/// A time for people: RFC 3339 in UTC, to the second.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// The newest verified copy a secondary holds of an object, for a read the primary cannot
/// answer.
#[derive(Clone, Debug)]
pub struct StaleCopy {
    /// The copy: the catalog record with the copy's version, size and checksum.
    pub meta: ObjectMeta,
    pub verified_at_ms: i64,
    /// The current version, as the event log applied here describes it.
    pub current: ObjectMeta,
}

impl Objects {
    /// Rows by name, optionally in one state and under a prefix, after `after`, at most
    /// `limit` (1..=[`MAX_PAGE`]); and the name to continue after when there are more.
    pub fn list_rows(
        &self,
        state: Option<StateFilter>,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<Listed>, Option<String>), ObjectError> {
        let limit = limit.clamp(1, MAX_PAGE);
        if state == Some(StateFilter::Started) {
            return self.list_started(prefix, after, limit);
        }
        let (index, skip): (Vec<u8>, usize) = match state {
            None => (vec![REGISTRY], 1),
            Some(StateFilter::VerificationFailed) => (vec![DAMAGED], 1),
            Some(s) => {
                let sync = match s {
                    StateFilter::Synced => SyncState::Synced,
                    StateFilter::Failed => SyncState::Failed,
                    _ => SyncState::Pending,
                };
                (state_key(sync, ""), 2)
            }
        };
        let mut wanted = index.clone();
        wanted.extend_from_slice(prefix.as_bytes());
        let mut start = index.clone();
        start.extend_from_slice(after.as_bytes());
        start.push(0);
        let start = if after.is_empty() || start < wanted {
            wanted.clone()
        } else {
            start
        };
        let corrupt = |e: String| ObjectError::Corrupt(e);
        let mut out: Vec<Listed> = Vec::new();
        for item in self.log.state().range(start..) {
            let (k, _) = item.map_err(|e| corrupt(e.to_string()))?;
            if !k.starts_with(&wanted) {
                break;
            }
            let name = (if skip == 2 {
                state_key_name(&k)
            } else {
                key_name(&k)
            })
            .map_err(corrupt)?;
            let Some(row) = self.row(name)? else {
                continue;
            };
            // Changed since the index was read (the row is read after its key), or a
            // pending row being fetched, which is listed as started.
            let still = match state {
                None => true,
                Some(StateFilter::Synced) => row.sync == SyncState::Synced,
                Some(StateFilter::Pending) => row.sync == SyncState::Pending,
                Some(StateFilter::Failed) => row.sync == SyncState::Failed,
                Some(StateFilter::VerificationFailed) => row.verification == Verification::Failed,
                Some(StateFilter::Started) => row.sync == SyncState::Started,
            };
            if !still {
                continue;
            }
            if out.len() == limit {
                let last = out.last().map(|l| l.name.clone());
                return Ok((out, last));
            }
            out.push(Listed {
                name: name.to_string(),
                meta: self.meta(name)?,
                row,
            });
        }
        Ok((out, None))
    }

    /// Fetches in progress (at most the sync concurrency), in name order.
    fn list_started(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<Listed>, Option<String>), ObjectError> {
        let mut names = self.transfers.names();
        names.retain(|n| n.starts_with(prefix) && n.as_str() > after);
        names.sort();
        let more = names.len() > limit;
        let mut out = Vec::new();
        for name in names.into_iter().take(limit) {
            if let Some(row) = self.row(&name)? {
                out.push(Listed {
                    meta: self.meta(&name)?,
                    name,
                    row,
                });
            }
        }
        let next = more.then(|| out.last().map(|l| l.name.clone())).flatten();
        Ok((out, next))
    }

    /// What needs a look first, for the status page: failed syncs, failed verifications,
    /// fetches in progress, then pending ones, at most `limit` in all.
    pub fn attention(&self, limit: usize) -> Result<Vec<Listed>, ObjectError> {
        let mut out = Vec::new();
        for state in [
            StateFilter::Failed,
            StateFilter::VerificationFailed,
            StateFilter::Started,
            StateFilter::Pending,
        ] {
            let left = limit.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let (page, _) = self.list_rows(Some(state), "", "", left)?;
            out.extend(page);
        }
        Ok(out)
    }

    /// Marks rows for a fresh fetch (secondary): pending, due now, fetched even when the copy
    /// here has the current checksum; the sync workers are woken. The copy stays in place
    /// until the fetch replaces it. Refused on the primary, whose copies are the originals.
    pub fn resync(&self, scope: &Scope, by: &str) -> Result<Operation, ObjectError> {
        if self.settings.role() == Role::Primary {
            return Err(ObjectError::Refused {
                message: format!(
                    "site {} is the primary: its copies are the originals and have nowhere to be synced from; use reverify to check them",
                    self.settings.site_id()
                ),
                primary: None,
            });
        }
        let op = self.mark(scope, by, OperationKind::Resync, mark_resync)?;
        self.requeued.notify_one();
        Ok(op)
    }

    /// Marks synced copies for verification now and wakes the verifier. On a secondary a
    /// mismatch drops the copy and syncs it again; on the primary it is CRITICAL and
    /// repaired from a secondary's verified copy.
    pub fn reverify(&self, scope: &Scope, by: &str) -> Result<Operation, ObjectError> {
        let op = self.mark(scope, by, OperationKind::Reverify, mark_reverify)?;
        self.suspects.notify_one();
        Ok(op)
    }

    fn mark(
        &self,
        scope: &Scope,
        by: &str,
        kind: OperationKind,
        one: fn(&TransactionalTree, &str) -> super::state::TxResult<bool>,
    ) -> Result<Operation, ObjectError> {
        let (mut marked, mut skipped) = (0u64, 0u64);
        let mut count = |names: &[String]| -> Result<(), ObjectError> {
            let done = self
                .log
                .state()
                .transaction(|t| -> super::state::TxResult<u64> {
                    let mut n = 0u64;
                    for name in names {
                        n += u64::from(one(t, name)?);
                    }
                    Ok(n)
                })
                .map_err(|e| ObjectError::Corrupt(e.to_string()))?;
            marked += done;
            skipped += names.len() as u64 - done;
            Ok(())
        };
        match scope {
            Scope::One(name) => {
                if self.row(name)?.is_none() {
                    return Err(ObjectError::NotFound(name.clone()));
                }
                count(std::slice::from_ref(name))?;
            }
            Scope::All => self.each_batch(&[REGISTRY], 1, &mut count)?,
            Scope::Failed => {
                self.each_batch(&state_key(SyncState::Failed, ""), 2, &mut count)?;
                self.each_batch(&[DAMAGED], 1, &mut count)?;
            }
        }
        let op = Operation {
            kind,
            scope: scope.to_string(),
            marked,
            skipped,
            by: by.to_string(),
            at_ms: crate::log::now_ms(),
        };
        self.operations.record(op.clone());
        Ok(op)
    }

    /// Calls `f` with the names under `index` (keys of `skip` bytes before the name), a
    /// batch of [`MARK_BATCH`] at a time, each batch read after the previous one was marked
    /// (marking may take a name out of the index being walked).
    fn each_batch(
        &self,
        index: &[u8],
        skip: usize,
        f: &mut impl FnMut(&[String]) -> Result<(), ObjectError>,
    ) -> Result<(), ObjectError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let start = match &after {
                Some(k) => {
                    let mut k = k.clone();
                    k.push(0);
                    k
                }
                None => index.to_vec(),
            };
            let mut names = Vec::with_capacity(MARK_BATCH);
            let mut last = None;
            for item in self.log.state().range(start..) {
                let (k, _) = item.map_err(|e| ObjectError::Corrupt(e.to_string()))?;
                if !k.starts_with(index) || names.len() == MARK_BATCH {
                    break;
                }
                let name = (match skip {
                    2 => state_key_name(&k),
                    _ => key_name(&k),
                })
                .map_err(ObjectError::Corrupt)?;
                names.push(name.to_string());
                last = Some(k.to_vec());
            }
            if names.is_empty() {
                return Ok(());
            }
            f(&names)?;
            after = last;
        }
    }

    /// The newest verified copy of `name` this site holds (the current version or an
    /// older one), when the object still exists (its bytes may have gone meanwhile:
    /// [`super::Blobs::reader`] says so).
    pub fn stale_copy(&self, name: &str) -> Result<Option<StaleCopy>, ObjectError> {
        let (Some(current), Some(row)) = (self.meta(name)?, self.row(name)?) else {
            return Ok(None);
        };
        let Some((local, verified_at_ms)) = row.verified_local() else {
            return Ok(None);
        };
        let meta = if local.sha256 == current.sha256 {
            current.clone()
        } else {
            ObjectMeta {
                size: local.size,
                sha256: local.sha256.clone(),
                version: local.version,
                // When the copy's own version was written is not kept here.
                updated_at_ms: 0,
                updated_by: String::new(),
                ..current.clone()
            }
        };
        Ok(Some(StaleCopy {
            meta,
            verified_at_ms,
            current,
        }))
    }
}

/// Marks one row for a fresh fetch; false when there is nothing to fetch (no row, or a
/// deleted object whose copy waits for its removal).
fn mark_resync(t: &TransactionalTree, name: &str) -> super::state::TxResult<bool> {
    let meta: Option<ObjectMeta> = get(t, &key(CATALOG, name), "a catalog record")?;
    let row: Option<Row> = get(t, &key(REGISTRY, name), "a registry row")?;
    let (Some(_), Some(row)) = (meta, row) else {
        return Ok(false);
    };
    // A copy an admin asked to fetch again is suspect: it is no longer served as a stale
    // read while the primary is away.
    let marked = Row {
        resync: true,
        local_verified_ms: None,
        ..Row::pending(row.local.clone())
    };
    set_row(t, name, Some(&marked))?;
    set_queued(t, name, true)?;
    Ok(true)
}

/// Marks one synced copy for verification now; false when there is no copy to verify.
fn mark_reverify(t: &TransactionalTree, name: &str) -> super::state::TxResult<bool> {
    let Some(mut row) = get::<Row>(t, &key(REGISTRY, name), "a registry row")? else {
        return Ok(false);
    };
    if row.sync != SyncState::Synced || row.local.is_none() {
        return Ok(false);
    }
    if row.verification == Verification::Failed {
        // Still damaged until a check says otherwise (never handed out meanwhile): only
        // due now, as a read that misses the file makes it.
        row.verified_at_ms = Some(0);
        set_row(t, name, Some(&row))?;
        return Ok(true);
    }
    row.verification = Verification::Pending;
    row.verified_at_ms = None;
    row.checksum_mismatch = false;
    row.verification_failure = None;
    set_row(t, name, Some(&row))?;
    Ok(true)
}
