//! Object bytes in an S3-compatible bucket (`--objects-backend s3`), through the
//! `object_store` crate: signing, retries and multipart uploads are its work, not ours.
//!
//! The bucket holds what the data directory would: `<prefix>objects/<2 hex>/<id>-<sha256>`
//! per version (see [`blob_id`]), `<prefix>tmp/<random>` while a push whose
//! checksum is not yet known is staged, and `<prefix>site`, the marker naming the site
//! that owns the prefix (two sites sharing one prefix would collect each other's objects
//! as garbage).
//!
//! Durability is the server's acknowledgement of a PUT or of a completed multipart upload:
//! nothing is visible under its key before either, so a transfer cut short leaves nothing
//! a reader can see. A multipart upload is recorded in a local journal (fsynced) before its
//! first part, so the parts of one a crash interrupted are aborted at the next start.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use super::files::{blob_id, Digested, Piece, CHUNK, QUEUE};

/// Bytes per multipart part (S3's smallest part, but for the last, is 5 MiB). An object
/// smaller than one part is kept in memory and stored with one PUT.
pub const PART: usize = 8 * 1024 * 1024;
/// Parts uploading at once for one transfer: the next part fills while one uploads.
const PARTS_IN_FLIGHT: usize = 2;
/// How often the bucket is asked whether it answers, when nothing else asked it.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// S3 takes at most this many parts in one upload: a larger object gets larger parts.
const MAX_PARTS: u64 = 9_000;
/// Bytes all transfers of a site may hold in memory at once (parts being filled or sent,
/// objects below a part), in MiB: past it, transfers wait (and their senders with them)
/// rather than the site growing without bound.
const BUFFER_BUDGET_MIB: u32 = 256;
const MIB: u64 = 1024 * 1024;
/// Longest error text kept from the bucket (an error body is the server's to choose).
const MAX_ERROR: usize = 300;
/// Largest marker read.
const MAX_MARKER: u64 = 256;

/// Where a site's objects go and how it signs in.
#[derive(Clone)]
pub struct S3Options {
    /// The server, e.g. `http://127.0.0.1:3900`; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Keys start with this (empty, or ends in `/`).
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The secret is never printed.
impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl S3Options {
    /// `bucket B (prefix P) at E`, for messages.
    pub fn describe(&self) -> String {
        let prefix = match self.prefix.as_str() {
            "" => String::new(),
            p => format!(" (prefix {p})"),
        };
        let at = self.endpoint.as_deref().unwrap_or("AWS S3");
        format!("bucket {}{prefix} at {at}", self.bucket)
    }
}

/// What a site keeps directly under its prefix. No prefix has a segment of these names,
/// so one site's prefix never lies inside another's `objects/` or `tmp/` (whose keys the
/// other would remove as orphans).
const RESERVED: [&str; 3] = ["objects", "tmp", "site"];

/// Checks a prefix: path segments of letters, digits, `-`, `_` and `.`, no `.` or `..`
/// segment, none of [`RESERVED`]; returns it ending in `/` (or empty).
pub fn normalise_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.len() > 200 {
        return Err("the prefix is longer than 200 bytes".into());
    }
    for segment in trimmed.split('/') {
        let fine = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !fine {
            return Err(format!(
                "the prefix {prefix:?} has a segment {segment:?}: use letters, digits, '-', '_' and '.' between '/'"
            ));
        }
        if RESERVED.contains(&segment) {
            return Err(format!(
                "the prefix {prefix:?} has a segment {segment:?}, a name a site keeps under its own prefix; choose another"
            ));
        }
    }
    Ok(format!("{trimmed}/"))
}

/// Why the bucket last failed, while it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub error: String,
    pub since_ms: i64,
    /// A write failed: only a write that succeeds ends it (reads that still work do not
    /// show that writes do).
    pub write: bool,
}

/// Which kind of request an answer was to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// One site's bucket.
pub struct Bucket {
    store: Arc<AmazonS3>,
    prefix: String,
    describe: String,
    /// Multipart uploads begun and not yet completed or aborted, one file each.
    journal: PathBuf,
    fault: Mutex<Option<Fault>>,
    /// The site that owns the prefix (the marker's text).
    site_id: String,
    /// [`BUFFER_BUDGET_MIB`], one permit a MiB.
    budget: Arc<tokio::sync::Semaphore>,
    /// The marker was written by this start: the prefix was new (or emptied).
    fresh: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Bucket {
    /// Connects, checks that the credentials may read and write under the prefix and that
    /// no other site owns it, aborts the multipart uploads a crash left, and empties the
    /// staging area. Fails with a clear error rather than starting a site that cannot
    /// store anything.
    pub async fn open(
        options: &S3Options,
        data_dir: &Path,
        site_id: &str,
    ) -> io::Result<Arc<Bucket>> {
        // reqwest is built without a TLS provider of its own: it uses the process's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let describe = options.describe();
        // No deadline on a whole request: reading a large object, or sending one to a slow
        // reader, takes as long as it takes. A connection that goes silent is cut instead.
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout_disabled()
            .with_config(object_store::ClientConfigKey::ReadTimeout, "30s");
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(&options.secret_access_key)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        // The signature covers the payload's sha256 only where nothing else protects the
        // bytes on their way: plain HTTP beyond loopback. Over TLS or loopback, hashing
        // every byte once more for the signature (and again at the server) buys nothing:
        // what is uploaded was hashed here and is checked again by verification.
        let exposed = options.endpoint.as_deref().is_some_and(|e| {
            e.starts_with("http://") && crate::types::check_plaintext(e, false, false).is_err()
        });
        builder = builder.with_unsigned_payload(!exposed);
        let store = builder
            .build()
            .map_err(|e| io::Error::other(format!("{describe}: {e}")))?;
        let journal = data_dir.join("bucket-uploads");
        fs::create_dir_all(&journal)?;
        let bucket = Arc::new(Bucket {
            store: Arc::new(store),
            prefix: options.prefix.clone(),
            describe,
            journal,
            fault: Mutex::new(None),
            site_id: site_id.to_string(),
            budget: Arc::new(tokio::sync::Semaphore::new(BUFFER_BUDGET_MIB as usize)),
            fresh: std::sync::atomic::AtomicBool::new(false),
        });
        bucket.claim().await?;
        bucket.abort_journalled().await?;
        let swept = bucket.remove_all(&bucket.key("tmp")).await?;
        if swept > 0 {
            info!(swept, "removed staged objects a stop interrupted");
        }
        let weak = Arc::downgrade(&bucket);
        tokio::spawn(probe(weak));
        Ok(bucket)
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The prefix had no marker when the site started: whatever the registry says this
    /// site holds, the bucket may not.
    pub fn fresh(&self) -> bool {
        self.fresh.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why the bucket is failing, if it is.
    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().map(|f| f.clone()).unwrap_or(None)
    }

    fn key(&self, rest: &str) -> Key {
        Key::from(format!("{}{rest}", self.prefix))
    }

    /// The key of `name`'s version `sha256_hex`.
    pub fn version_key(&self, name: &str, sha256_hex: &str) -> Key {
        let id = blob_id(name, sha256_hex);
        self.key(&format!("objects/{}/{id}", &id[..2]))
    }

    /// Records how a read went: a refusal or silence is a fault until a later request
    /// is answered; "not found" is an answer.
    fn note<T>(&self, result: object_store::Result<T>) -> io::Result<T> {
        self.record(Op::Read, result)
    }

    /// [`Bucket::note`] for a write.
    fn note_write<T>(&self, result: object_store::Result<T>) -> io::Result<T> {
        self.record(Op::Write, result)
    }

    fn record<T>(&self, op: Op, result: object_store::Result<T>) -> io::Result<T> {
        let result = result.map_err(|e| to_io(&self.describe, e));
        match &result {
            Ok(_) => self.clear(op),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.clear(op),
            Err(e) => self.fail(op, e.to_string()),
        }
        result
    }

    fn clear(&self, op: Op) {
        if let Ok(mut fault) = self.fault.lock() {
            if op == Op::Write || fault.as_ref().is_some_and(|f| !f.write) {
                *fault = None;
            }
        }
    }

    fn fail(&self, op: Op, error: String) {
        if let Ok(mut fault) = self.fault.lock() {
            if fault.is_none() {
                warn!(bucket = %self.describe, %error, "object storage is failing");
            }
            let since_ms = fault
                .as_ref()
                .map_or_else(crate::log::now_ms, |f| f.since_ms);
            let write = op == Op::Write || fault.as_ref().is_some_and(|f| f.write);
            *fault = Some(Fault {
                error,
                since_ms,
                write,
            });
        }
    }

    /// The marker's text, read with a bound on its size.
    async fn marker(&self) -> io::Result<String> {
        let marker = self.key("site");
        let found = self.note(self.store.get(&marker).await)?;
        if found.meta.size > MAX_MARKER {
            return Err(io::Error::other(format!(
                "object storage {}: its marker {marker} is {} bytes, not a site's name",
                self.describe, found.meta.size
            )));
        }
        let bytes = self.note(found.bytes().await)?;
        Ok(String::from_utf8_lossy(&bytes)
            .trim()
            .chars()
            .take(64)
            .collect())
    }

    /// Asks the bucket whether it answers reads and writes and still holds this site's
    /// marker (a bucket or prefix removed or replaced answers every read "not found");
    /// true when it does. The health probe, and what the verifier asks before it condemns
    /// a copy it could not read.
    pub async fn check(&self) -> bool {
        let marker = self.key("site");
        let why = match self.marker().await {
            Ok(owner) if owner == self.site_id => None,
            Ok(owner) => Some(format!("its marker {marker} names site {owner:?}, not this one")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(format!(
                "this site's marker {marker} is gone: the bucket or the prefix was removed or replaced"
            )),
            Err(_) => return false,
        };
        if let Some(why) = why {
            self.fail(Op::Read, format!("object storage {}: {why}", self.describe));
            return false;
        }
        let put = self
            .store
            .put(&marker, self.site_id.as_bytes().to_vec().into());
        self.note_write(put.await).is_ok()
    }

    /// Writes the marker naming this site, or refuses a prefix another site owns.
    async fn claim(&self) -> io::Result<()> {
        match self.marker().await {
            Ok(owner) if owner == self.site_id => Ok(()),
            Ok(owner) => Err(io::Error::other(format!(
                "object storage {} belongs to site {owner:?}, not {:?}; each site needs a bucket or prefix of its own",
                self.describe, self.site_id
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let marker = self.key("site");
                let put = self.store.put(&marker, self.site_id.as_bytes().to_vec().into());
                self.note_write(put.await)?;
                self.fresh.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Aborts the multipart uploads the journal lists (a stop interrupted them).
    async fn abort_journalled(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.journal)? {
            let path = entry?.path();
            let text = fs::read_to_string(&path).unwrap_or_default();
            if let Some((key, id)) = text.trim().split_once('\n') {
                let key = Key::from(key);
                match self.store.abort_multipart(&key, &id.to_string()).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    // Already completed or aborted, S3 says with a 4xx: nothing to keep.
                    Err(e) if client_error(&e) => {}
                    Err(e) => {
                        // Kept in the journal: the next start tries again.
                        warn!(%key, error = %e, "cannot abort an interrupted upload");
                        continue;
                    }
                }
            }
            fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// Deletes every key under `prefix`; returns how many.
    async fn remove_all(&self, prefix: &Key) -> io::Result<usize> {
        self.remove_unless(prefix, |_| false).await
    }

    /// Deletes every key under `prefix` whose last segment `keep` does not want.
    async fn remove_unless(&self, prefix: &Key, keep: impl Fn(&str) -> bool) -> io::Result<usize> {
        let mut listed = self.store.list(Some(prefix));
        let mut doomed = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = self.note(meta)?;
            if !meta.location.filename().is_some_and(&keep) {
                doomed.push(meta.location);
            }
        }
        for key in &doomed {
            match self.note_write(self.store.delete(key).await) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(doomed.len())
    }

    /// Removes every version key whose id is not in `keep`; returns how many. With
    /// nothing to keep it removes nothing: a registry that names no object next to a
    /// bucket that holds some is another data directory's (a backup restored, a host set
    /// up again), and the bytes are worth more than the space.
    pub async fn collect_garbage(&self, keep: &HashSet<String>) -> io::Result<usize> {
        if keep.is_empty() {
            let mut listed = self.store.list(Some(&self.key("objects")));
            if let Some(first) = listed.next().await {
                let first = self.note(first)?;
                warn!(
                    bucket = %self.describe,
                    example = %first.location,
                    "this site's registry names no object but its prefix holds some: left in place; remove them by hand if no site needs them"
                );
                return Ok(0);
            }
        }
        self.remove_unless(&self.key("objects"), |id| keep.contains(id))
            .await
    }

    /// Starts an upload: straight to `name`'s version `sha` when the checksum is known
    /// (what is uploaded is checked before it is made visible), else to a staging key.
    /// `size`, when known, is an upper bound on the bytes (the callers refuse more): it
    /// sizes the parts and what the upload takes of the memory budget.
    pub(crate) fn sink(
        self: &Arc<Self>,
        target: Option<(&str, &str)>,
        size: Option<u64>,
        rx: mpsc::Receiver<Piece>,
    ) -> tokio::task::JoinHandle<io::Result<(Upload, Digested)>> {
        let (key, direct) = match target {
            Some((name, sha)) => (self.version_key(name, sha), true),
            None => (
                self.key(&format!("tmp/{:016x}", rand::random::<u64>())),
                false,
            ),
        };
        let bucket = Arc::clone(self);
        tokio::spawn(async move { bucket.upload(key, direct, size, rx).await })
    }

    /// Takes `mib` of the memory budget, waiting while other transfers hold it.
    async fn reserve(&self, mib: u32) -> io::Result<OwnedSemaphorePermit> {
        Arc::clone(&self.budget)
            .acquire_many_owned(mib.clamp(1, BUFFER_BUDGET_MIB))
            .await
            .map_err(|_| io::Error::other("the site is stopping"))
    }

    async fn upload(
        self: Arc<Self>,
        key: Key,
        direct: bool,
        expected: Option<u64>,
        mut rx: mpsc::Receiver<Piece>,
    ) -> io::Result<(Upload, Digested)> {
        let part_size = part_size(expected);
        // A part's worth of the budget, or the whole object's when it is smaller.
        let part_mib = |sent: u64| {
            let left = expected.map_or(part_size as u64, |e| e.saturating_sub(sent));
            left.min(part_size as u64).div_ceil(MIB) as u32
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut part: Vec<Bytes> = Vec::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut filled = 0usize;
        let mut upload: Option<Multipart> = None;
        let result = loop {
            match rx.recv().await {
                Some(Piece::Chunk(chunk)) => {
                    if held.is_none() {
                        match self.reserve(part_mib(size)).await {
                            Ok(permit) => held = Some(permit),
                            Err(e) => break Err(e),
                        }
                    }
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    filled += chunk.len();
                    part.push(Bytes::from(chunk));
                    if filled >= part_size {
                        let payload: PutPayload = std::mem::take(&mut part).into_iter().collect();
                        filled = 0;
                        let m = match &mut upload {
                            Some(m) => m,
                            None => match self.begin(&key).await {
                                Ok(m) => upload.insert(m),
                                Err(e) => break Err(e),
                            },
                        };
                        if let Err(e) = m.send(&self, payload, held.take()).await {
                            break Err(e);
                        }
                    }
                }
                Some(Piece::Finish) => break Ok(()),
                None => {
                    break Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "the transfer ended before it was complete",
                    ))
                }
            }
        };
        let digest = Digested {
            sha256: hasher.finalize().into(),
            size,
        };
        let finished = match result {
            Ok(()) => match upload.take() {
                None => Ok(Pending::Small(part, held.take())),
                Some(mut m) => {
                    let last: PutPayload = std::mem::take(&mut part).into_iter().collect();
                    let sent = if last.content_length() > 0 {
                        m.send(&self, last, held.take()).await
                    } else {
                        Ok(())
                    };
                    match sent {
                        Ok(()) => match m.parts(&self).await {
                            Ok(parts) => Ok(Pending::Parts(m, parts)),
                            Err(e) => {
                                upload = Some(m);
                                Err(e)
                            }
                        },
                        Err(e) => {
                            upload = Some(m);
                            Err(e)
                        }
                    }
                }
            },
            Err(e) => Err(e),
        };
        match finished {
            Ok(pending) => Ok((
                Upload {
                    bucket: self,
                    key,
                    direct,
                    pending: Some(pending),
                },
                digest,
            )),
            Err(e) => {
                if let Some(m) = upload {
                    m.abort(&self).await;
                }
                Err(e)
            }
        }
    }

    /// Begins a multipart upload and journals it before any part is sent.
    async fn begin(&self, key: &Key) -> io::Result<Multipart> {
        let id = self.note_write(self.store.create_multipart(key).await)?;
        let entry = self.journal.join(format!("{:016x}", rand::random::<u64>()));
        let text = format!("{key}\n{id}\n");
        let (path, dir) = (entry.clone(), self.journal.clone());
        let written = super::blocking(move || {
            let mut file = fs::File::create(&path)?;
            io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()?;
            fs::File::open(&dir)?.sync_all()
        })
        .await;
        let m = Multipart {
            key: key.clone(),
            id,
            entry,
            next: 0,
            sending: JoinSet::new(),
            done: Vec::new(),
        };
        if let Err(e) = written {
            m.abort(self).await;
            return Err(e);
        }
        Ok(m)
    }

    /// A version's bytes, streamed in chunks of [`CHUNK`] bytes.
    pub async fn reader(
        &self,
        name: &str,
        sha256_hex: &str,
    ) -> io::Result<mpsc::Receiver<io::Result<Vec<u8>>>> {
        let got = self.note(self.store.get(&self.version_key(name, sha256_hex)).await)?;
        let mut stream = got.into_stream();
        let (tx, rx) = mpsc::channel(QUEUE);
        let describe = self.describe.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(CHUNK);
            while let Some(piece) = stream.next().await {
                match piece {
                    Ok(bytes) => {
                        let mut rest = &bytes[..];
                        while !rest.is_empty() {
                            let n = rest.len().min(CHUNK - buf.len());
                            buf.extend_from_slice(&rest[..n]);
                            rest = &rest[n..];
                            if buf.len() == CHUNK {
                                let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                                if tx.send(Ok(full)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(to_io(&describe, e))).await;
                        return;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(Ok(buf)).await;
            }
        });
        Ok(rx)
    }

    /// Deletes a version; one already gone is not an error.
    pub async fn remove(&self, name: &str, sha256_hex: &str) -> io::Result<()> {
        match self.note_write(self.store.delete(&self.version_key(name, sha256_hex)).await) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether a version is in the bucket.
    pub async fn exists(&self, name: &str, sha256_hex: &str) -> io::Result<bool> {
        match self.note(self.store.head(&self.version_key(name, sha256_hex)).await) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The part size for an object of at most `size` bytes: [`PART`], or more when S3's
/// limit on the number of parts needs it (whole MiB).
fn part_size(size: Option<u64>) -> usize {
    let needed = size.map_or(0, |s| s.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB);
    usize::try_from(needed).unwrap_or(usize::MAX).max(PART)
}

/// Probes the bucket until the site lets it go.
async fn probe(bucket: Weak<Bucket>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(bucket) = bucket.upgrade() else {
            return;
        };
        bucket.check().await;
    }
}

fn to_io(describe: &str, e: object_store::Error) -> io::Error {
    // An error body is the server's to choose: only its start is kept.
    let said = e.to_string();
    let said = match crate::types::truncate_chars(&said, MAX_ERROR) {
        short if short.len() < said.len() => format!("{short}…"),
        _ => said,
    };
    let kind = match &e {
        object_store::Error::NotFound { .. } => {
            return io::Error::new(
                io::ErrorKind::NotFound,
                format!("object storage {describe}: {said}"),
            )
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(
        kind,
        Unanswered(format!("object storage {describe}: {said}")),
    )
}

/// S3 answered the request with a 4xx: it was refused, not lost.
fn client_error(e: &object_store::Error) -> bool {
    let text = e.to_string();
    ["400", "403", "404", "409", "NoSuchUpload"]
        .iter()
        .any(|code| text.contains(code))
}

/// The bucket refused or did not answer a request: a state of the bucket, which a retry
/// may see end, not a fact about the object (see [`unanswered`]).
#[derive(Debug)]
pub struct Unanswered(String);

impl fmt::Display for Unanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unanswered {}

/// Whether `e` is the bucket refusing or not answering (rather than an object missing, or
/// a local failure).
pub fn unanswered(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unanswered>())
}

/// A multipart upload under way.
struct Multipart {
    key: Key,
    id: String,
    /// Its journal file.
    entry: PathBuf,
    next: usize,
    sending: JoinSet<(usize, object_store::Result<PartId>)>,
    done: Vec<(usize, PartId)>,
}

impl Multipart {
    /// Sends a part, once fewer than [`PARTS_IN_FLIGHT`] are in flight.
    /// The part's share of the memory budget (`held`) goes back when it is sent.
    async fn send(
        &mut self,
        bucket: &Arc<Bucket>,
        payload: PutPayload,
        held: Option<OwnedSemaphorePermit>,
    ) -> io::Result<()> {
        while self.sending.len() >= PARTS_IN_FLIGHT {
            self.collect_one(bucket).await?;
        }
        let (store, key, id, index) = (
            Arc::clone(&bucket.store),
            self.key.clone(),
            self.id.clone(),
            self.next,
        );
        self.next += 1;
        self.sending.spawn(async move {
            let sent = store.put_part(&key, &id, index, payload).await;
            drop(held);
            (index, sent)
        });
        Ok(())
    }

    async fn collect_one(&mut self, bucket: &Bucket) -> io::Result<()> {
        match self.sending.join_next().await {
            None => Ok(()),
            Some(Ok((index, part))) => {
                self.done.push((index, bucket.note_write(part)?));
                Ok(())
            }
            Some(Err(e)) => Err(io::Error::other(format!("a part upload failed: {e}"))),
        }
    }

    /// Waits for the parts in flight; returns them all in order.
    async fn parts(&mut self, bucket: &Bucket) -> io::Result<Vec<PartId>> {
        while !self.sending.is_empty() {
            self.collect_one(bucket).await?;
        }
        self.done.sort_by_key(|(i, _)| *i);
        Ok(self.done.iter().map(|(_, p)| p.clone()).collect())
    }

    async fn complete(self, bucket: &Bucket, parts: Vec<PartId>) -> io::Result<()> {
        let done = bucket
            .store
            .complete_multipart(&self.key, &self.id, parts)
            .await;
        let result = bucket.note_write(done).map(drop);
        if result.is_ok() {
            let _ = fs::remove_file(&self.entry);
        }
        result
    }

    async fn abort(mut self, bucket: &Bucket) {
        self.sending.abort_all();
        while self.sending.join_next().await.is_some() {}
        match bucket.store.abort_multipart(&self.key, &self.id).await {
            Ok(()) => {
                let _ = fs::remove_file(&self.entry);
            }
            // Left in the journal: the next start aborts it.
            Err(e) => {
                warn!(key = %self.key, error = %e, "cannot abort an upload; the next start will")
            }
        }
    }
}

/// What an upload left to do once its bytes were sent.
enum Pending {
    /// Smaller than a part: held here and stored with one PUT.
    Small(Vec<Bytes>, Option<OwnedSemaphorePermit>),
    /// Every part sent; completing makes the object visible.
    Parts(Multipart, Vec<PartId>),
}

/// Bytes sent to the bucket and not yet visible under their version's key (see
/// `Staged`). Dropped without [`Upload::install`], its parts are aborted.
pub struct Upload {
    bucket: Arc<Bucket>,
    key: Key,
    /// Uploaded under its version's key (the checksum was known).
    direct: bool,
    pending: Option<Pending>,
}

impl Upload {
    /// Makes the bytes `name`'s version `sha`.
    pub async fn install(mut self, name: &str, sha256_hex: &str) -> io::Result<()> {
        let target = self.bucket.version_key(name, sha256_hex);
        let bucket = Arc::clone(&self.bucket);
        match self.pending.take() {
            None => Err(io::Error::other("the upload was already used")),
            Some(Pending::Small(chunks, _held)) => {
                let payload: PutPayload = chunks.into_iter().collect();
                bucket
                    .note_write(bucket.store.put(&target, payload).await)
                    .map(drop)
            }
            Some(Pending::Parts(m, parts)) if self.direct => {
                if self.key != target {
                    m.abort(&bucket).await;
                    return Err(io::Error::other(format!(
                        "staged as {}, not {target}",
                        self.key
                    )));
                }
                m.complete(&bucket, parts).await
            }
            Some(Pending::Parts(m, parts)) => {
                let staging = self.key.clone();
                m.complete(&bucket, parts).await?;
                let copied = bucket.note_write(bucket.store.copy(&staging, &target).await);
                // The staging key goes either way (a start sweeps it if this fails too).
                let _ = bucket.note_write(bucket.store.delete(&staging).await);
                copied
            }
        }
    }

    /// Drops the bytes: nothing of them stays in the bucket.
    pub async fn discard(mut self) {
        if let Some(Pending::Parts(m, _)) = self.pending.take() {
            m.abort(&self.bucket).await;
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(Pending::Parts(m, _)) = self.pending.take() {
            let bucket = Arc::clone(&self.bucket);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { m.abort(&bucket).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_plain_segments() {
        assert_eq!(normalise_prefix("").unwrap(), "");
        assert_eq!(normalise_prefix("/").unwrap(), "");
        assert_eq!(normalise_prefix("site-a").unwrap(), "site-a/");
        assert_eq!(normalise_prefix("/geo/site_a.1/").unwrap(), "geo/site_a.1/");
        for bad in [
            "a/../b", "a//b", "./a", "a b", "a/%2e", "ä", "objects", "x/tmp/y", "site",
        ] {
            assert!(normalise_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parts_grow_only_when_s3s_part_limit_needs_it() {
        assert_eq!(part_size(None), PART);
        assert_eq!(part_size(Some(1)), PART);
        assert_eq!(part_size(Some(70 << 30)), PART);
        let huge = 200u64 << 30;
        let size = part_size(Some(huge)) as u64;
        assert!(size > PART as u64 && size.is_multiple_of(MIB));
        assert!(huge.div_ceil(size) <= MAX_PARTS);
        assert!((part_size(Some(u64::MAX)) as u64).is_multiple_of(MIB));
    }

    #[test]
    fn the_secret_is_not_printed() {
        let options = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            bucket: "b".into(),
            prefix: String::new(),
            region: "garage".into(),
            access_key_id: "GK1".into(),
            secret_access_key: "hunter2".into(),
        };
        assert!(!format!("{options:?}").contains("hunter2"));
        assert_eq!(options.describe(), "bucket b at http://127.0.0.1:1");
    }
}
