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
use tokio::sync::mpsc;
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
}

/// One site's bucket.
pub struct Bucket {
    store: Arc<AmazonS3>,
    prefix: String,
    describe: String,
    /// Multipart uploads begun and not yet completed or aborted, one file each.
    journal: PathBuf,
    fault: Mutex<Option<Fault>>,
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
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
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
        });
        bucket.claim(site_id).await?;
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

    /// Records how a request went: a refusal or silence is a fault until a later request
    /// is answered; "not found" is an answer.
    fn note<T>(&self, result: object_store::Result<T>) -> io::Result<T> {
        let failed = match &result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Ok(mut fault) = self.fault.lock() {
            match failed {
                None => *fault = None,
                Some(error) => {
                    if fault.is_none() {
                        warn!(bucket = %self.describe, %error, "object storage is failing");
                    }
                    let since_ms = fault
                        .as_ref()
                        .map_or_else(crate::log::now_ms, |f| f.since_ms);
                    *fault = Some(Fault { error, since_ms });
                }
            }
        }
        result.map_err(|e| to_io(&self.describe, e))
    }

    /// Asks the bucket for the marker: the health probe.
    async fn probe(&self) {
        let _ = self.note(self.store.head(&self.key("site")).await);
    }

    /// Writes the marker naming this site, or refuses a prefix another site owns.
    async fn claim(&self, site_id: &str) -> io::Result<()> {
        let marker = self.key("site");
        match self.note(self.store.get(&marker).await) {
            Ok(found) => {
                let bytes = self.note(found.bytes().await)?;
                let owner = String::from_utf8_lossy(&bytes).trim().to_string();
                if owner != site_id {
                    return Err(io::Error::other(format!(
                        "object storage: {} belongs to site {owner:?}, not {site_id:?}; each site needs a bucket or prefix of its own",
                        self.describe
                    )));
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let put = self.store.put(&marker, site_id.as_bytes().to_vec().into());
                self.note(put.await).map(drop)
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
                    // Already completed or aborted: S3 says so with an error.
                    Err(e) => warn!(%key, error = %e, "cannot abort an interrupted upload"),
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
            match self.note(self.store.delete(key).await) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(doomed.len())
    }

    /// Removes every version key whose id is not in `keep`; returns how many.
    pub async fn collect_garbage(&self, keep: &HashSet<String>) -> io::Result<usize> {
        self.remove_unless(&self.key("objects"), |id| keep.contains(id))
            .await
    }

    /// Starts an upload: straight to `name`'s version `sha` when the checksum is known
    /// (what is uploaded is checked before it is made visible), else to a staging key.
    pub(crate) fn sink(
        self: &Arc<Self>,
        target: Option<(&str, &str)>,
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
        tokio::spawn(async move { bucket.upload(key, direct, rx).await })
    }

    async fn upload(
        self: Arc<Self>,
        key: Key,
        direct: bool,
        mut rx: mpsc::Receiver<Piece>,
    ) -> io::Result<(Upload, Digested)> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut part: Vec<Bytes> = Vec::new();
        let mut filled = 0usize;
        let mut upload: Option<Multipart> = None;
        let result = loop {
            match rx.recv().await {
                Some(Piece::Chunk(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    filled += chunk.len();
                    part.push(Bytes::from(chunk));
                    if filled >= PART {
                        let payload: PutPayload = std::mem::take(&mut part).into_iter().collect();
                        filled = 0;
                        let m = match &mut upload {
                            Some(m) => m,
                            None => match self.begin(&key).await {
                                Ok(m) => upload.insert(m),
                                Err(e) => break Err(e),
                            },
                        };
                        if let Err(e) = m.send(&self, payload).await {
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
                None => Ok(Pending::Small(part)),
                Some(mut m) => {
                    let last: PutPayload = std::mem::take(&mut part).into_iter().collect();
                    let sent = if last.content_length() > 0 {
                        m.send(&self, last).await
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
        let id = self.note(self.store.create_multipart(key).await)?;
        let entry = self.journal.join(format!("{:016x}", rand::random::<u64>()));
        let text = format!("{key}\n{id}\n");
        let written = (|| {
            let mut file = fs::File::create(&entry)?;
            io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()?;
            fs::File::open(&self.journal)?.sync_all()
        })();
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
        match self.note(self.store.delete(&self.version_key(name, sha256_hex)).await) {
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

/// Probes the bucket until the site lets it go.
async fn probe(bucket: Weak<Bucket>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(bucket) = bucket.upgrade() else {
            return;
        };
        bucket.probe().await;
    }
}

fn to_io(describe: &str, e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => {
            return io::Error::new(
                io::ErrorKind::NotFound,
                format!("object storage {describe}: {e}"),
            )
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, Unanswered(format!("object storage {describe}: {e}")))
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
    async fn send(&mut self, bucket: &Arc<Bucket>, payload: PutPayload) -> io::Result<()> {
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
        self.sending
            .spawn(async move { (index, store.put_part(&key, &id, index, payload).await) });
        Ok(())
    }

    async fn collect_one(&mut self, bucket: &Bucket) -> io::Result<()> {
        match self.sending.join_next().await {
            None => Ok(()),
            Some(Ok((index, part))) => {
                self.done.push((index, bucket.note(part)?));
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
        let result = bucket.note(done).map(drop);
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
    Small(Vec<Bytes>),
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
            Some(Pending::Small(chunks)) => {
                let payload: PutPayload = chunks.into_iter().collect();
                bucket
                    .note(bucket.store.put(&target, payload).await)
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
                let copied = bucket.note(bucket.store.copy(&staging, &target).await);
                // The staging key goes either way (a start sweeps it if this fails too).
                let _ = bucket.note(bucket.store.delete(&staging).await);
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
