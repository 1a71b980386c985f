//! The event log's state tree: its keys, its records, and the one way a record changes —
//! with the counters [`Objects::counts`](super::Objects::counts) reads kept in step.
//!
//! Keys, by first byte (each prefix is one byte and a name follows, so two prefixes never
//! collide):
//! - `c<name>`: the object as the primary's event log describes it ([`ObjectMeta`]);
//! - `r<name>`: this site's copy ([`Row`]: sync and verification state);
//! - `q<name>`: present while the copy needs sync work, so workers scan only what is due;
//! - `d<name>`: present while the copy's verification failed, holding why, so the first
//!   few damaged copies are a bounded scan;
//! - `s<state><name>`: the registry row's stored sync state (`p` pending, `s` synced, `f`
//!   failed), so a page of the rows in one state is a range read, never a scan of the
//!   registry (`geo-agent objects list --state failed` at a million objects);
//! - `#counts`: the counters ([`Tally`]); `#index`: present once the `s` index is complete.
//!
//! Status reports, readiness, `/metrics` and `/objects` all ask how this site's copies
//! stand; counting the rows each time would scan the registry (a second at a million
//! objects). So every write of a catalog record, a registry row or a queue marker goes
//! through [`set_catalog`], [`set_row`] or [`set_queued`], inside the transaction that makes
//! it: each takes the value it replaces from the write itself (sled's `insert` and `remove`
//! return it) and moves the counters by the difference. The change therefore depends on
//! nothing but the state and the write — `EventsMachine::apply` stays a function of state
//! and entry, and sled may run it again — and a crash keeps a row and its counters together
//! or neither. The cost is one more small record rewritten per change; sled 0.34 runs
//! transactions one at a time anyway, so the one hot key adds no conflicts.
//!
//! At open ([`reconcile`]) the counters and the damaged index are checked against what the
//! registry rows add up to (open reads every row anyway, to collect orphans; debug builds
//! also count the catalog and queue keys) and replaced by a recount when they are missing
//! (a database from before they were kept), unreadable or wrong. Elsewhere a missing or
//! unreadable record is an error ([`ObjectError::Corrupt`](super::ObjectError) for
//! callers), never a panic. A change that finds the counters missing, unreadable or about
//! to go out of range still goes through (the event log applies only durable entries, which
//! must not be refused): the record is marked wrong instead, reads as that error, not as
//! figures, and the next open counts again.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

pub const CATALOG: u8 = b'c';
pub const REGISTRY: u8 = b'r';
pub const QUEUE: u8 = b'q';
pub const DAMAGED: u8 = b'd';
pub const BY_STATE: u8 = b's';
const TALLY_KEY: &[u8] = b"#counts";
/// Present (holding [`INDEX_VERSION`]) once the `s` index holds every row.
const INDEX_KEY: &[u8] = b"#index";
const INDEX_VERSION: u8 = 1;
/// Why [`reconcile`] rebuilt counters that were never stored (a database from before).
pub const MISSING: &str = "the registry counters are missing";
/// Why [`reconcile`] rebuilt counters of an older encoding (before `unverified`).
pub const OLDER: &str = "the registry counters are of an older version";
/// How an error about counters that disagree with the rows begins ([`found_wrong`]).
pub const DISAGREE: &str = "the registry counters disagree with the rows";
/// The first byte of a counter record [`found_wrong`]: the reason follows.
const WRONG_MARK: u8 = 0;
/// The encoding of [`Tally`]: a version byte, then each counter as a big-endian u64.
/// Version 1 had no `unverified`; a database that holds it is counted again at open.
const TALLY_VERSION: u8 = 2;
const FIELDS: usize = 8;

/// One object version, as the primary's event log describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    /// The index of the event that created this version.
    pub version: u64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    Pending,
    /// A fetch is in progress. Kept in memory only (`Objects::row` shows it); a row stored
    /// with it by an earlier version, before a crash, reads as pending.
    Started,
    Synced,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verification {
    Pending,
    Succeeded,
    Failed,
}

/// The bytes this site holds for an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    pub version: u64,
    pub sha256: String,
    pub size: u64,
}

/// This site's registry row for one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub sync: SyncState,
    pub retries: u32,
    pub next_retry_ms: i64,
    pub last_error: Option<String>,
    /// What is on disk here, if anything.
    pub local: Option<Local>,
    pub verification: Verification,
    pub verified_at_ms: Option<i64>,
    pub checksum_mismatch: bool,
    pub verification_failure: Option<String>,
    /// Set by an admin's resync: fetch again even when the copy here has the current
    /// checksum. A fetch that completes writes a fresh row without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resync: bool,
    /// When the bytes in `local` were last verified, kept while the row waits for another
    /// version (or a resync): the copy a secondary may serve as a stale read while the
    /// primary cannot be reached. `None` when they never were, or are in doubt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_verified_ms: Option<i64>,
}

impl Row {
    pub fn pending(local: Option<Local>) -> Row {
        Row {
            sync: SyncState::Pending,
            retries: 0,
            next_retry_ms: 0,
            last_error: None,
            local,
            verification: Verification::Pending,
            verified_at_ms: None,
            checksum_mismatch: false,
            verification_failure: None,
            resync: false,
            local_verified_ms: None,
        }
    }

    /// A copy whose bytes were hashed as they were written (a push, or a checked fetch).
    pub fn synced(local: Local, verified_at_ms: i64) -> Row {
        Row {
            sync: SyncState::Synced,
            local: Some(local),
            verification: Verification::Succeeded,
            verified_at_ms: Some(verified_at_ms),
            ..Row::pending(None)
        }
    }

    /// The copy held here and when it was verified, if it is one this site may serve when
    /// the primary cannot be reached: verified, and found damaged by no check since.
    pub fn verified_local(&self) -> Option<(&Local, i64)> {
        let local = self.local.as_ref()?;
        if self.verification == Verification::Failed || self.checksum_mismatch {
            return None;
        }
        match (self.sync, self.verification, self.verified_at_ms) {
            (SyncState::Synced, Verification::Succeeded, Some(at)) => Some((local, at)),
            _ => self.local_verified_ms.map(|at| (local, at)),
        }
    }

    /// The byte of this row's sync state in the `s` index (a stored `started` is pending).
    fn state_byte(&self) -> u8 {
        match self.sync {
            SyncState::Pending | SyncState::Started => b'p',
            SyncState::Synced => b's',
            SyncState::Failed => b'f',
        }
    }

    /// Why the copy failed verification, when it did: what the damaged index holds.
    pub fn damage(&self) -> Option<&str> {
        (self.verification == Verification::Failed)
            .then(|| self.verification_failure.as_deref().unwrap_or("failed"))
    }
}

/// The `s` index key of `name` in state `state` (see [`Row::state_byte`]).
pub fn state_key(state: SyncState, name: &str) -> Vec<u8> {
    let row = Row {
        sync: state,
        ..Row::pending(None)
    };
    let mut k = Vec::with_capacity(2 + name.len());
    k.push(BY_STATE);
    k.push(row.state_byte());
    k.extend_from_slice(name.as_bytes());
    k
}

/// The name in a key made by [`state_key`].
pub fn state_key_name(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw.get(2..).unwrap_or_default())
        .map_err(|_| "a registry index key is not UTF-8".to_string())
}

pub fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The name in a key made by [`key`].
pub fn key_name(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw.get(1..).unwrap_or_default())
        .map_err(|_| "a registry key is not UTF-8".to_string())
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(raw: &'a [u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(raw).map_err(|e| format!("{what} is unreadable: {e}"))
}

/// The registry's counters, as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Catalog records.
    pub objects: u64,
    pub synced: u64,
    /// Rows waiting for a first or another attempt (a stored `started` included).
    pub pending: u64,
    pub failed: u64,
    /// Synced rows whose verification succeeded.
    pub verified: u64,
    pub verification_failed: u64,
    /// Queue markers.
    pub queued: u64,
    /// Synced rows whose verification is pending (a reverify under way).
    pub unverified: u64,
}

const FIELD_NAMES: [&str; FIELDS] = [
    "objects",
    "synced",
    "pending",
    "failed",
    "verified",
    "verification_failed",
    "queued",
    "unverified",
];

impl Tally {
    /// What one registry row adds to the counters (nothing for no row).
    pub fn of_row(row: Option<&Row>) -> Tally {
        let Some(r) = row else {
            return Tally::default();
        };
        let one = |b: bool| u64::from(b);
        Tally {
            synced: one(r.sync == SyncState::Synced),
            pending: one(matches!(r.sync, SyncState::Pending | SyncState::Started)),
            failed: one(r.sync == SyncState::Failed),
            verified: one(r.sync == SyncState::Synced && r.verification == Verification::Succeeded),
            verification_failed: one(r.verification == Verification::Failed),
            unverified: one(r.sync == SyncState::Synced && r.verification == Verification::Pending),
            ..Tally::default()
        }
    }

    pub fn plus(&self, other: &Tally) -> Tally {
        let (a, b) = (self.fields(), other.fields());
        Tally::from_fields(std::array::from_fn(|i| a[i].saturating_add(b[i])))
    }

    /// `self + add - sub`; an error when a counter would go below zero (the counters then
    /// disagree with the rows they count).
    fn moved(&self, add: &Tally, sub: &Tally) -> Result<Tally, String> {
        let (a, p, s) = (self.fields(), add.fields(), sub.fields());
        let mut out = [0u64; FIELDS];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = a[i]
                .checked_add(p[i])
                .and_then(|v| v.checked_sub(s[i]))
                .ok_or_else(|| format!("{DISAGREE} ({} would go out of range)", FIELD_NAMES[i]))?;
        }
        Ok(Tally::from_fields(out))
    }

    fn fields(&self) -> [u64; FIELDS] {
        [
            self.objects,
            self.synced,
            self.pending,
            self.failed,
            self.verified,
            self.verification_failed,
            self.queued,
            self.unverified,
        ]
    }

    fn from_fields(f: [u64; FIELDS]) -> Tally {
        let [objects, synced, pending, failed, verified, verification_failed, queued, unverified] =
            f;
        Tally {
            objects,
            synced,
            pending,
            failed,
            verified,
            verification_failed,
            queued,
            unverified,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 * FIELDS);
        out.push(TALLY_VERSION);
        for v in self.fields() {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> Result<Tally, String> {
        let unreadable = || {
            format!(
                "the registry counters are unreadable ({} bytes, version {:?})",
                raw.len(),
                raw.first()
            )
        };
        let (&version, rest) = raw.split_first().ok_or_else(unreadable)?;
        if version == WRONG_MARK {
            return Err(format!(
                "{}; they are counted again when the site next opens",
                String::from_utf8_lossy(rest)
            ));
        }
        if version == 1 {
            return Err(OLDER.to_string());
        }
        if version != TALLY_VERSION || rest.len() != 8 * FIELDS {
            return Err(unreadable());
        }
        let mut f = [0u64; FIELDS];
        for (slot, chunk) in f.iter_mut().zip(rest.chunks_exact(8)) {
            *slot = u64::from_be_bytes(chunk.try_into().map_err(|_| unreadable())?);
        }
        Ok(Tally::from_fields(f))
    }
}

pub type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

fn abort(reason: String) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(reason)
}

/// Writes `name`'s registry row (`None`: removes it), with the counters and the damaged
/// index in step; returns the row it replaced.
pub fn set_row(t: &TransactionalTree, name: &str, row: Option<&Row>) -> TxResult<Option<Row>> {
    let k = key(REGISTRY, name);
    let old = match row {
        Some(r) => t.insert(k, encode(r))?,
        None => t.remove(k)?,
    };
    let old: Option<Row> = match old {
        None => None,
        Some(raw) => Some(decode(&raw, "a registry row").map_err(abort)?),
    };
    row_changed(t, name, old.as_ref(), row)?;
    Ok(old)
}

/// The one place counters follow a registry row from `old` to `new`.
fn row_changed(
    t: &TransactionalTree,
    name: &str,
    old: Option<&Row>,
    new: Option<&Row>,
) -> TxResult<()> {
    shift(t, &Tally::of_row(new), &Tally::of_row(old))?;
    let (was, is) = (old.map(Row::state_byte), new.map(Row::state_byte));
    if was != is {
        if let Some(r) = old {
            t.remove(state_key(r.sync, name))?;
        }
        if let Some(r) = new {
            t.insert(state_key(r.sync, name), Vec::new())?;
        }
    }
    let (was, is) = (old.and_then(Row::damage), new.and_then(Row::damage));
    if was != is {
        match is {
            Some(why) => t.insert(key(DAMAGED, name), why.as_bytes())?,
            None => t.remove(key(DAMAGED, name))?,
        };
    }
    Ok(())
}

/// Writes `name`'s catalog record (`None`: removes it), counting it.
pub fn set_catalog(t: &TransactionalTree, name: &str, meta: Option<&ObjectMeta>) -> TxResult<()> {
    let k = key(CATALOG, name);
    let had = match meta {
        Some(m) => t.insert(k, encode(m))?,
        None => t.remove(k)?,
    }
    .is_some();
    let present = |b: bool| Tally {
        objects: u64::from(b),
        ..Tally::default()
    };
    shift(t, &present(meta.is_some()), &present(had))
}

/// Puts `name` in the sync queue, or takes it out, counting it.
pub fn set_queued(t: &TransactionalTree, name: &str, queued: bool) -> TxResult<()> {
    let k = key(QUEUE, name);
    let had = if queued {
        t.insert(k, Vec::new())?
    } else {
        t.remove(k)?
    }
    .is_some();
    let present = |b: bool| Tally {
        queued: u64::from(b),
        ..Tally::default()
    };
    shift(t, &present(queued), &present(had))
}

/// Moves the stored counters by `add - sub` (nothing to write when they are equal). Counters
/// that are missing, unreadable or would go out of range never fail the change that moves
/// them — the event log applies only durable entries, which must not be refused — they are
/// marked wrong instead (with the first reason), read as that error, and counted again at
/// the next open.
fn shift(t: &TransactionalTree, add: &Tally, sub: &Tally) -> TxResult<()> {
    if add == sub {
        return Ok(());
    }
    let moved = match t.get(TALLY_KEY)? {
        None => Err(MISSING.to_string()),
        Some(raw) if raw.first() == Some(&WRONG_MARK) => return Ok(()),
        Some(raw) => Tally::decode(&raw).and_then(|tally| tally.moved(add, sub)),
    };
    match moved {
        Ok(tally) => t.insert(TALLY_KEY, tally.encode())?,
        Err(why) => t.insert(TALLY_KEY, wrong_mark(&why))?,
    };
    Ok(())
}

/// A counter record that says why the counters are wrong.
fn wrong_mark(reason: &str) -> Vec<u8> {
    let mut raw = vec![WRONG_MARK];
    raw.extend_from_slice(reason.as_bytes());
    raw
}

/// The stored counters (`None`: never stored).
pub fn load(state: &sled::Tree) -> Result<Option<Tally>, String> {
    match state.get(TALLY_KEY).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(raw) => Tally::decode(&raw).map(Some),
    }
}

/// The first `limit` copies that failed verification, in name order, as `name: why`.
pub fn damaged(state: &sled::Tree, limit: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in state.scan_prefix([DAMAGED]).take(limit) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let why = String::from_utf8_lossy(&v);
        out.push(format!("{}: {why}", key_name(&k)?));
    }
    Ok(out)
}

/// What the registry rows add up to, collected by a scan open makes anyway (orphan
/// collection reads every row).
#[derive(Debug, Default)]
pub struct Recount {
    rows: Tally,
    /// Every copy that failed verification, with why, in name order.
    damaged: Vec<(String, String)>,
}

impl Recount {
    /// Counts `name`'s row (rows come in name order).
    pub fn row(&mut self, name: &str, row: &Row) {
        self.rows = self.rows.plus(&Tally::of_row(Some(row)));
        if let Some(why) = row.damage() {
            self.damaged.push((name.to_string(), why.to_string()));
        }
    }
}

/// Checks the stored counters and the damaged index at open against `seen` (in debug
/// builds also against a count of the catalog and queue keys: two more scans, two seconds
/// at a million objects, too slow for every open and failover), and stores a recount in
/// their place when they are missing, unreadable, found wrong or disagree. Returns why it
/// did, if it did.
pub fn reconcile(state: &sled::Tree, seen: Recount) -> Result<Option<String>, String> {
    let keys = |prefix: u8| -> Result<u64, String> {
        let mut n = 0;
        for item in state.scan_prefix([prefix]) {
            item.map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(n)
    };
    let mut indexed = Vec::new();
    for item in state.scan_prefix([DAMAGED]) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let why = String::from_utf8_lossy(&v).into_owned();
        indexed.push((key_name(&k)?.to_string(), why));
    }
    let rows = seen.rows;
    let why = match load(state) {
        Err(e) => Some(e),
        Ok(None) => Some(MISSING.to_string()),
        Ok(Some(s))
            if s != (Tally {
                objects: s.objects,
                queued: s.queued,
                ..rows
            }) =>
        {
            Some(format!(
                "{DISAGREE}: {s:?} are stored, the rows add up to {rows:?}"
            ))
        }
        Ok(Some(_)) if indexed != seen.damaged => {
            Some("the damaged index disagrees with the registry rows".to_string())
        }
        Ok(Some(s)) if cfg!(debug_assertions) => {
            let (objects, queued) = (keys(CATALOG)?, keys(QUEUE)?);
            (s.objects != objects || s.queued != queued).then(|| {
                format!("{DISAGREE}: {s:?} are stored, with {objects} catalog records and {queued} queued")
            })
        }
        Ok(Some(_)) => None,
    };
    if why.is_some() {
        let counted = Tally {
            objects: keys(CATALOG)?,
            queued: keys(QUEUE)?,
            ..rows
        };
        let mut batch = sled::Batch::default();
        for (name, _) in &indexed {
            batch.remove(key(DAMAGED, name));
        }
        for (name, why) in &seen.damaged {
            batch.insert(key(DAMAGED, name), why.as_bytes());
        }
        batch.insert(TALLY_KEY, counted.encode());
        state.apply_batch(batch).map_err(|e| e.to_string())?;
    }
    Ok(why)
}

/// Checks the `s` index at open and rebuilds it from the rows when it was never completed
/// (a database from before it), when the counters had to be counted again (`rebuilt`:
/// whatever made them wrong may have touched it too), or — in debug builds, where the whole
/// index is compared with the rows — when it disagrees. A release build does not read the
/// whole index at every open (a million keys); the index changes only in the transaction
/// that changes its row, as the counters do. Returns why it rebuilt it, if it did.
pub fn reconcile_index(state: &sled::Tree, rebuilt: bool) -> Result<Option<String>, String> {
    let complete = state.get(INDEX_KEY).map_err(|e| e.to_string())?;
    let why = if complete.as_deref() != Some(&[INDEX_VERSION][..]) {
        Some("the registry's state index was never built".to_string())
    } else if rebuilt {
        Some("the registry counters were counted again".to_string())
    } else if cfg!(debug_assertions) && index_keys(state)? != expected_index(state)? {
        Some("the registry's state index disagrees with the rows".to_string())
    } else {
        None
    };
    if why.is_some() {
        rebuild_index(state)?;
    }
    Ok(why)
}

pub(super) fn index_keys(state: &sled::Tree) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in state.scan_prefix([BY_STATE]) {
        let (k, _) = item.map_err(|e| e.to_string())?;
        out.push(k.to_vec());
    }
    Ok(out)
}

/// The index keys the rows call for, in key order.
pub(super) fn expected_index(state: &sled::Tree) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in state.scan_prefix([REGISTRY]) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let row: Row = decode(&v, "a registry row")?;
        out.push(state_key(row.sync, key_name(&k)?));
    }
    out.sort();
    Ok(out)
}

/// Writes the `s` index again from the rows. The completion mark goes first and comes back
/// last, so a crash halfway leaves a database that rebuilds it at the next open.
fn rebuild_index(state: &sled::Tree) -> Result<(), String> {
    const BATCH: usize = 10_000;
    let io = |e: sled::Error| e.to_string();
    state.remove(INDEX_KEY).map_err(io)?;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for k in index_keys(state)? {
        batch.remove(k);
        n += 1;
        if n % BATCH == 0 {
            state.apply_batch(std::mem::take(&mut batch)).map_err(io)?;
        }
    }
    for item in state.scan_prefix([REGISTRY]) {
        let (k, v) = item.map_err(io)?;
        let row: Row = decode(&v, "a registry row")?;
        batch.insert(state_key(row.sync, key_name(&k)?), Vec::new());
        n += 1;
        if n % BATCH == 0 {
            state.apply_batch(std::mem::take(&mut batch)).map_err(io)?;
        }
    }
    batch.insert(INDEX_KEY, vec![INDEX_VERSION]);
    state.apply_batch(batch).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sync: SyncState, verification: Verification) -> Row {
        Row {
            sync,
            verification,
            ..Row::pending(None)
        }
    }

    #[test]
    fn a_row_counts_once_in_its_sync_state_and_its_verification() {
        use SyncState::*;
        use Verification as V;
        let cases = [
            (Pending, V::Pending, [0, 1, 0, 0, 0]),
            (Started, V::Pending, [0, 1, 0, 0, 0]),
            (Synced, V::Succeeded, [1, 0, 0, 1, 0]),
            (Synced, V::Pending, [1, 0, 0, 0, 0]),
            (Failed, V::Succeeded, [0, 0, 1, 0, 0]),
            (Synced, V::Failed, [1, 0, 0, 0, 1]),
            (Pending, V::Failed, [0, 1, 0, 0, 1]),
        ];
        for (sync, verification, [s, p, f, v, vf]) in cases {
            let t = Tally::of_row(Some(&row(sync, verification)));
            let want = Tally {
                synced: s,
                pending: p,
                failed: f,
                verified: v,
                verification_failed: vf,
                unverified: u64::from(sync == Synced && verification == V::Pending),
                ..Tally::default()
            };
            assert_eq!(t, want, "{sync:?} {verification:?}");
        }
        assert_eq!(Tally::of_row(None), Tally::default());
    }

    #[test]
    fn counters_round_trip_and_a_bad_record_is_an_error() {
        let t = Tally {
            objects: 1,
            synced: 2,
            pending: 3,
            failed: 4,
            verified: 5,
            verification_failed: 6,
            queued: u64::MAX,
            unverified: 7,
        };
        assert_eq!(Tally::decode(&t.encode()), Ok(t));
        for bad in [&b""[..], b"\x02", &[2u8; 64], &[2u8; 66]] {
            let err = Tally::decode(bad).unwrap_err();
            assert!(err.contains("unreadable"), "{err}");
        }
        assert_eq!(Tally::decode(&[1u8; 57]), Err(OLDER.to_string()));
        let mut other_version = t.encode();
        other_version[0] = 3;
        assert!(Tally::decode(&other_version).is_err());
    }

    #[test]
    fn a_counter_never_goes_below_zero_or_wraps() {
        let one = Tally {
            failed: 1,
            ..Tally::default()
        };
        let err = Tally::default().moved(&Tally::default(), &one).unwrap_err();
        assert!(err.contains("failed"), "{err}");
        let full = Tally {
            failed: u64::MAX,
            ..Tally::default()
        };
        assert!(full.moved(&one, &Tally::default()).is_err());
        assert_eq!(one.moved(&one, &one), Ok(one));
    }
}
