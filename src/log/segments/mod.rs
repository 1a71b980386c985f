//! A log store of append-only segment files, meant to hold the replicated logs instead of
//! sled (not yet wired into [`super::Log`]).
//!
//! What it promises:
//!
//! - **Acknowledged ⇒ `fdatasync`ed.** [`SegmentLog::append`] (and [`Pending::durable`])
//!   returns only once the entry's bytes are written and `sync_data` on their segment has
//!   returned; a new segment's directory entry is synced before anything in it is
//!   acknowledged. [`SegmentLog::read`], [`SegmentLog::range`] and [`SegmentLog::head`] see
//!   only acknowledged entries.
//! - **Group commit.** Appends that arrive while a write and sync are under way queue up and
//!   are written together, covered by the next single `sync_data`; each caller still returns
//!   only once its own bytes are synced.
//! - **Torn tails are cut.** On open, an incomplete record at the end of the last segment (a
//!   crash mid-write), or a last record with a bad checksum followed only by zeros, is cut
//!   off (the file truncated and synced) and reported in [`Recovery`]; it is never served.
//! - **Corruption is loud.** A bad record anywhere else — followed by further data, or in a
//!   segment that is not the last — fails the open with [`LogStoreError::Corrupt`]; nothing
//!   is skipped. The one ambiguity: a damaged length field that makes one of the last
//!   records seem to run past the end of the file looks exactly like a torn write (see
//!   `record.rs`).
//! - **After a failed write or sync, the store stops** ([`LogStoreError::Failed`]): the page
//!   cache can no longer be trusted to match the disk, so it takes nothing more until it is
//!   opened again (and recovery has looked at what the disk really holds).
//!
//! Layout: `<dir>/<first index, 20 digits>.seg`, each a run of records
//! `[len u32 LE][crc32c u32 LE][Entry::encode()]` with contiguous indices (the index is not
//! stored: it is the segment's first index plus the record's position). A segment is closed
//! (synced) once the next record would take it past [`Options::segment_bytes`].
//!
//! Index: every segment's first index and the offset of every record, in memory (8 bytes an
//! entry), rebuilt on open by reading and checksumming every segment. A read is a binary
//! search and one `pread`. The trade-off: open time and memory grow with the log (a million
//! entries: 8 MB, and a full read of the files at start); a sparse index (every Nth offset,
//! then a short scan) would cut both, at the price of reading a little more per lookup and
//! of checking only the last segment on open. Until the logs are compacted this one is the
//! simpler and also verifies every checksum at start.
//!
//! All file I/O goes through [`Io`], so tests can cut the power deterministically (`sim.rs`).
//! Blocking I/O runs on tokio's blocking pool; the writer is one task per store.

mod io;
#[cfg(test)]
mod power_loss;
mod record;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use io::{Io, IoFile, StdIo};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{oneshot, Notify};

use super::{Entry, Head};
use crate::types::{Classify, ErrorKind};

/// Default size at which a segment is closed and the next one begun.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
const SUFFIX: &str = ".seg";

#[derive(Debug, Clone)]
pub struct Options {
    /// A segment takes no record that would take it past this size (unless it is empty).
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogStoreError {
    #[error("log store: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("log store segment {segment} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
    #[error("log store: the next index is {expected}, not {got}")]
    NotContiguous { expected: u64, got: u64 },
    #[error("log store: entry {index} encodes to {len} bytes; a record holds at most {max}")]
    TooLarge { index: u64, len: usize, max: usize },
    #[error("log store stopped after a failed write or sync ({reason}); it must be opened again")]
    Failed {
        reason: String,
        /// The failure was a full disk: once there is space, opening it again heals it.
        disk_full: bool,
    },
    #[error("log store {dir} is in use by another instance")]
    Locked { dir: String },
    #[error("log store is closed")]
    Closed,
}

impl Classify for LogStoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            LogStoreError::NotContiguous { .. } => ErrorKind::Conflict,
            LogStoreError::TooLarge { .. } => ErrorKind::Invalid,
            LogStoreError::Closed | LogStoreError::Locked { .. } => ErrorKind::Unavailable,
            _ if self.is_disk_full() => ErrorKind::Exhausted,
            LogStoreError::Io { .. }
            | LogStoreError::Corrupt { .. }
            | LogStoreError::Failed { .. } => ErrorKind::Internal,
        }
    }
}

impl LogStoreError {
    /// True when the disk is full (a state the site waits out, not a fault).
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogStoreError::Io { source, .. } => crate::store::disk::is_full(source),
            LogStoreError::Failed { disk_full, .. } => *disk_full,
            _ => false,
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogStoreError {
    let path = path.display().to_string();
    move |e| LogStoreError::Io {
        op,
        path,
        source: Arc::new(e),
    }
}

/// What opening found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub entries: u64,
    /// The torn tail that was cut off, if any.
    pub cut: Option<Cut>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub segment: String,
    /// Where the file now ends.
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes: u64,
    pub reason: &'static str,
}

/// An append on its way to disk: [`Pending::durable`] resolves once it is synced.
pub struct Pending(oneshot::Receiver<Result<u64, LogStoreError>>);

impl Pending {
    /// Waits for the bytes to be synced; returns the index of the batch's last entry.
    pub async fn durable(self) -> Result<u64, LogStoreError> {
        self.0.await.unwrap_or(Err(LogStoreError::Closed))
    }
}

/// Acknowledged records of one segment, for reads.
struct Segment {
    name: String,
    start: u64,
    file: Arc<dyn IoFile>,
    offsets: Vec<u64>,
    /// End of the last acknowledged record.
    end: u64,
}

struct Index {
    segments: Vec<Segment>,
    head: Head,
}

/// Appends accepted but not yet handed to the writer.
struct Queue {
    next: u64,
    first: u64,
    bytes: Vec<u8>,
    sizes: Vec<u32>,
    last: Head,
    waiters: Vec<(u64, oneshot::Sender<Result<u64, LogStoreError>>)>,
    failed: Option<LogStoreError>,
    closed: bool,
}

struct Shared {
    /// Held while the store is open, so no second instance writes the same files; let go
    /// by [`SegmentLog::close`] (a closed store still serves reads of what it acknowledged,
    /// which another instance only ever appends to).
    lock: Mutex<Option<Box<dyn Send + Sync>>>,
    dir: PathBuf,
    io: Arc<dyn Io>,
    opts: Options,
    index: RwLock<Index>,
    queue: Mutex<Queue>,
    wake: Notify,
    syncs: AtomicU64,
}

/// The segment log. Share it as `Arc<SegmentLog>`; appends from many tasks commit in groups.
pub struct SegmentLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<WriterHandle>>,
}

/// Where the writer runs: a thread of its own on a real disk (it blocks in `write` and
/// `fdatasync`, and waking it costs one thread switch), a task on a simulated one.
enum WriterHandle {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

fn segment_name(start: u64) -> String {
    format!("{start:020}{SUFFIX}")
}

impl SegmentLog {
    /// Opens (or creates) the store in `dir`: scans every segment, cuts a torn tail, and
    /// starts the writer task. Must run inside a tokio runtime; it blocks while it reads.
    pub fn open(
        dir: impl Into<PathBuf>,
        io: Arc<dyn Io>,
        opts: Options,
    ) -> Result<(SegmentLog, Recovery), LogStoreError> {
        let dir = dir.into();
        io.create_dir_all(&dir)
            .map_err(io_err("create directory", &dir))?;
        let lock = io.lock(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => LogStoreError::Locked {
                dir: dir.display().to_string(),
            },
            _ => io_err("lock", &dir)(e),
        })?;
        let mut found = Vec::new();
        for name in io.list(&dir).map_err(io_err("list", &dir))? {
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            match stem.parse::<u64>() {
                Ok(start) if stem.len() == 20 && start > 0 => found.push((start, name)),
                _ => {
                    return Err(LogStoreError::Corrupt {
                        segment: name,
                        offset: 0,
                        reason: "not a segment name".into(),
                    })
                }
            }
        }
        found.sort();
        let mut recovery = Recovery {
            segments: found.len(),
            ..Recovery::default()
        };
        let mut segments: Vec<Segment> = Vec::new();
        let mut head = Head::default();
        let count = found.len();
        for (i, (start, name)) in found.into_iter().enumerate() {
            let last = i + 1 == count;
            let path = dir.join(&name);
            let expected = head.index + 1;
            if start != expected {
                return Err(LogStoreError::Corrupt {
                    segment: name,
                    offset: 0,
                    reason: format!("starts at index {start}, the log continues at {expected}"),
                });
            }
            let file = io.open(&path).map_err(io_err("open", &path))?;
            let len = file.size().map_err(io_err("stat", &path))?;
            // A segment is closed before it passes its size, by at most one record: anything
            // larger was not written by this store, and is not read into memory whole.
            let most = opts.segment_bytes.max(1) + record::HEADER as u64 + record::MAX_ENTRY as u64;
            if len > most {
                return Err(LogStoreError::Corrupt {
                    segment: name,
                    offset: most,
                    reason: format!("the segment has {len} bytes; a segment holds at most {most}"),
                });
            }
            let mut bytes = vec![0; len as usize];
            file.read_at(0, &mut bytes).map_err(io_err("read", &path))?;
            let scan = record::scan(&bytes, last).map_err(|d| LogStoreError::Corrupt {
                segment: name.clone(),
                offset: d.offset,
                reason: d.reason,
            })?;
            if let Some(reason) = scan.torn {
                file.truncate(scan.end).map_err(io_err("truncate", &path))?;
                file.sync_data().map_err(io_err("sync", &path))?;
                recovery.cut = Some(Cut {
                    segment: name.clone(),
                    offset: scan.end,
                    bytes: len - scan.end,
                    reason,
                });
            }
            if let Some(&at) = scan.offsets.last() {
                let index = start + scan.offsets.len() as u64 - 1;
                let raw = record::verify(&bytes[at as usize..scan.end as usize])
                    .expect("the scan checked it");
                let entry = Entry::decode(index, raw).map_err(|reason| LogStoreError::Corrupt {
                    segment: name.clone(),
                    offset: at,
                    reason,
                })?;
                head = Head {
                    index,
                    hash: entry.hash,
                    epoch: entry.epoch,
                };
            }
            segments.push(Segment {
                name,
                start,
                file,
                offsets: scan.offsets,
                end: scan.end,
            });
        }
        recovery.entries = head.index;
        match segments.last() {
            None => {
                let name = segment_name(1);
                let path = dir.join(&name);
                let file = io.create(&path).map_err(io_err("create", &path))?;
                io.sync_dir(&dir).map_err(io_err("sync directory", &dir))?;
                segments.push(Segment {
                    name,
                    start: 1,
                    file,
                    offsets: Vec::new(),
                    end: 0,
                });
            }
            Some(last) => {
                // After a process crash (not a power loss) the files may hold bytes the page
                // cache never wrote back: make what is served from now on durable.
                let path = dir.join(&last.name);
                last.file.sync_data().map_err(io_err("sync", &path))?;
                io.sync_dir(&dir).map_err(io_err("sync directory", &dir))?;
            }
        }
        let last = segments.last().expect("one segment at least");
        let writer = Writer {
            name: last.name.clone(),
            file: Arc::clone(&last.file),
            size: last.end,
            synced: last.end,
        };
        let shared = Arc::new(Shared {
            lock: Mutex::new(Some(lock)),
            dir,
            io,
            opts,
            index: RwLock::new(Index { segments, head }),
            queue: Mutex::new(Queue {
                next: head.index + 1,
                first: head.index + 1,
                bytes: Vec::new(),
                sizes: Vec::new(),
                last: head,
                waiters: Vec::new(),
                failed: None,
                closed: false,
            }),
            wake: Notify::new(),
            syncs: AtomicU64::new(0),
        });
        let task = if shared.io.inline() {
            WriterHandle::Task(tokio::spawn(run_writer(Arc::clone(&shared), writer)))
        } else {
            // The thread waits for appends on the runtime's `Notify`, outside the runtime.
            let (handle, task_shared) = (tokio::runtime::Handle::current(), Arc::clone(&shared));
            let thread = std::thread::Builder::new()
                .name("geo-log-writer".into())
                .spawn(move || handle.block_on(run_writer(task_shared, writer)))
                .map_err(io_err("start the writer thread for", &shared.dir))?;
            WriterHandle::Thread(thread)
        };
        Ok((
            SegmentLog {
                shared,
                writer: Mutex::new(Some(task)),
            },
            recovery,
        ))
    }

    /// Queues `entries` (contiguous, starting at the next index) for the writer, without
    /// waiting: cheap and synchronous, so a caller can assign indices and submit under one
    /// lock, then wait for durability outside it and let other appends join the group.
    pub fn submit(&self, entries: &[Entry]) -> Result<Pending, LogStoreError> {
        let (tx, rx) = oneshot::channel();
        let mut bytes = Vec::with_capacity(
            entries
                .iter()
                .map(|e| e.encoded_len() + record::HEADER)
                .sum(),
        );
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in entries {
            let before = bytes.len();
            let raw = entry.encode();
            if raw.len() > record::MAX_ENTRY {
                return Err(LogStoreError::TooLarge {
                    index: entry.index,
                    len: raw.len(),
                    max: record::MAX_ENTRY,
                });
            }
            record::encode_into(&mut bytes, &raw);
            sizes.push((bytes.len() - before) as u32);
        }
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &q.failed {
            return Err(e.clone());
        }
        if q.closed {
            return Err(LogStoreError::Closed);
        }
        for (i, entry) in entries.iter().enumerate() {
            let expected = q.next + i as u64;
            if entry.index != expected {
                return Err(LogStoreError::NotContiguous {
                    expected,
                    got: entry.index,
                });
            }
        }
        let Some(last) = entries.last() else {
            drop(q);
            let _ = tx.send(Ok(self.head().index));
            return Ok(Pending(rx));
        };
        if q.sizes.is_empty() {
            q.first = q.next;
        }
        q.bytes.extend_from_slice(&bytes);
        q.sizes.extend_from_slice(&sizes);
        q.next = last.index + 1;
        q.last = Head {
            index: last.index,
            hash: last.hash,
            epoch: last.epoch,
        };
        q.waiters.push((last.index, tx));
        drop(q);
        self.shared.wake.notify_one();
        Ok(Pending(rx))
    }

    /// Appends `entries` and returns the last one's index once they are on stable storage.
    pub async fn append(&self, entries: &[Entry]) -> Result<u64, LogStoreError> {
        self.submit(entries)?.durable().await
    }

    /// Where the segment files are.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The last acknowledged entry.
    pub fn head(&self) -> Head {
        self.shared
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .head
    }

    /// How many `sync_data` calls the writer has made (group commit makes it fewer than
    /// the appends).
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// The acknowledged entry at `index`, checked against its checksum.
    pub fn read(&self, index: u64) -> Result<Option<Entry>, LogStoreError> {
        if index == 0 {
            return Ok(None);
        }
        Ok(self.range(index, 1)?.pop())
    }

    /// Up to `max` acknowledged entries from `from` on (fewer at the head; one `pread` per
    /// segment touched).
    pub fn range(&self, from: u64, max: usize) -> Result<Vec<Entry>, LogStoreError> {
        let mut out = Vec::new();
        let mut index = from.max(1);
        let mut left = max as u64;
        while left > 0 {
            // Copy out what the read needs; the lock is not held during I/O.
            let (name, file, start, offsets, seg_end) = {
                let ix = self.shared.index.read().unwrap_or_else(|p| p.into_inner());
                if index > ix.head.index {
                    break;
                }
                let at = ix.segments.partition_point(|s| s.start <= index) - 1;
                let seg = &ix.segments[at];
                let first = (index - seg.start) as usize;
                let n = ((seg.offsets.len() - first) as u64).min(left) as usize;
                let upto = first + n;
                let end = seg.offsets.get(upto).copied().unwrap_or(seg.end);
                let mut offsets = seg.offsets[first..upto].to_vec();
                offsets.push(end);
                (
                    seg.name.clone(),
                    Arc::clone(&seg.file),
                    seg.start,
                    offsets,
                    end,
                )
            };
            let base = offsets[0];
            let mut buf = vec![0; (seg_end - base) as usize];
            file.read_at(base, &mut buf)
                .map_err(io_err("read", &self.shared.dir.join(&name)))?;
            for w in offsets.windows(2) {
                let corrupt = |reason| LogStoreError::Corrupt {
                    segment: name.clone(),
                    offset: w[0],
                    reason,
                };
                let raw = record::verify(&buf[(w[0] - base) as usize..(w[1] - base) as usize])
                    .map_err(corrupt)?;
                out.push(Entry::decode(index, raw).map_err(corrupt)?);
                index += 1;
                left -= 1;
            }
            debug_assert!(index > start);
        }
        Ok(out)
    }

    /// Stops taking appends, lets the writer finish what was queued, and waits for it. The
    /// directory stays locked until [`SegmentLog::release`] or the store is dropped.
    pub async fn close(&self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        let task = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        match task {
            Some(WriterHandle::Task(task)) => {
                let _ = task.await;
            }
            Some(WriterHandle::Thread(thread)) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            None => {}
        }
    }

    /// Lets go of the directory after [`SegmentLog::close`], so the store can be opened again
    /// while this handle still serves reads of what it acknowledged (another instance only
    /// ever appends after it).
    pub fn release(&self) {
        self.shared
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
        }
        self.shared.wake.notify_one();
    }
}

/// The segment being appended to; owned by the writer task.
struct Writer {
    name: String,
    file: Arc<dyn IoFile>,
    size: u64,
    /// Where the file ended at its last successful sync.
    synced: u64,
}

/// Records taken from the queue in one go.
struct Batch {
    first: u64,
    bytes: Vec<u8>,
    sizes: Vec<u32>,
    last: Head,
    waiters: Vec<(u64, oneshot::Sender<Result<u64, LogStoreError>>)>,
}

/// What a batch added to one segment, for the index.
struct Piece {
    name: String,
    start: u64,
    file: Arc<dyn IoFile>,
    offsets: Vec<u64>,
    end: u64,
}

async fn run_writer(shared: Arc<Shared>, mut writer: Writer) {
    loop {
        let batch = loop {
            let notified = shared.wake.notified();
            {
                let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                if !q.sizes.is_empty() {
                    let first = q.first;
                    q.first = q.next;
                    break Batch {
                        first,
                        bytes: std::mem::take(&mut q.bytes),
                        sizes: std::mem::take(&mut q.sizes),
                        last: q.last,
                        waiters: std::mem::take(&mut q.waiters),
                    };
                }
                if q.closed || q.failed.is_some() {
                    return;
                }
            }
            notified.await;
        };
        let result = write_batch(&shared, &mut writer, &batch);
        if shared.io.inline() {
            // A simulation: let other tasks queue appends between the write and the sync,
            // as they would while a real sync runs.
            tokio::task::yield_now().await;
        }
        // On a real disk this is the writer's own thread, which may block.
        let result = result.and_then(|pieces| sync(&shared, &writer).map(|()| pieces));
        match result {
            Ok(pieces) => {
                writer.synced = writer.size;
                publish(&shared, pieces, batch.last);
                for (index, tx) in batch.waiters {
                    let _ = tx.send(Ok(index));
                }
            }
            Err(e) => {
                // After a failed write or sync the page cache may hold bytes the disk does
                // not, marked clean: cut them off, so that opening the store again in this
                // process cannot read them back as if they were durable.
                if let Err(cut) = writer
                    .file
                    .truncate(writer.synced)
                    .and_then(|()| writer.file.sync_data())
                {
                    tracing::warn!(segment = %writer.name, error = %cut, "cannot cut the unsynced tail after a failed write; it is cut when the store opens again if torn");
                }
                fail(&shared, e, batch.waiters);
                return;
            }
        }
    }
}

/// Writes a batch, closing segments (synced) and beginning new ones (directory synced) as it
/// goes. The caller syncs the last segment before anything is acknowledged.
fn write_batch(
    shared: &Shared,
    w: &mut Writer,
    batch: &Batch,
) -> Result<Vec<Piece>, LogStoreError> {
    let piece = |w: &Writer, start| Piece {
        name: w.name.clone(),
        start,
        file: Arc::clone(&w.file),
        offsets: Vec::new(),
        end: w.size,
    };
    let mut pieces = vec![piece(w, 0)];
    let mut from = 0usize;
    let mut pos = 0usize;
    let mut at = w.size;
    for (i, &size) in batch.sizes.iter().enumerate() {
        let index = batch.first + i as u64;
        if w.size > 0 && w.size + u64::from(size) > shared.opts.segment_bytes {
            let path = shared.dir.join(&w.name);
            if pos > from {
                w.file
                    .write_at(at, &batch.bytes[from..pos])
                    .map_err(io_err("write", &path))?;
            }
            sync(shared, w)?;
            let name = segment_name(index);
            let path = shared.dir.join(&name);
            let file = shared.io.create(&path).map_err(io_err("create", &path))?;
            shared
                .io
                .sync_dir(&shared.dir)
                .map_err(io_err("sync directory", &shared.dir))?;
            *w = Writer {
                name,
                file,
                size: 0,
                synced: 0,
            };
            from = pos;
            at = 0;
            pieces.push(piece(w, index));
        }
        let p = pieces.last_mut().expect("a piece");
        p.offsets.push(w.size);
        w.size += u64::from(size);
        p.end = w.size;
        pos += size as usize;
    }
    if pos > from {
        w.file
            .write_at(at, &batch.bytes[from..pos])
            .map_err(io_err("write", &shared.dir.join(&w.name)))?;
    }
    Ok(pieces)
}

fn sync(shared: &Shared, w: &Writer) -> Result<(), LogStoreError> {
    shared.syncs.fetch_add(1, Ordering::Relaxed);
    w.file
        .sync_data()
        .map_err(io_err("sync", &shared.dir.join(&w.name)))
}

/// Makes a synced batch visible to readers.
fn publish(shared: &Shared, pieces: Vec<Piece>, last: Head) {
    let mut ix = shared.index.write().unwrap_or_else(|p| p.into_inner());
    for p in pieces {
        let current = ix.segments.last_mut().expect("one segment at least");
        if current.name == p.name {
            current.offsets.extend(p.offsets);
            current.end = p.end;
        } else {
            ix.segments.push(Segment {
                name: p.name,
                start: p.start,
                file: p.file,
                offsets: p.offsets,
                end: p.end,
            });
        }
    }
    ix.head = last;
}

/// Stops the store: every waiting and queued append hears why.
fn fail(
    shared: &Shared,
    e: LogStoreError,
    waiters: Vec<(u64, oneshot::Sender<Result<u64, LogStoreError>>)>,
) {
    let failed = match e {
        LogStoreError::Failed { .. } => e,
        other => LogStoreError::Failed {
            disk_full: other.is_disk_full(),
            reason: other.to_string(),
        },
    };
    let queued = {
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.failed = Some(failed.clone());
        q.bytes.clear();
        q.sizes.clear();
        std::mem::take(&mut q.waiters)
    };
    for (_, tx) in waiters.into_iter().chain(queued) {
        let _ = tx.send(Err(failed.clone()));
    }
}
