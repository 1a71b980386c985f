//! The one replicated-log implementation, used by both the settings log and the event log.
//!
//! A log is three sled trees — entries by index, the head, and the materialised state a
//! [`Machine`] derives from the entries — written in one transaction and flushed before
//! anyone hears of the entry. A primary [`Log::append`]s; a secondary [`Log::apply`]s what
//! the primary streamed, after checking that it is the next index, does not lower the epoch
//! and extends its own hash chain. Subscribers see only durable entries, so nothing leaves a
//! primary that a crash could take back.
//!
//! Writes are serialised (one writer at a time, flush included). That costs group commit,
//! and buys a head that is always the last durable entry, with no reordering to reason about.

mod entry;
mod replica;
pub mod segments;

use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::{watch, Mutex};

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
    /// once, so it must depend on nothing but `state` and `entry`.
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
            LogError::Storage { source, .. } if crate::store::disk::sled_is_full(source) => {
                ErrorKind::Exhausted
            }
            LogError::Storage { .. } | LogError::Corrupt { .. } | LogError::Apply { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

impl LogError {
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

/// One replicated log over sled trees named `<name>/entries`, `<name>/meta`, `<name>/state`.
pub struct Log<M: Machine> {
    name: String,
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    state: sled::Tree,
    machine: M,
    /// Serialises writers, flush included (see the module doc).
    writer: Mutex<()>,
    published: watch::Sender<Published<M::View>>,
}

impl<M: Machine> Log<M> {
    /// Opens the log `name` in `db`, checking that the head matches the last entry.
    pub fn open(db: &sled::Db, name: &str, machine: M) -> Result<Log<M>, LogError> {
        let storage = |source| LogError::Storage {
            log: name.to_string(),
            source,
        };
        let entries = db.open_tree(format!("{name}/entries")).map_err(storage)?;
        let meta = db.open_tree(format!("{name}/meta")).map_err(storage)?;
        let state = db.open_tree(format!("{name}/state")).map_err(storage)?;
        let head = read_head(name, &meta)?;
        let last = entries.last().map_err(storage)?;
        let last_index = match &last {
            None => 0,
            Some((k, _)) => key_index(name, k)?,
        };
        if last_index != head.index {
            return Err(LogError::Corrupt {
                log: name.to_string(),
                index: last_index,
                detail: format!(
                    "the head says {} but the last entry is {last_index}",
                    head.index
                ),
            });
        }
        let view = machine.view(&state).map_err(|detail| LogError::Corrupt {
            log: name.to_string(),
            index: head.index,
            detail,
        })?;
        let (published, _) = watch::channel(Published {
            head,
            view: Arc::new(view),
        });
        Ok(Log {
            name: name.to_string(),
            db: db.clone(),
            entries,
            meta,
            state,
            machine,
            writer: Mutex::new(()),
            published,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last durable entry's head.
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

    /// The materialised state, for reads the view does not cover.
    pub fn state(&self) -> &sled::Tree {
        &self.state
    }

    /// Appends a new entry (primary). Returns once it is durable and published.
    pub async fn append(
        &self,
        epoch: u64,
        author: &str,
        payload: Vec<u8>,
    ) -> Result<Entry, LogError> {
        let _writer = self.writer.lock().await;
        let head = read_head(&self.name, &self.meta)?;
        if epoch < head.epoch {
            return Err(LogError::StaleEpoch {
                log: self.name.clone(),
                index: head.index + 1,
                epoch,
                current: head.epoch,
            });
        }
        let entry = Entry::new(
            &head.hash,
            head.index + 1,
            epoch,
            now_ms(),
            author.to_string(),
            payload,
        );
        self.admit(&entry)?;
        self.commit(std::slice::from_ref(&entry)).await?;
        Ok(entry)
    }

    /// Applies an entry streamed from the primary (secondary), after checking that it is
    /// the next index, keeps the epoch and extends this site's hash chain.
    pub async fn apply(&self, entry: Entry) -> Result<Applied, LogError> {
        self.apply_batch(vec![entry]).await.map(|new| {
            if new == 0 {
                Applied::Duplicate
            } else {
                Applied::New
            }
        })
    }

    /// Applies consecutive entries as [`Log::apply`] does each, in one transaction and one
    /// flush (how a follower catches up quickly). Entries this site already has are skipped
    /// if identical. At the first entry that is refused, the entries before it are still
    /// applied — exactly as one at a time — and the refusal is returned. Returns how many
    /// entries were new.
    pub async fn apply_batch(&self, batch: Vec<Entry>) -> Result<usize, LogError> {
        let _writer = self.writer.lock().await;
        let mut head = read_head(&self.name, &self.meta)?;
        let mut new = Vec::with_capacity(batch.len());
        let mut refused = None;
        for entry in batch {
            if let Err(e) = self.check_next(&head, &entry) {
                match e {
                    Checked::Duplicate => continue,
                    Checked::Refused(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            head = Head {
                index: entry.index,
                hash: entry.hash,
                epoch: entry.epoch,
            };
            new.push(entry);
        }
        if !new.is_empty() {
            self.commit(&new).await?;
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(new.len()),
        }
    }

    /// Whether `entry` may follow `head` here.
    fn check_next(&self, head: &Head, entry: &Entry) -> Result<(), Checked> {
        let refuse = |e| Err(Checked::Refused(e));
        if entry.index >= 1 && entry.index <= head.index {
            return match self.entry(entry.index) {
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

    /// Writes `entries` (consecutive, checked) with the head and state in one transaction,
    /// flushes, publishes. The caller holds the writer lock.
    async fn commit(&self, entries: &[Entry]) -> Result<(), LogError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let head = Head {
            index: last.index,
            hash: last.hash,
            epoch: last.epoch,
        };
        let encoded: Vec<([u8; 8], Vec<u8>)> = entries
            .iter()
            .map(|e| (e.index.to_be_bytes(), e.encode()))
            .collect();
        let head_raw = head.encode();
        (&self.entries, &self.meta, &self.state)
            .transaction(|(tree, meta, state)| {
                for (entry, (key, value)) in entries.iter().zip(&encoded) {
                    tree.insert(key, value.as_slice())?;
                    self.machine.apply(state, entry).map_err(|reason| {
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
        let view = self
            .machine
            .view(&self.state)
            .map_err(|detail| LogError::Corrupt {
                log: self.name.clone(),
                index: last.index,
                detail,
            })?;
        self.db.flush_async().await.map_err(|e| self.storage(e))?;
        self.published.send_replace(Published {
            head,
            view: Arc::new(view),
        });
        Ok(())
    }

    /// The durable entry at `index`, if any.
    pub fn entry(&self, index: u64) -> Result<Option<Entry>, LogError> {
        match self
            .entries
            .get(index.to_be_bytes())
            .map_err(|e| self.storage(e))?
        {
            None => Ok(None),
            Some(raw) => Entry::decode(index, &raw)
                .map(Some)
                .map_err(|detail| self.corrupt(index, detail)),
        }
    }

    /// Up to `max` durable entries from `from` (1-based) on, contiguous.
    pub fn range(&self, from: u64, max: usize) -> Result<Vec<Entry>, LogError> {
        let from = from.max(1);
        let last = self.head().index;
        if from > last || max == 0 {
            return Ok(Vec::new());
        }
        let to = last.min(from.saturating_add(max as u64 - 1));
        let mut out = Vec::with_capacity((to - from + 1) as usize);
        for item in self.entries.range(from.to_be_bytes()..=to.to_be_bytes()) {
            let (k, v) = item.map_err(|e| self.storage(e))?;
            let index = key_index(&self.name, &k)?;
            let expected = from + out.len() as u64;
            if index != expected {
                return Err(self.corrupt(expected, "missing from the log".to_string()));
            }
            out.push(Entry::decode(index, &v).map_err(|detail| self.corrupt(index, detail))?);
        }
        if out.len() as u64 != to - from + 1 {
            return Err(self.corrupt(from + out.len() as u64, "missing".to_string()));
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

    fn storage(&self, source: sled::Error) -> LogError {
        LogError::Storage {
            log: self.name.clone(),
            source,
        }
    }

    fn corrupt(&self, index: u64, detail: String) -> LogError {
        LogError::Corrupt {
            log: self.name.clone(),
            index,
            detail,
        }
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

fn read_head(name: &str, meta: &sled::Tree) -> Result<Head, LogError> {
    match meta.get(HEAD_KEY).map_err(|source| LogError::Storage {
        log: name.to_string(),
        source,
    })? {
        None => Ok(Head::default()),
        Some(raw) => Head::decode(&raw).ok_or_else(|| LogError::Corrupt {
            log: name.to_string(),
            index: 0,
            detail: format!("the head record has {} bytes", raw.len()),
        }),
    }
}

fn key_index(name: &str, key: &[u8]) -> Result<u64, LogError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| LogError::Corrupt {
            log: name.to_string(),
            index: 0,
            detail: format!("an entry key has {} bytes", key.len()),
        })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts entries and remembers the last payload: enough to see atomic apply.
    struct Counter;

    impl Machine for Counter {
        type View = (u64, Vec<u8>);

        fn apply(&self, state: &TransactionalTree, entry: &Entry) -> Result<(), String> {
            if entry.payload == b"poison" {
                return Err("poisoned payload".into());
            }
            let n = state
                .get(b"n")
                .map_err(|e| e.to_string())?
                .map(|raw| crate::store::decode_u64(&raw, "n").map_err(|e| e.to_string()))
                .transpose()?
                .unwrap_or(0);
            state
                .insert(b"n", &(n + 1).to_be_bytes())
                .map_err(|e| e.to_string())?;
            state
                .insert(b"last", entry.payload.as_slice())
                .map_err(|e| e.to_string())?;
            Ok(())
        }

        fn check(&self, entry: &Entry) -> Result<(), String> {
            if entry.payload == b"unchecked" {
                return Err("payload breaks the rules".into());
            }
            Ok(())
        }

        fn view(&self, state: &sled::Tree) -> Result<Self::View, String> {
            let n = match state.get(b"n").map_err(|e| e.to_string())? {
                None => 0,
                Some(raw) => crate::store::decode_u64(&raw, "n").map_err(|e| e.to_string())?,
            };
            let last = state
                .get(b"last")
                .map_err(|e| e.to_string())?
                .map(|v| v.to_vec())
                .unwrap_or_default();
            Ok((n, last))
        }
    }

    fn temp_db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    async fn primary_with(n: usize) -> Log<Counter> {
        let log = Log::open(&temp_db(), "t", Counter).unwrap();
        for i in 0..n {
            log.append(1, "alice", format!("p{i}").into_bytes())
                .await
                .unwrap();
        }
        log
    }

    #[tokio::test]
    async fn append_chains_hashes_and_applies_state() {
        let log = primary_with(3).await;
        let entries = log.range(1, 10).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let mut prev = GENESIS;
        for e in &entries {
            assert_eq!(e.chained_hash(&prev), e.hash);
            prev = e.hash;
        }
        assert_eq!(log.head().hash, prev);
        assert_eq!(*log.view(), (3, b"p2".to_vec()));
    }

    #[tokio::test]
    async fn a_secondary_replays_to_the_same_head_and_state() {
        let primary = primary_with(5).await;
        let secondary = Log::open(&temp_db(), "t", Counter).unwrap();
        for e in primary.range(1, 100).unwrap() {
            assert_eq!(secondary.apply(e).await.unwrap(), Applied::New);
        }
        assert_eq!(secondary.head(), primary.head());
        assert_eq!(*secondary.view(), *primary.view());
        let again = primary.entry(5).unwrap().unwrap();
        assert_eq!(secondary.apply(again).await.unwrap(), Applied::Duplicate);
        assert_eq!(secondary.view().0, 5);
    }

    #[tokio::test]
    async fn refuses_a_gap() {
        let primary = primary_with(3).await;
        let secondary = Log::open(&temp_db(), "t", Counter).unwrap();
        let third = primary.entry(3).unwrap().unwrap();
        let err = secondary.apply(third).await.unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Gap {
                    expected: 1,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not contiguous"), "{err}");
        assert_eq!(secondary.head(), Head::default());
    }

    #[tokio::test]
    async fn refuses_a_broken_hash_chain() {
        let primary = primary_with(2).await;
        let secondary = Log::open(&temp_db(), "t", Counter).unwrap();
        secondary
            .apply(primary.entry(1).unwrap().unwrap())
            .await
            .unwrap();
        let mut forged = primary.entry(2).unwrap().unwrap();
        forged.payload = b"tampered".to_vec();
        let err = secondary.apply(forged).await.unwrap_err();
        assert!(err.is_divergence(), "{err}");
        assert!(err.to_string().contains("diverged"), "{err}");
        assert_eq!(secondary.head().index, 1);
        assert_eq!(*secondary.view(), (1, b"p0".to_vec()));
    }

    #[tokio::test]
    async fn refuses_an_entry_from_another_history() {
        let ours = primary_with(2).await;
        let theirs = Log::open(&temp_db(), "t", Counter).unwrap();
        theirs
            .append(1, "mallory", b"other".to_vec())
            .await
            .unwrap();
        let err = ours
            .apply(theirs.entry(1).unwrap().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::Conflict { index: 1, .. }), "{err}");
    }

    #[tokio::test]
    async fn refuses_a_lower_epoch() {
        let primary = Log::open(&temp_db(), "t", Counter).unwrap();
        primary.append(3, "a", b"x".to_vec()).await.unwrap();
        let secondary = Log::open(&temp_db(), "t", Counter).unwrap();
        secondary
            .apply(primary.entry(1).unwrap().unwrap())
            .await
            .unwrap();
        let stale = Entry::new(&secondary.head().hash, 2, 2, 0, "old".into(), b"y".to_vec());
        let err = secondary.apply(stale).await.unwrap_err();
        assert!(
            matches!(
                err,
                LogError::StaleEpoch {
                    epoch: 2,
                    current: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = primary.append(2, "a", b"y".to_vec()).await.unwrap_err();
        assert!(matches!(err, LogError::StaleEpoch { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_failed_apply_leaves_no_trace() {
        let log = primary_with(1).await;
        let err = log.append(1, "a", b"poison".to_vec()).await.unwrap_err();
        assert!(matches!(err, LogError::Apply { index: 2, .. }), "{err}");
        assert_eq!(log.head().index, 1);
        assert!(log.entry(2).unwrap().is_none());
        assert_eq!(log.append(1, "a", b"ok".to_vec()).await.unwrap().index, 2);
    }

    #[tokio::test]
    async fn append_refuses_an_entry_over_the_cap_and_stores_nothing() {
        let log = primary_with(1).await;
        let head = log.head();
        let err = log
            .append(1, "a", vec![b'x'; MAX_ENTRY_BYTES])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LogError::TooLarge {
                    index: 2,
                    limit: MAX_ENTRY_BYTES,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            crate::types::Classify::kind(&err),
            crate::types::ErrorKind::Invalid
        );
        assert!(err.is_inadmissible());
        assert!(err.to_string().contains("the limit is 65536"), "{err}");
        let err = log
            .append(1, &"m".repeat(MAX_ENTRY_BYTES), b"p".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::TooLarge { .. }), "{err}");
        assert_eq!(log.head(), head);
        assert!(log.entry(2).unwrap().is_none());
        // Just under the cap is fine.
        let fits =
            MAX_ENTRY_BYTES - Entry::new(&GENESIS, 1, 1, 0, "a".into(), vec![]).encoded_len();
        let e = log.append(1, "a", vec![b'y'; fits]).await.unwrap();
        assert_eq!(e.encoded_len(), MAX_ENTRY_BYTES);
    }

    #[tokio::test]
    async fn append_refuses_a_bad_author() {
        let log = primary_with(0).await;
        for author in ["", "a\nb", "a\u{7}", &"x".repeat(MAX_AUTHOR_BYTES + 1)] {
            let err = log.append(1, author, b"p".to_vec()).await.unwrap_err();
            assert!(matches!(err, LogError::Invalid { .. }), "{author:?}: {err}");
            assert!(err.to_string().contains("author"), "{err}");
        }
        log.append(1, &"x".repeat(MAX_AUTHOR_BYTES), b"p".to_vec())
            .await
            .unwrap();
        assert_eq!(log.head().index, 1);
    }

    #[tokio::test]
    async fn a_secondary_refuses_an_oversized_or_unchecked_entry() {
        let primary = primary_with(1).await;
        let secondary = Log::open(&temp_db(), "t", Counter).unwrap();
        secondary
            .apply(primary.entry(1).unwrap().unwrap())
            .await
            .unwrap();
        // Well chained, but larger than any log may hold (a primary from before the cap).
        let big = Entry::new(
            &secondary.head().hash,
            2,
            1,
            0,
            "a".into(),
            vec![0; MAX_ENTRY_BYTES],
        );
        let err = secondary.apply(big).await.unwrap_err();
        assert!(matches!(err, LogError::TooLarge { index: 2, .. }), "{err}");
        // Refused by the machine's check, as its primary would have refused it.
        let bad = Entry::new(
            &secondary.head().hash,
            2,
            1,
            0,
            "a".into(),
            b"unchecked".to_vec(),
        );
        let err = secondary.apply(bad).await.unwrap_err();
        assert!(matches!(err, LogError::Invalid { index: 2, .. }), "{err}");
        assert!(err.is_inadmissible());
        assert_eq!(secondary.head().index, 1);
        assert_eq!(secondary.view().0, 1);
    }

    #[tokio::test]
    async fn reopening_keeps_head_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let head = {
            let db = sled::open(dir.path()).unwrap();
            let log = Log::open(&db, "t", Counter).unwrap();
            log.append(1, "a", b"one".to_vec()).await.unwrap();
            log.append(1, "a", b"two".to_vec()).await.unwrap();
            log.head()
        };
        let db = sled::open(dir.path()).unwrap();
        let log = Log::open(&db, "t", Counter).unwrap();
        assert_eq!(log.head(), head);
        assert_eq!(*log.view(), (2, b"two".to_vec()));
    }

    #[tokio::test]
    async fn tail_yields_existing_then_new_entries() {
        let log = Arc::new(primary_with(2).await);
        let mut tail = log.tail(2);
        let first = tail.next_batch(10).await.unwrap().unwrap();
        assert_eq!(first.iter().map(|e| e.index).collect::<Vec<_>>(), [2]);
        let waiter = tokio::spawn(async move { tail.next_batch(10).await.unwrap().unwrap() });
        log.append(1, "a", b"late".to_vec()).await.unwrap();
        let next = waiter.await.unwrap();
        assert_eq!(next[0].index, 3);
        assert_eq!(next[0].payload, b"late");
    }
}
