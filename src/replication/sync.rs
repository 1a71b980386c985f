//! Sync workers (secondary): move the bytes the event log announced, at a bounded
//! concurrency, checking each transfer against the event's sha256 before it is installed.
//!
//! The scheduler scans only the registry's queue, round-robin from where it last stopped,
//! so a few objects that keep failing never starve the rest. A failure is recorded on the
//! object with its retry time (capped exponential backoff with jitter, see
//! [`crate::objects::retry_delay`]); none of this stops in maintenance mode.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{Bandwidth, SourceError};
use crate::log::now_ms;
use crate::objects::{Due, ObjectError, ObjectMeta, Objects, SyncJob};

/// Concurrent transfers when the configuration does not say.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Longest pause between scans when nothing wakes the scheduler.
const IDLE_RESCAN: Duration = Duration::from_secs(5);

/// How long to wait before asking again for a version the primary says was superseded:
/// the event that supersedes it is normally already on its way.
const SUPERSEDED_RETRY: Duration = Duration::from_millis(250);

/// Why a fetch gave no bytes.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The primary holds a newer version than the one asked for. Not a failure: the
    /// newer event resets the object's sync when it arrives.
    #[error("{0}")]
    Superseded(String),
    #[error(transparent)]
    Failed(#[from] SourceError),
}

/// Where a secondary fetches object bytes from (the primary's `FetchObject`, in production).
pub trait ObjectSource: Send + Sync + 'static {
    type Chunks: Stream<Item = Result<Vec<u8>, SourceError>> + Send + Unpin;

    /// The bytes of `name`'s current version, which must have checksum `sha256`.
    fn fetch(
        &self,
        name: &str,
        sha256: &str,
    ) -> impl Future<Output = Result<Self::Chunks, FetchError>> + Send;
}

/// Runs the sync workers until shutdown. Errors only when this site's storage fails.
pub async fn run<S: ObjectSource>(
    objects: Arc<Objects>,
    source: Arc<S>,
    concurrency: usize,
    bandwidth: Arc<Bandwidth>,
    shutdown: CancellationToken,
) -> Result<(), ObjectError> {
    let concurrency = concurrency.max(1);
    let mut events = objects.log().subscribe();
    let mut workers: JoinSet<(String, Result<(), ObjectError>)> = JoinSet::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    info!(
        concurrency,
        queued = objects.queued()?,
        "sync workers started"
    );
    let mut disk = objects.disk().watch();
    loop {
        // A full disk: no new transfers (each would fail and fill the registry with
        // failures) until space is freed; the ones running end as they can.
        let full = disk.borrow_and_update().full;
        let free = if full { 0 } else { concurrency - busy.len() };
        let due = if free > 0 {
            objects.sync_due(cursor.as_deref(), now_ms(), free, &busy)?
        } else {
            Due::default()
        };
        for name in due.now {
            cursor = Some(name.clone());
            busy.insert(name.clone());
            let (objects, source) = (Arc::clone(&objects), Arc::clone(&source));
            let bandwidth = Arc::clone(&bandwidth);
            let span = tracing::debug_span!("sync", object = %name);
            workers.spawn(
                async move {
                    let result = sync_one(&objects, source.as_ref(), &bandwidth, &name).await;
                    (name, result)
                }
                .instrument(span),
            );
        }
        let wait = due.next_ms.map_or(IDLE_RESCAN, |at| {
            Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64).min(IDLE_RESCAN)
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = events.changed() => {
                if changed.is_err() { break; }
            }
            _ = objects.requeued() => {}
            _ = disk.changed() => {}
            Some(done) = workers.join_next(), if !workers.is_empty() => {
                let (name, result) = done.map_err(|e| ObjectError::Corrupt(format!("a sync worker panicked: {e}")))?;
                busy.remove(&name);
                // Storage failures here are this site's, not the transfer's: stop, unless
                // the disk is full, which the site waits out (the object stays queued).
                match result {
                    Err(e) if e.is_disk_full() => {
                        warn!(object = %name, error = %e, "sync waits: the disk is full");
                    }
                    Err(e @ (ObjectError::Corrupt(_) | ObjectError::Log(_))) => return Err(e),
                    _ => {}
                }
            }
            _ = tokio::time::sleep(wait), if (free > 0 || workers.is_empty()) && !full => {}
        }
    }
    // Let transfers in progress end; what they did not record stays queued.
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    Ok(())
}

/// Brings one name in step with the catalog; records a failure on the object.
async fn sync_one<S: ObjectSource>(
    objects: &Objects,
    source: &S,
    bandwidth: &Bandwidth,
    name: &str,
) -> Result<(), ObjectError> {
    match objects.start_sync(name, now_ms())? {
        SyncJob::Nothing => Ok(()),
        SyncJob::Remove(local) => match objects.finish_remove(name, &local).await {
            Err(ObjectError::Io { what, source }) => {
                let error = format!("{what}: {source}");
                let jitter = 0.5 + rand::random::<f64>();
                objects.fail_sync(name, None, &error, now_ms(), jitter)?;
                warn!(object = name, %error, "cannot remove a deleted object's copy");
                Ok(())
            }
            other => other,
        },
        // `_started` shows the row as started until this arm ends.
        SyncJob::Fetch(meta, _started) => match fetch(objects, source, bandwidth, &meta).await {
            Ok(current) => {
                debug!(version = meta.version, current, "synced");
                Ok(())
            }
            Err(FetchError::Superseded(why)) => {
                debug!(object = name, version = meta.version, %why, "superseded; waiting for the newer event");
                let at = now_ms() + SUPERSEDED_RETRY.as_millis() as i64;
                objects.defer_sync(name, meta.version, at)?;
                Ok(())
            }
            Err(FetchError::Failed(SourceError(e))) => {
                let jitter = 0.5 + rand::random::<f64>();
                let row = objects.fail_sync(name, Some(meta.version), &e, now_ms(), jitter)?;
                let retries = row.as_ref().map_or(0, |r| r.retries);
                warn!(object = name, version = meta.version, retries, error = %e, "sync failed");
                Ok(())
            }
        },
    }
}

/// Fetches `meta`'s bytes into a temporary file and installs them; a failure carries the
/// message for the registry row.
async fn fetch<S: ObjectSource>(
    objects: &Objects,
    source: &S,
    bandwidth: &Bandwidth,
    meta: &ObjectMeta,
) -> Result<bool, FetchError> {
    let mut chunks = source.fetch(&meta.name, &meta.sha256).await?;
    fetch_into(objects, &mut chunks, meta, Some(bandwidth))
        .await
        .map_err(|e| FetchError::Failed(SourceError(e)))
}

async fn fetch_into<C>(
    objects: &Objects,
    chunks: &mut C,
    meta: &ObjectMeta,
    bandwidth: Option<&Bandwidth>,
) -> Result<bool, String>
where
    C: Stream<Item = Result<Vec<u8>, SourceError>> + Unpin,
{
    let (staged, digest) = receive(
        objects,
        chunks,
        &meta.name,
        meta.size,
        &meta.sha256,
        "the primary",
        "its event",
        bandwidth,
    )
    .await?;
    objects
        .finish_fetch(meta, staged, digest, now_ms())
        .await
        .map_err(|e| e.to_string())
}

/// Streams `chunks` into durable staged bytes that are exactly `size` bytes with checksum
/// `sha256` (the version of `name` they become), or nothing (`from` names the sender,
/// `announced` what announced the size, in the error).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn receive<C>(
    objects: &Objects,
    chunks: &mut C,
    name: &str,
    size: u64,
    sha256: &str,
    from: &str,
    announced: &str,
    bandwidth: Option<&Bandwidth>,
) -> Result<(crate::objects::Staged, crate::objects::Digested), String>
where
    C: Stream<Item = Result<Vec<u8>, SourceError>> + Unpin,
{
    let mut sink = objects
        .blobs()
        .sink(Some((name, sha256)), Some(size))
        .map_err(|e| format!("cannot start writing {name}: {e}"))?;
    // Never trust the source for size: stop as soon as it sends more than announced,
    // before those bytes are stored (dropping the sink removes what it wrote).
    let mut received = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| e.0)?;
        received = received.saturating_add(chunk.len() as u64);
        if received > size {
            return Err(format!(
                "{from} sent more than the {size} bytes {announced} announced; the copy was dropped"
            ));
        }
        // Paced before the next chunk is asked for: the sender then waits on TCP's window.
        if let Some(b) = bandwidth {
            b.take(chunk.len()).await;
        }
        sink.write(chunk)
            .await
            .map_err(|e| format!("cannot write: {e}"))?;
    }
    let (staged, digest) = sink
        .finish()
        .await
        .map_err(|e| format!("cannot write: {e}"))?;
    if digest.hex() != sha256 || digest.size != size {
        drop(staged);
        return Err(format!(
            "the bytes received from {from} ({} bytes, sha256 {}) do not match {announced} ({size} bytes, sha256 {sha256})",
            digest.size,
            digest.hex(),
        ));
    }
    Ok((staged, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use crate::store::Store;
    use crate::types::Role;

    /// A source that sends more bytes than the event announced, and keeps sending: a
    /// compromised or broken primary.
    fn endless(chunk: usize) -> impl Stream<Item = Result<Vec<u8>, SourceError>> + Unpin {
        tokio_stream::iter(std::iter::repeat_with(move || Ok(vec![7u8; chunk])))
    }

    #[tokio::test]
    async fn a_source_sending_more_than_announced_is_cut_off_before_the_disk_fills() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let settings = Arc::new(
            Settings::open(store.clone(), "s1", Role::Secondary, Some("p".into()), None)
                .await
                .unwrap(),
        );
        let objects = Objects::open(&store, dir.path(), settings).await.unwrap();
        let meta = ObjectMeta {
            name: "a".into(),
            kind: "upload".into(),
            size: 1 << 20,
            sha256: "0".repeat(64),
            version: 1,
            updated_at_ms: 0,
            updated_by: "admin".into(),
        };
        // Without the bound this would never end.
        let err = fetch_into(&objects, &mut endless(64 << 10), &meta, None)
            .await
            .unwrap_err();
        assert!(err.contains("more than the 1048576 bytes"), "{err}");
    }
}
