//! Object bytes on disk (the default backend, see [`super::blobs`]): atomic installs,
//! streamed reads and writes, and garbage collection.
//!
//! A version lives at `objects/<2 hex>/<sha256(name)>-<sha256(bytes)>`. Names never become
//! paths (nothing a name holds can reach outside the directory, and `a` and `a/b` can both
//! exist), and each version has its own file, so installing one is: write a temporary file
//! → fsync → rename into place → fsync the directory, all before the sled commit that makes
//! the version current. A crash leaves either the old version current or the new one; a file
//! no registry row points at is an orphan of such a crash and [`Files::collect_garbage`]
//! removes it at startup.
//!
//! Writing and hashing run on blocking threads fed through small bounded channels, so a
//! transfer of any size holds a few chunks in memory and a slow disk pushes back on the
//! network instead of filling memory.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Bytes per chunk on the wire and per read from disk.
pub const CHUNK: usize = 256 * 1024;
/// Chunks queued between the network and a disk thread.
pub(crate) const QUEUE: usize = 4;

/// The name of the blob of `name`'s version `sha256_hex` (a file here, a key in a bucket):
/// names never become paths or keys, and each version has its own blob.
pub fn blob_id(name: &str, sha256_hex: &str) -> String {
    let id = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{id}-{sha256_hex}")
}

/// The sha256 and size of bytes that were written or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digested {
    pub sha256: [u8; 32],
    pub size: u64,
}

impl Digested {
    pub fn hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// The object directory of one site.
#[derive(Clone, Debug)]
pub struct Files {
    root: PathBuf,
    tmp: PathBuf,
}

impl Files {
    /// Opens `<data_dir>/objects`, creating it and its 256 shard directories (durably, so
    /// that commits running side by side never rely on a directory another one made), and
    /// empties its temporary directory (what is there was being written when the site
    /// stopped).
    pub fn open(data_dir: &Path) -> io::Result<Files> {
        let root = data_dir.join("objects");
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        let mut created = false;
        for shard in 0..=255u8 {
            let dir = root.join(hex::encode([shard]));
            if !dir.is_dir() {
                fs::create_dir(&dir)?;
                created = true;
            }
        }
        if created {
            sync_dir(&root)?;
            sync_dir(data_dir)?;
        }
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            fs::remove_file(entry.path())?;
        }
        Ok(Files { root, tmp })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the version of `name` with checksum `sha256_hex` lives.
    pub fn path(&self, name: &str, sha256_hex: &str) -> PathBuf {
        let id = blob_id(name, sha256_hex);
        self.root.join(&id[..2]).join(id)
    }

    /// Starts writing a new temporary file from what `rx` brings, on a blocking thread: it
    /// is fsynced on [`Piece::Finish`], and removed if the channel closes before that.
    pub(crate) fn writer(&self, rx: mpsc::Receiver<Piece>) -> io::Result<Writing> {
        let path = self.tmp.join(format!("{:016x}", rand::random::<u64>()));
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(tokio::task::spawn_blocking(move || {
            write_all(file, path, rx)
        }))
    }

    /// Moves a finished temporary file to the place of `name`'s version `sha256_hex`, and
    /// makes the rename durable.
    pub fn install(&self, temp: &Path, name: &str, sha256_hex: &str) -> io::Result<PathBuf> {
        let dest = self.path(name, sha256_hex);
        let dir = dest.parent().unwrap_or(&self.root);
        fs::rename(temp, &dest)?;
        sync_dir(dir)?;
        Ok(dest)
    }

    /// Removes a version's file, durably; a file that is already gone is not an error.
    pub fn remove(&self, name: &str, sha256_hex: &str) -> io::Result<()> {
        let path = self.path(name, sha256_hex);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes every object file whose name (a [`blob_id`]) is not in `keep`; returns how
    /// many it removed.
    pub fn collect_garbage(&self, keep: &HashSet<String>) -> io::Result<usize> {
        let mut removed = 0;
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?.path();
            if shard == self.tmp || !shard.is_dir() {
                continue;
            }
            for file in fs::read_dir(&shard)? {
                let file = file?.path();
                let kept = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| keep.contains(n));
                if !kept {
                    fs::remove_file(&file)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Streams what `source` yields in chunks of [`CHUNK`] bytes, read on a blocking thread.
pub fn chunks(source: impl Read + Send + 'static) -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || read_all(source, tx));
    rx
}

/// Hashes a file (blocking: call from a blocking thread).
pub fn digest_file(path: &Path) -> io::Result<Digested> {
    digest_file_paced(path, |_| {})
}

/// [`digest_file`], calling `pace` with each read's length before it is hashed (a
/// bandwidth limit blocks there).
pub fn digest_file_paced(path: &Path, mut pace: impl FnMut(usize)) -> io::Result<Digested> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        pace(n);
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Digested {
        sha256: hasher.finalize().into(),
        size,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a sink's writer receives.
pub(crate) enum Piece {
    Chunk(Vec<u8>),
    Finish,
}

/// A temporary file being written: its path and what was written, once finished.
pub(crate) type Writing = tokio::task::JoinHandle<io::Result<(PathBuf, Digested)>>;

fn write_all(
    mut file: File,
    path: PathBuf,
    mut rx: mpsc::Receiver<Piece>,
) -> io::Result<(PathBuf, Digested)> {
    let result = (|| {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Chunk(chunk) => {
                    hasher.update(&chunk);
                    file.write_all(&chunk)?;
                    size += chunk.len() as u64;
                }
                Piece::Finish => {
                    file.sync_all()?;
                    return Ok(Digested {
                        sha256: hasher.finalize().into(),
                        size,
                    });
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the transfer ended before it was complete",
        ))
    })();
    match result {
        Ok(d) => Ok((path, d)),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

fn read_all(mut file: impl Read, tx: mpsc::Sender<io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        let result = loop {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        if tx.blocking_send(Ok(buf)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sink_installs_atomically_and_an_abandoned_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path()).unwrap();
        let blobs = crate::objects::Blobs::Disk(files.clone());
        let mut sink = blobs.sink(None, None).unwrap();
        sink.write(b"hello ".to_vec()).await.unwrap();
        sink.write(b"world".to_vec()).await.unwrap();
        let (staged, d) = sink.finish().await.unwrap();
        assert_eq!(d.size, 11);
        assert_eq!(d.hex(), hex::encode(Sha256::digest(b"hello world")));
        blobs.install(staged, "a/b", &d.hex()).await.unwrap();
        let path = files.path("a/b", &d.hex());
        assert_eq!(fs::read(&path).unwrap(), b"hello world");
        assert_eq!(digest_file(&path).unwrap(), d);

        let mut sink = blobs.sink(None, None).unwrap();
        sink.write(b"partial".to_vec()).await.unwrap();
        drop(sink);
        // The writer thread removes its file once the channel closes.
        let tmp = dir.path().join("objects/tmp");
        for _ in 0..200 {
            if fs::read_dir(&tmp).unwrap().next().is_none() {
                break;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(fs::read_dir(&tmp).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn garbage_is_what_no_row_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path()).unwrap();
        let blobs = crate::objects::Blobs::Disk(files.clone());
        let mut keep = HashSet::new();
        for (i, name) in ["x", "y"].iter().enumerate() {
            let mut sink = blobs.sink(None, None).unwrap();
            sink.write(vec![i as u8; 10]).await.unwrap();
            let (staged, d) = sink.finish().await.unwrap();
            blobs.install(staged, name, &d.hex()).await.unwrap();
            if i == 0 {
                keep.insert(blob_id(name, &d.hex()));
            }
        }
        assert_eq!(files.collect_garbage(&keep).unwrap(), 1);
        assert_eq!(files.collect_garbage(&keep).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_reader_streams_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..CHUNK * 2 + 7).map(|i| i as u8).collect();
        fs::write(&path, &data).unwrap();
        let mut rx = chunks(File::open(&path).unwrap());
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(c) = rx.recv().await {
            got.extend(c.unwrap());
            chunks += 1;
        }
        assert_eq!(chunks, 3);
        assert_eq!(got, data);
    }
}
