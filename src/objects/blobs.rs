//! Where a site keeps object bytes: files under its data directory ([`Files`], the
//! default) or an S3-compatible bucket ([`Bucket`]). Everything else (the registry, the
//! logs) stays in the data directory either way.
//!
//! Both keep one blob per version, named by [`blob_id`], and give the same guarantees:
//! bytes are written aside ([`Blobs::sink`]), durable when the sink finishes, and become a
//! version only by [`Blobs::install`]; staged bytes that are dropped leave nothing behind.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::bucket::{Bucket, Fault, S3Options, Upload};
pub use super::files::blob_id;
use super::files::{chunks, digest_file_paced, Digested, Files, Piece, Writing, QUEUE};

/// Which store a site's object bytes go to.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// Files under `<data_dir>/objects`.
    #[default]
    Disk,
    S3(S3Options),
}

/// A site's object bytes.
#[derive(Clone, Debug)]
pub enum Blobs {
    Disk(Files),
    Bucket(Arc<Bucket>),
}

/// Bytes written and made durable aside, not yet a version. Dropped, they are removed.
pub enum Staged {
    File(TempFile),
    Bucket(Upload),
}

/// A finished temporary file; removed when dropped unless installed.
pub struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Blobs {
    /// Opens the backend: the object directory, or the bucket (checking access first).
    pub async fn open(backend: &Backend, data_dir: &Path, site_id: &str) -> io::Result<Blobs> {
        match backend {
            Backend::Disk => Ok(Blobs::Disk(Files::open(data_dir)?)),
            Backend::S3(options) => Ok(Blobs::Bucket(
                Bucket::open(options, data_dir, site_id).await?,
            )),
        }
    }

    /// What holds the bytes, for messages.
    pub fn describe(&self) -> String {
        match self {
            Blobs::Disk(files) => format!("the object directory {}", files.root().display()),
            Blobs::Bucket(bucket) => bucket.describe().to_string(),
        }
    }

    /// The bucket, when the bytes are in one.
    pub fn bucket(&self) -> Option<&Arc<Bucket>> {
        match self {
            Blobs::Bucket(bucket) => Some(bucket),
            Blobs::Disk(_) => None,
        }
    }

    /// Why the bucket is failing, if the bytes are in one and it is.
    pub fn fault(&self) -> Option<Fault> {
        self.bucket().and_then(|b| b.fault())
    }

    /// The file of a version, when the bytes are files (tests damage them).
    pub fn file(&self, name: &str, sha256_hex: &str) -> Option<PathBuf> {
        match self {
            Blobs::Disk(files) => Some(files.path(name, sha256_hex)),
            Blobs::Bucket(_) => None,
        }
    }

    /// Starts writing bytes aside. `target` is the version they should be, when its
    /// checksum is known beforehand (a fetch): a bucket then uploads them in place, and
    /// [`Blobs::install`] only makes them visible. `size` is at most how many bytes will
    /// come, when known (the caller refuses more).
    pub fn sink(&self, target: Option<(&str, &str)>, size: Option<u64>) -> io::Result<Sink> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = match self {
            Blobs::Disk(files) => Writer::File(files.writer(rx)?),
            Blobs::Bucket(bucket) => Writer::Bucket(bucket.sink(target, size, rx)),
        };
        Ok(Sink { tx, writer })
    }

    /// Makes staged bytes `name`'s version `sha256_hex`, durably.
    pub async fn install(&self, staged: Staged, name: &str, sha256_hex: &str) -> io::Result<()> {
        match (self, staged) {
            (Blobs::Disk(files), Staged::File(mut temp)) => {
                let Some(path) = temp.0.take() else {
                    return Err(io::Error::other("the temporary file was already used"));
                };
                let (files, n, s) = (files.clone(), name.to_string(), sha256_hex.to_string());
                let moved = super::blocking(move || {
                    let result = files.install(&path, &n, &s).map(drop);
                    if result.is_err() {
                        let _ = std::fs::remove_file(&path);
                    }
                    result
                });
                moved.await
            }
            (Blobs::Bucket(_), Staged::Bucket(upload)) => upload.install(name, sha256_hex).await,
            _ => Err(io::Error::other("bytes staged in another backend")),
        }
    }

    /// Removes a version's blob, durably; one already gone is not an error.
    pub async fn remove(&self, name: &str, sha256_hex: &str) -> io::Result<()> {
        match self {
            Blobs::Disk(files) => {
                let (files, n, s) = (files.clone(), name.to_string(), sha256_hex.to_string());
                super::blocking(move || files.remove(&n, &s)).await
            }
            Blobs::Bucket(bucket) => bucket.remove(name, sha256_hex).await,
        }
    }

    /// Streams a version's bytes in chunks; `NotFound` when its blob is missing.
    pub async fn reader(
        &self,
        name: &str,
        sha256_hex: &str,
    ) -> io::Result<mpsc::Receiver<io::Result<Vec<u8>>>> {
        match self {
            Blobs::Disk(files) => {
                let path = files.path(name, sha256_hex);
                let file = super::blocking(move || std::fs::File::open(path)).await?;
                Ok(chunks(file))
            }
            Blobs::Bucket(bucket) => bucket.reader(name, sha256_hex).await,
        }
    }

    /// Reads a version's bytes back and hashes them, calling `pace` (on a blocking
    /// thread) with each read's length before it is hashed.
    pub async fn digest(
        &self,
        name: &str,
        sha256_hex: &str,
        mut pace: impl FnMut(usize) + Send + 'static,
    ) -> io::Result<Digested> {
        let hashed = match self {
            Blobs::Disk(files) => {
                let path = files.path(name, sha256_hex);
                tokio::task::spawn_blocking(move || digest_file_paced(&path, pace)).await
            }
            Blobs::Bucket(bucket) => {
                let mut rx = bucket.reader(name, sha256_hex).await?;
                tokio::task::spawn_blocking(move || {
                    let mut hasher = Sha256::new();
                    let mut size = 0u64;
                    while let Some(chunk) = rx.blocking_recv() {
                        let chunk = chunk?;
                        pace(chunk.len());
                        hasher.update(&chunk);
                        size += chunk.len() as u64;
                    }
                    Ok(Digested {
                        sha256: hasher.finalize().into(),
                        size,
                    })
                })
                .await
            }
        };
        hashed.map_err(|e| io::Error::other(format!("hashing failed: {e}")))?
    }

    /// Whether the store answers and is still this site's (always, for the disk: its
    /// failures are errors of their own).
    pub async fn answers(&self) -> bool {
        match self {
            Blobs::Disk(_) => true,
            Blobs::Bucket(bucket) => bucket.check().await,
        }
    }

    /// Whether a version's blob is there.
    pub async fn exists(&self, name: &str, sha256_hex: &str) -> io::Result<bool> {
        match self {
            Blobs::Disk(files) => Ok(files.path(name, sha256_hex).is_file()),
            Blobs::Bucket(bucket) => bucket.exists(name, sha256_hex).await,
        }
    }

    /// Removes every blob whose [`blob_id`] is not in `keep`; returns how many.
    pub async fn collect_garbage(&self, keep: HashSet<String>) -> io::Result<usize> {
        match self {
            Blobs::Disk(files) => {
                let files = files.clone();
                super::blocking(move || files.collect_garbage(&keep)).await
            }
            Blobs::Bucket(bucket) => bucket.collect_garbage(&keep).await,
        }
    }
}

enum Writer {
    File(Writing),
    Bucket(JoinHandle<io::Result<(Upload, Digested)>>),
}

/// Bytes being written aside (see [`Blobs::sink`]): hashed as they are written, held in a
/// few chunks at most, and removed if the sink is dropped before it finishes.
pub struct Sink {
    tx: mpsc::Sender<Piece>,
    writer: Writer,
}

impl Sink {
    /// Queues a chunk; waits while the store is behind.
    pub async fn write(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if self.tx.send(Piece::Chunk(chunk)).await.is_err() {
            // The writer stopped: its error is in the task.
            return Err(match self.finished().await {
                Err(e) => e,
                Ok(_) => io::Error::other("the writer finished early"),
            });
        }
        Ok(())
    }

    /// Makes the bytes durable aside; returns them staged, and what was written.
    pub async fn finish(mut self) -> io::Result<(Staged, Digested)> {
        let _ = self.tx.send(Piece::Finish).await;
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        self.finished().await
    }

    async fn finished(&mut self) -> io::Result<(Staged, Digested)> {
        let failed =
            |e: tokio::task::JoinError| io::Error::other(format!("the writer failed: {e}"));
        match &mut self.writer {
            Writer::File(task) => {
                let (path, d) = task.await.map_err(failed)??;
                Ok((Staged::File(TempFile(Some(path))), d))
            }
            Writer::Bucket(task) => {
                let (upload, d) = task.await.map_err(failed)??;
                Ok((Staged::Bucket(upload), d))
            }
        }
    }
}
