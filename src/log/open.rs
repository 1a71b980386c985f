//! Opening a log: its log store (waiting for an instance of the same log that is still
//! letting go), the entries an older layout kept in sled, and the state brought up to the
//! log.

use std::sync::Arc;

use tracing::{info, warn};

use super::segments::{LogStoreError, Options, SegmentLog, StdIo};
use super::{Entry, Head, LogError, Machine, State, OPEN_WAIT, REPLAY_BATCH};
use crate::store::Store;

/// Opens the log store of `name`, waiting (bounded) for an instance of the same log that is
/// still being dropped, as when a site opens again.
pub(super) async fn open_segments(store: &Store, name: &str) -> Result<SegmentLog, LogError> {
    let dir = store.log_dir(name);
    let deadline = tokio::time::Instant::now() + OPEN_WAIT;
    loop {
        match SegmentLog::open(&dir, Arc::new(StdIo), Options::default()) {
            Ok((log, recovery)) => {
                if let Some(cut) = &recovery.cut {
                    warn!(log = name, segment = %cut.segment, offset = cut.offset, bytes = cut.bytes, reason = cut.reason, "cut a torn tail off the log (a write the crash interrupted; it was never acknowledged)");
                }
                return Ok(log);
            }
            Err(LogStoreError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(source) => {
                return Err(LogError::Store {
                    log: name.to_string(),
                    source,
                })
            }
        }
    }
}

/// Moves the entries an older layout kept in the sled tree `<name>/entries` into the log
/// store, once: what the log store already has must match them, the rest is appended
/// (durably), and then the tree is dropped. Safe to interrupt at any point.
pub(super) async fn migrate(
    db: &sled::Db,
    name: &str,
    segments: &SegmentLog,
) -> Result<(), LogError> {
    let tree_name = format!("{name}/entries");
    if !db
        .tree_names()
        .iter()
        .any(|t| t.as_ref() == tree_name.as_bytes())
    {
        return Ok(());
    }
    let storage = |source| LogError::Storage {
        log: name.to_string(),
        source,
    };
    let corrupt = |index, detail| LogError::Corrupt {
        log: name.to_string(),
        index,
        detail,
    };
    let old = db.open_tree(&tree_name).map_err(storage)?;
    let have = segments.head();
    // Where both hold entries, they must be the same history.
    let old_last = match old.last().map_err(storage)? {
        None => 0,
        Some((k, _)) => <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(0, format!("an entry key has {} bytes", k.len())))?,
    };
    let overlap = old_last.min(have.index);
    if overlap > 0 {
        let ours = old
            .get(overlap.to_be_bytes())
            .map_err(storage)?
            .map(|raw| Entry::decode(overlap, &raw))
            .transpose()
            .map_err(|d| corrupt(overlap, d))?;
        let theirs = segments.read(overlap).map_err(|source| LogError::Store {
            log: name.to_string(),
            source,
        })?;
        if ours.map(|e| e.hash) != theirs.map(|e| e.hash) {
            return Err(corrupt(
                overlap,
                "the log store and the entries kept in the database differ".into(),
            ));
        }
    }
    let mut batch = Vec::new();
    let mut moved = 0u64;
    for item in old.range(have.index.to_be_bytes()..) {
        let (k, v) = item.map_err(storage)?;
        let index = <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(0, format!("an entry key has {} bytes", k.len())))?;
        if index <= have.index {
            continue;
        }
        batch.push(Entry::decode(index, &v).map_err(|d| corrupt(index, d))?);
        if batch.len() == REPLAY_BATCH {
            moved += append_all(name, segments, std::mem::take(&mut batch)).await?;
        }
    }
    moved += append_all(name, segments, batch).await?;
    db.drop_tree(tree_name.as_bytes()).map_err(storage)?;
    info!(
        log = name,
        moved, "moved the log's entries from the database into the log store"
    );
    Ok(())
}

async fn append_all(name: &str, segments: &SegmentLog, batch: Vec<Entry>) -> Result<u64, LogError> {
    if batch.is_empty() {
        return Ok(0);
    }
    segments
        .append(&batch)
        .await
        .map_err(|source| LogError::Store {
            log: name.to_string(),
            source,
        })?;
    Ok(batch.len() as u64)
}

/// Brings the state up to the log store's head by replaying what it lacks. A state that is
/// ahead of the log, whose head is not the log's entry at that index, or that cannot be
/// read, is refused loudly: the log store lost acknowledged entries or the database was
/// damaged, and a secondary's state also holds what only it knows (which copies it has), so
/// it is never wiped to be rebuilt. Returns the head and the view.
pub(super) fn recover<M: Machine>(
    segments: &SegmentLog,
    state: &State,
    machine: &M,
) -> Result<(Head, M::View), LogError> {
    let log = |source| LogError::Store {
        log: state.name.clone(),
        source,
    };
    let refuse = |index, detail| LogError::Corrupt {
        log: state.name.clone(),
        index,
        detail,
    };
    let durable = segments.head();
    let mut applied = state.head()?;
    if applied.index > durable.index {
        return Err(refuse(
            applied.index,
            format!(
                "the state has applied entry {} but the log store ends at entry {}: \
                 acknowledged entries are missing from {}",
                applied.index,
                durable.index,
                segments.dir().display()
            ),
        ));
    }
    if applied.index > 0
        && segments.read(applied.index).map_err(log)?.map(|e| e.hash) != Some(applied.hash)
    {
        return Err(refuse(
            applied.index,
            "the state's last applied entry is not the log store's entry at that index".into(),
        ));
    }
    state.view(machine, applied.index)?;
    if applied.index < durable.index {
        info!(log = %state.name, from = applied.index + 1, to = durable.index, "applying durable entries the state lacks");
    }
    while applied.index < durable.index {
        let batch = segments
            .range(applied.index + 1, REPLAY_BATCH)
            .map_err(log)?;
        if batch.is_empty() {
            return Err(refuse(
                applied.index + 1,
                "missing from the log store".into(),
            ));
        }
        applied = state.apply(machine, &batch)?;
    }
    let view = state.view(machine, applied.index)?;
    Ok((applied, view))
}
