//! Free space under the data directory: a full disk is a state a site lives through, not a
//! crash.
//!
//! The site checks free space (`statvfs`) every [`CHECK_EVERY`] and whenever an error says
//! `ENOSPC`. Below [`LOW_WATER`] it is *full*: it refuses the writes it would store (pushes
//! and deletes at the primary: [`DiskFull`]), its sync workers wait, and health says
//! CRITICAL — while reads, the mode and the gate go on. It keeps a reserve file of
//! [`RESERVE_BYTES`] under the data directory, created at first start and deleted when space
//! runs out (`ENOSPC`, or less free than the reserve), so the database can still open, flush
//! and record what it must; the reserve is made again once there is room for it and the
//! low-water mark. Everything resumes by itself when space is freed.
//!
//! sled keeps the first I/O error of a database and fails every later write with it, so
//! after an `ENOSPC` inside sled the database must be opened again: [`Disk::poisoned`] says
//! so, and the runtime reopens the site (in-process, on the same listeners) once there is
//! space again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::types::{Classify, ErrorKind};

/// The reserve file kept under the data directory.
pub const RESERVE_FILE: &str = "reserve";
/// Its size: room for the database to open, flush and record the state on a full disk.
pub const RESERVE_BYTES: u64 = 4 << 20;
/// Below this much free space (the reserve not counted) the site takes no writes it would
/// store.
pub const LOW_WATER: u64 = 8 << 20;
/// How often free space is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// `ENOSPC` errors seen in this process (any site): the monitor checks at once and, when
/// space is back, probes whether the database must be opened again.
static ENOSPC_SEEN: AtomicU64 = AtomicU64::new(0);

/// True when `e` says the disk is full (`ENOSPC`, or `EDQUOT`, a quota that is full); notes
/// it for the disk monitor.
pub fn is_full(e: &std::io::Error) -> bool {
    let full = e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    if full {
        ENOSPC_SEEN.fetch_add(1, Ordering::Relaxed);
    }
    full
}

/// True when sled failed because the disk is full. sled keeps the first I/O error as a
/// copy that keeps only its kind, so the kind is what is matched.
pub fn sled_is_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if is_full(io))
}

/// How many `ENOSPC` errors this process has seen.
pub fn enospc_seen() -> u64 {
    ENOSPC_SEEN.load(Ordering::Relaxed)
}

/// What the site knows of its disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskState {
    /// The data directory.
    pub path: PathBuf,
    /// Bytes free for this process (`f_bavail`), the reserve not counted.
    pub free: u64,
    /// Writes are refused: less than [`LOW_WATER`] free, or the database failed to write
    /// and has not been opened again.
    pub full: bool,
    /// The reserve file is in place.
    pub reserve: bool,
}

impl DiskState {
    /// The operator's sentence, when full.
    pub fn reason(&self) -> Option<String> {
        self.full.then(|| {
            format!(
                "disk full at {}: {} bytes free",
                self.path.display(),
                self.free
            )
        })
    }
}

/// A write refused because the disk is full.
///
/// RESOURCE_EXHAUSTED (HTTP 507), not FAILED_PRECONDITION nor UNAVAILABLE: gRPC defines it
/// for exactly this ("perhaps the entire file system is out of space"); it is not a refusal
/// of the request in this site's mode or role (FAILED_PRECONDITION), and not a transient
/// fault that clients should retry blindly at once (UNAVAILABLE): the write can succeed
/// only once someone frees space, and then it resumes by itself without a restart.
#[derive(Debug, Clone, thiserror::Error)]
#[error("disk full at {}: {free} bytes free; writes resume when space is freed", path.display())]
pub struct DiskFull {
    pub path: PathBuf,
    pub free: u64,
}

impl Classify for DiskFull {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Exhausted
    }
}

/// The data directory's disk: its state, its reserve, whether the database must reopen.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    state: watch::Sender<DiskState>,
    /// The database failed to write because the disk was full: it must be opened again.
    poisoned: AtomicBool,
}

impl Disk {
    /// The disk of `dir` (which exists), checked once.
    pub fn new(dir: &Path) -> Disk {
        let (state, _) = watch::channel(DiskState {
            path: dir.to_path_buf(),
            free: u64::MAX,
            full: false,
            reserve: dir.join(RESERVE_FILE).exists(),
        });
        Disk {
            dir: dir.to_path_buf(),
            state,
            poisoned: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> DiskState {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<DiskState> {
        self.state.subscribe()
    }

    /// `Err` when writes are refused. Also asks the file system (one `statvfs`), so writes
    /// arriving faster than the periodic check cannot take the disk below the low-water
    /// mark unnoticed.
    pub fn check_writable(&self) -> Result<(), DiskFull> {
        let refused = |s: &DiskState| DiskFull {
            path: s.path.clone(),
            free: s.free,
        };
        if self.state.borrow().full {
            return Err(refused(&self.state.borrow()));
        }
        match self.free_bytes() {
            Ok(free) if free < LOW_WATER => {
                self.state.send_modify(|s| {
                    s.free = free;
                    s.full = true;
                });
                tracing::error!(path = %self.dir.display(), free, "disk full: writes are refused until space is freed");
                Err(refused(&self.state.borrow()))
            }
            _ => Ok(()),
        }
    }

    /// Records that the database could not write for lack of space: it needs opening again.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.state.send_modify(|s| s.full = true);
    }

    pub fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Bytes free under the data directory for this process.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        free_bytes(&self.dir)
    }

    /// Deletes the reserve file, so the database has room; true if there was one.
    pub fn release_reserve(&self) -> bool {
        let path = self.dir.join(RESERVE_FILE);
        let released = std::fs::remove_file(&path).is_ok();
        if released {
            tracing::warn!(path = %path.display(), bytes = RESERVE_BYTES, "released the disk reserve: the disk is full");
        }
        self.state.send_modify(|s| s.reserve = false);
        released
    }

    /// Checks free space, releases or makes the reserve, and publishes the state (blocking:
    /// call off the async threads). `enospc` says an `ENOSPC` was seen since the last check.
    pub fn check(&self, enospc: bool) -> DiskState {
        let reserve = self.dir.join(RESERVE_FILE);
        let mut free = self.free_bytes().unwrap_or(u64::MAX);
        let mut held = reserve.exists();
        if held && (enospc || free < RESERVE_BYTES) {
            self.release_reserve();
            held = false;
            free = self.free_bytes().unwrap_or(free);
        }
        if !held && free >= LOW_WATER + RESERVE_BYTES {
            match make_reserve(&reserve) {
                Ok(()) => {
                    held = true;
                    free = self.free_bytes().unwrap_or(free - RESERVE_BYTES);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&reserve);
                    tracing::warn!(path = %reserve.display(), error = %e, "cannot make the disk reserve");
                }
            }
        }
        let full = free < LOW_WATER || self.poisoned();
        let next = DiskState {
            path: self.dir.clone(),
            free,
            full,
            reserve: held,
        };
        self.state.send_if_modified(|s| {
            let changed = *s != next;
            if s.full != next.full {
                match next.reason() {
                    Some(r) => tracing::error!(reason = %r, "disk full: writes are refused until space is freed"),
                    None => tracing::info!(free, "disk space is back: writes resume"),
                }
            }
            *s = next.clone();
            changed
        });
        next
    }
}

/// Writes the reserve file: real blocks (zeros), fsynced, not a sparse file.
fn make_reserve(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..RESERVE_BYTES / chunk.len() as u64 {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `statvfs`: bytes available to unprivileged users under `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a buffer statvfs fills.
    let r = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_recognised_also_as_sled_copies_it() {
        let raw = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_full(&raw));
        // sled keeps a copy with only the kind and the debug text.
        let copied = std::io::Error::new(raw.kind(), format!("{raw:?}"));
        assert!(sled_is_full(&sled::Error::Io(copied)));
        assert!(!is_full(&std::io::Error::from_raw_os_error(libc::EIO)));
    }

    #[test]
    fn the_reserve_is_made_when_there_is_room_and_the_state_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path());
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let s = disk.check(false);
        if s.free >= LOW_WATER {
            assert!(s.reserve && !s.full);
            assert_eq!(
                std::fs::metadata(dir.path().join(RESERVE_FILE))
                    .unwrap()
                    .len(),
                RESERVE_BYTES
            );
            assert!(disk.check_writable().is_ok());
        }
        disk.poison();
        let err = disk.check_writable().unwrap_err();
        assert!(err.to_string().starts_with("disk full at "), "{err}");
        assert!(err
            .to_string()
            .contains("writes resume when space is freed"));
    }
}
