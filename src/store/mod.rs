//! The site's embedded database: one sled `Db` under `<data dir>/db`, opened once.
//!
//! It holds the logs' materialised state (rebuilt from the logs, which live in their own
//! log store under `<data dir>/logs/`, whenever it is missing or behind) and the site's own
//! records: the highest epoch seen, the epoch it leads at, its placement and proofs. sled's
//! `flush` is `sync_file_range`, which survives a crash of the process but not a loss of
//! power, so every write of those records ends with [`Store::sync`]: sled's flush, then an
//! `fsync` of its files and directory. The on-disk format is versioned: a database written
//! by a newer, incompatible format is refused rather than misread.

pub mod disk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use disk::{Disk, DiskFull, DiskState};

use crate::types::{Promotion, Role};

/// Version of the on-disk layout. Bump with an upgrade step when the layout changes.
/// Version 2 keeps the logs' entries in the log store under `<data dir>/logs/`, not in sled.
pub const FORMAT_VERSION: u64 = 2;
/// The version this build upgrades from: version 1 kept the entries in sled, and each log
/// moves them to its log store when it opens (`log::Log::open`, safe to interrupt). The
/// new number is written first, so a build that reads only version 1 refuses the database
/// instead of finding its entries gone.
const UPGRADES_FROM: u64 = 1;

const META_TREE: &str = "site/meta";
const FORMAT_KEY: &[u8] = b"format_version";
const EPOCH_KEY: &[u8] = b"highest_epoch";
const PRIMARY_EPOCH_KEY: &[u8] = b"primary_epoch";
const PLACEMENT_KEY: &[u8] = b"placement";
/// The admin's proof of the highest epoch this site has seen (it presents it onward).
const PROOF_KEY: &[u8] = b"epoch_proof";
/// The proof of this site's own promotion (it fences its former primary with it).
const LEAD_PROOF_KEY: &[u8] = b"primary_proof";
/// Written to find out whether the database still writes, after a full disk.
const PROBE_KEY: &[u8] = b"disk_probe";

/// Where a site stands, once promote, demote, repoint or a fence has decided it: this
/// overrides the role and primary of the configuration, which only give the initial one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub role: Role,
    /// The primary a secondary follows (none for a fenced site).
    pub primary: Option<String>,
    /// Why this site is read-only: a former primary, demoted or fenced by a higher epoch.
    pub fenced: Option<String>,
    /// A former primary to tell of this site's epoch (after a promotion), until it is told.
    pub fence_target: Option<String>,
    /// The site that replaced this one as the primary, when a fence named it: the gate
    /// tells users to send writes there.
    #[serde(default)]
    pub replaced_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "the database at {path} has format version {found}; this build reads {FORMAT_VERSION}"
    )]
    Format { path: PathBuf, found: u64 },
    #[error("corrupt record {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("cannot sync the database file {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::types::Classify for StoreError {
    fn kind(&self) -> crate::types::ErrorKind {
        if self.is_disk_full() {
            return crate::types::ErrorKind::Exhausted;
        }
        crate::types::ErrorKind::Internal
    }
}

impl StoreError {
    /// True when the failure is a full disk (a state the site waits out, not a fault).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::CreateDir { source, .. } | StoreError::Sync { source, .. } => {
                disk::is_full(source)
            }
            StoreError::Open { source, .. } | StoreError::Sled(source) => {
                disk::sled_is_full(source)
            }
            StoreError::Format { .. } | StoreError::Corrupt { .. } => false,
        }
    }
}

/// The site's database handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    disk: Arc<Disk>,
}

impl Store {
    /// Opens (or creates) the database under `data_dir`. On a full disk it deletes the
    /// reserve file (see [`disk`]) and tries once more, so a site restarted on a full disk
    /// still opens its database and serves the mode and the gate.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let disk = Arc::new(Disk::new(data_dir));
        let store = match Store::open_db(data_dir, Arc::clone(&disk)) {
            Err(e) if e.is_disk_full() && disk.release_reserve() => Store::open_db(data_dir, disk),
            other => other,
        }?;
        store.disk.check(false);
        Ok(store)
    }

    fn open_db(data_dir: &Path, disk: Arc<Disk>) -> Result<Store, StoreError> {
        let path = data_dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let meta = db.open_tree(META_TREE)?;
        match meta.get(FORMAT_KEY)? {
            None => {
                meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(raw) => {
                let found = decode_u64(&raw, "format version")?;
                if found == UPGRADES_FROM {
                    meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
                    db.flush()?;
                    fsync_tree(&path)?;
                    tracing::info!(path = %path.display(), from = found, to = FORMAT_VERSION, "upgrading the database format: the logs move to the log store as they open");
                } else if found != FORMAT_VERSION {
                    return Err(StoreError::Format { path, found });
                }
            }
        }
        Ok(Store {
            dir: data_dir.to_path_buf(),
            db,
            meta,
            disk,
        })
    }

    /// The data directory's disk: free space, the reserve, whether writes are refused.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// Writes and flushes a small record: fails when the database has kept an earlier
    /// write error (sled does, until it is opened again).
    pub fn probe(&self) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.meta.insert(PROBE_KEY, &now.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Where the log store of the log `name` keeps its segment files.
    pub fn log_dir(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(name)
    }

    /// The highest epoch this site has seen (0 if none yet).
    pub fn highest_epoch(&self) -> Result<u64, StoreError> {
        match self.meta.get(EPOCH_KEY)? {
            None => Ok(0),
            Some(raw) => decode_u64(&raw, "highest epoch"),
        }
    }

    /// Raises the highest epoch seen to `epoch` (never lowers it), durably.
    pub async fn raise_epoch(&self, epoch: u64) -> Result<u64, StoreError> {
        let merged = self.meta.update_and_fetch(EPOCH_KEY, |old| {
            let old = old
                .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(old.max(epoch).to_be_bytes().to_vec())
        })?;
        self.sync().await?;
        match merged {
            Some(raw) => decode_u64(&raw, "highest epoch"),
            None => Ok(epoch),
        }
    }

    /// The epoch this site leads at, once it has been a primary.
    pub fn primary_epoch(&self) -> Result<Option<u64>, StoreError> {
        match self.meta.get(PRIMARY_EPOCH_KEY)? {
            None => Ok(None),
            Some(raw) => decode_u64(&raw, "primary epoch").map(Some),
        }
    }

    /// Records the epoch this site leads at, durably.
    pub async fn set_primary_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        self.meta.insert(PRIMARY_EPOCH_KEY, &epoch.to_be_bytes())?;
        self.sync().await?;
        Ok(())
    }

    /// The placement promote/demote/repoint/fence decided, if any.
    pub fn placement(&self) -> Result<Option<Placement>, StoreError> {
        match self.meta.get(PLACEMENT_KEY)? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: "placement".into(),
                    detail: e.to_string(),
                }),
        }
    }

    /// Records a placement, durably.
    pub async fn set_placement(&self, p: &Placement) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(p).map_err(|e| StoreError::Corrupt {
            what: "placement".into(),
            detail: e.to_string(),
        })?;
        self.meta.insert(PLACEMENT_KEY, raw)?;
        self.sync().await?;
        Ok(())
    }

    /// Makes this site the primary at `epoch` in one atomic, durable write: the highest
    /// epoch seen, the epoch it leads at, the admin's proof of it and its placement change
    /// together, so a crash can never leave a primary at an old epoch, a promoted site that
    /// still follows, or a promotion without its proof.
    pub async fn promote(
        &self,
        epoch: u64,
        placement: &Placement,
        proof: &Promotion,
    ) -> Result<(), StoreError> {
        let raw = json(placement, "placement")?;
        let proof = json(proof, "promotion proof")?;
        let mut batch = sled::Batch::default();
        let highest = self.highest_epoch()?.max(epoch);
        batch.insert(EPOCH_KEY, &highest.to_be_bytes());
        batch.insert(PRIMARY_EPOCH_KEY, &epoch.to_be_bytes());
        batch.insert(PLACEMENT_KEY, raw);
        batch.insert(PROOF_KEY, proof.clone());
        batch.insert(LEAD_PROOF_KEY, proof);
        self.meta.apply_batch(batch)?;
        self.sync().await?;
        Ok(())
    }

    /// The proof of the highest epoch this site has seen, if it holds one.
    pub fn proof(&self) -> Result<Option<Promotion>, StoreError> {
        self.read_json(PROOF_KEY, "epoch proof")
    }

    /// The proof of this site's own promotion, if it was promoted.
    pub fn lead_proof(&self) -> Result<Option<Promotion>, StoreError> {
        self.read_json(LEAD_PROOF_KEY, "promotion proof")
    }

    /// Raises the highest epoch seen to `epoch` and keeps `proof` (which proves it) in one
    /// durable batch; a proof of a lower epoch than the one kept is not kept.
    pub async fn raise_epoch_proven(
        &self,
        epoch: u64,
        proof: &Promotion,
    ) -> Result<u64, StoreError> {
        let highest = self.highest_epoch()?.max(epoch);
        let mut batch = sled::Batch::default();
        batch.insert(EPOCH_KEY, &highest.to_be_bytes());
        let kept = self.proof()?.map_or(0, |p| p.epoch);
        if proof.epoch > kept {
            batch.insert(PROOF_KEY, json(proof, "epoch proof")?);
        }
        self.meta.apply_batch(batch)?;
        self.sync().await?;
        Ok(highest)
    }

    /// Puts the highest epoch seen back to `epoch` and records `placement`, in one durable
    /// batch: only for an admin clearing a fence no proof backs (`geo-agent fence clear`).
    pub async fn clear_fence(&self, epoch: u64, placement: &Placement) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(EPOCH_KEY, &epoch.to_be_bytes());
        batch.insert(PLACEMENT_KEY, json(placement, "placement")?);
        self.meta.apply_batch(batch)?;
        self.sync().await?;
        Ok(())
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: what.into(),
                    detail: e.to_string(),
                }),
        }
    }

    /// Makes everything written so far durable, also against a loss of power: sled's flush
    /// (`sync_file_range`), then `fsync` of every file of the database and its directories.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        let path = self.dir.join("db");
        tokio::task::spawn_blocking(move || fsync_tree(&path))
            .await
            .map_err(|e| StoreError::Sync {
                path: self.dir.join("db"),
                source: std::io::Error::other(e.to_string()),
            })?
    }
}

/// `fsync`s `dir`, the files in it and in its subdirectories (sled's `blobs`), and the
/// subdirectories themselves.
fn fsync_tree(dir: &Path) -> Result<(), StoreError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Sync { path, source }
    };
    for item in std::fs::read_dir(dir).map_err(failed(dir))? {
        let path = item.map_err(failed(dir))?.path();
        if path.is_dir() {
            fsync_tree(&path)?;
            continue;
        }
        match std::fs::File::open(&path).and_then(|f| f.sync_all()) {
            // sled replaces its snapshot files as it goes: one may be gone by now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(failed(&path))?,
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(failed(dir))
}

fn json<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        detail: e.to_string(),
    })
}

/// Decodes a big-endian u64 record, naming `what` if it is malformed.
pub fn decode_u64(raw: &[u8], what: &str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(raw)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            what: what.to_string(),
            detail: format!("expected 8 bytes, found {}", raw.len()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_format(dir: &Path, version: u64) {
        let db = sled::open(dir.join("db")).unwrap();
        db.open_tree(META_TREE)
            .unwrap()
            .insert(FORMAT_KEY, &version.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn an_older_format_is_upgraded_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        set_format(dir.path(), UPGRADES_FROM);
        let store = Store::open(dir.path()).unwrap();
        let raw = store.meta.get(FORMAT_KEY).unwrap().unwrap();
        assert_eq!(decode_u64(&raw, "v").unwrap(), FORMAT_VERSION);
        drop(store);
        set_format(dir.path(), FORMAT_VERSION + 1);
        let err = Store::open(dir.path())
            .err()
            .expect("a newer format opened");
        assert!(matches!(err, StoreError::Format { .. }), "{err}");
        assert!(err.to_string().contains("format version 3"), "{err}");
    }

    #[tokio::test]
    async fn sync_walks_the_database_files_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.raise_epoch(7).await.unwrap();
        store.sync().await.unwrap();
        assert_eq!(store.highest_epoch().unwrap(), 7);
    }
}
