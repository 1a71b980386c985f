//! Self-healing on the primary: a copy whose bytes no longer match the sha256 recorded at
//! push (bit rot, a truncated or deleted file) is fetched again from a secondary that holds a
//! verified copy with exactly that sha256, checked, and put back in place.
//!
//! Which sites to ask comes from a [`Peers`] (in production `server::client::GrpcPeers`:
//! the secondaries whose reports carry an `advertise_url`, asked with this site's token).
//! A secondary serves only a copy it verified with the sha256 asked for, and every byte is
//! checked here anyway — size as it arrives (a peer sending more than recorded is cut off
//! before the excess reaches the disk), sha256 before anything is installed — so a broken
//! or lying peer costs a transfer, never the copy. The bytes are installed like every other
//! version: temporary file, fsync, rename over the damaged file, directory fsync.

use std::future::Future;

use tokio_stream::Stream;
use tracing::{info, warn};

use super::sync::receive;
use super::SourceError;
use crate::log::now_ms;
use crate::objects::{Local, ObjectError, Objects};

/// Other sites that may hold a verified copy, as the primary reaches them.
pub trait Peers: Send + Sync + 'static {
    type Chunks: Stream<Item = Result<Vec<u8>, SourceError>> + Send + Unpin;

    /// The sites to ask, best first (their ids).
    fn peers(&self) -> Vec<String>;

    /// `name`'s bytes with checksum `sha256` from `peer`, which refuses unless it holds a
    /// verified copy with that checksum.
    fn fetch_from(
        &self,
        peer: &str,
        name: &str,
        sha256: &str,
    ) -> impl Future<Output = Result<Self::Chunks, SourceError>> + Send;

    /// Told each repair's outcome (for metrics).
    fn counted(&self, _outcome: Outcome) {}
}

/// How a repair ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The copy was put back from `from`.
    Repaired { from: String },
    /// The object was replaced, deleted or repaired meanwhile: nothing left to do.
    Moot,
    /// No site gave the bytes; the reason names the object and every site asked.
    Failed(String),
}

impl Outcome {
    /// The `result` label of `geo_repairs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Repaired { .. } => "repaired",
            Outcome::Moot => "moot",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// Repairs the damaged copy `local` of `name` from the first peer that sends exactly its
/// bytes. Errors only when this site's storage fails.
pub async fn repair<P: Peers>(
    objects: &Objects,
    peers: &P,
    name: &str,
    local: &Local,
) -> Result<Outcome, ObjectError> {
    let mut asked = Vec::new();
    for peer in peers.peers() {
        let attempt = async {
            let mut chunks = peers.fetch_from(&peer, name, &local.sha256).await?;
            let from = format!("site {peer}");
            receive(
                objects,
                &mut chunks,
                name,
                local.size,
                &local.sha256,
                &from,
                "the push recorded",
                // A repair puts back the primary's own copy: not paced.
                None,
            )
            .await
            .map_err(SourceError)
        };
        match attempt.await {
            Ok((staged, digest)) => {
                let outcome = match objects.restore(name, local, staged, digest, now_ms()).await {
                    Ok(true) => Outcome::Repaired { from: peer.clone() },
                    Ok(false) => Outcome::Moot,
                    Err(e @ (ObjectError::Mismatch(_) | ObjectError::Stopping(_))) => {
                        asked.push(format!("{peer}: {e}"));
                        continue;
                    }
                    // This site's bucket did not take the good bytes: a failed repair,
                    // tried again later, not a failure of the site.
                    Err(e @ ObjectError::Io { .. }) if e.is_bucket_failure() => {
                        asked.push(format!("{peer}: the copy could not be put back: {e}"));
                        break;
                    }
                    Err(e) => return Err(e),
                };
                if let Outcome::Repaired { from } = &outcome {
                    info!(object = name, sha256 = %local.sha256, from = %from, "repaired the damaged copy from a verified copy");
                }
                peers.counted(outcome.clone());
                return Ok(outcome);
            }
            Err(SourceError(e)) => {
                warn!(object = name, peer = %peer, error = %e, "cannot repair from this site");
                asked.push(format!("{peer}: {e}"));
            }
        }
    }
    let reason = format!(
        "no site holds a verified copy of {name} sha256 {} ({})",
        local.sha256,
        if asked.is_empty() {
            "no secondary reports an advertise_url to fetch one from".to_string()
        } else {
            format!("asked {}", asked.join("; "))
        }
    );
    warn!(object = name, %reason, "cannot repair a damaged copy");
    let outcome = Outcome::Failed(reason);
    peers.counted(outcome.clone());
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::objects::{ObjectName, Verification};
    use crate::settings::Settings;
    use crate::store::Store;
    use crate::types::Role;

    type Chunks = tokio_stream::Iter<std::vec::IntoIter<Result<Vec<u8>, SourceError>>>;

    /// Peers with canned answers: bytes (sent in small chunks) or a refusal.
    #[derive(Default)]
    struct Fake {
        answers: Vec<(String, Result<Vec<u8>, String>)>,
        asked: Mutex<Vec<String>>,
        counted: Mutex<BTreeMap<&'static str, u64>>,
    }

    impl Peers for Fake {
        type Chunks = Chunks;

        fn peers(&self) -> Vec<String> {
            self.answers.iter().map(|(p, _)| p.clone()).collect()
        }

        async fn fetch_from(&self, peer: &str, _: &str, _: &str) -> Result<Chunks, SourceError> {
            self.asked.lock().unwrap().push(peer.to_string());
            let (_, answer) = self.answers.iter().find(|(p, _)| p == peer).unwrap();
            let bytes = answer.clone().map_err(SourceError)?;
            let chunks: Vec<_> = bytes.chunks(3).map(|c| Ok(c.to_vec())).collect();
            Ok(tokio_stream::iter(chunks))
        }

        fn counted(&self, outcome: Outcome) {
            *self
                .counted
                .lock()
                .unwrap()
                .entry(outcome.label())
                .or_default() += 1;
        }
    }

    const DATA: &[u8] = b"the bytes the primary committed";

    /// A primary holding `DATA` as "a", and its local copy's description.
    async fn primary(dir: &std::path::Path) -> (Objects, Local) {
        let store = Store::open(dir).unwrap();
        let settings = Arc::new(
            Settings::open(store.clone(), "p", Role::Primary, None, None)
                .await
                .unwrap(),
        );
        let objects = Objects::open(&store, dir, settings).await.unwrap();
        let mut sink = objects.blobs().sink(None, None).unwrap();
        sink.write(DATA.to_vec()).await.unwrap();
        let (temp, digest) = sink.finish().await.unwrap();
        let name = ObjectName::parse("a").unwrap();
        objects
            .commit_put(&name, "upload", temp, digest, "admin")
            .await
            .unwrap();
        let local = objects.row("a").unwrap().unwrap().local.unwrap();
        (objects, local)
    }

    /// Damages the copy and records the failed verification, as the verifier does.
    async fn damage(objects: &Objects, local: &Local) {
        let path = objects.blobs().file("a", &local.sha256).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        objects
            .record_verification("a", local, Err("damaged".into()), now_ms())
            .await
            .unwrap();
    }

    fn on_disk(objects: &Objects, local: &Local) -> Vec<u8> {
        std::fs::read(objects.blobs().file("a", &local.sha256).unwrap()).unwrap()
    }

    /// Whether the temporary directory empties (an abandoned sink's writer thread removes
    /// its file once it sees the channel close, a moment later).
    async fn tmp_is_empty(dir: &std::path::Path) -> bool {
        for _ in 0..200 {
            if std::fs::read_dir(dir.join("objects/tmp"))
                .unwrap()
                .next()
                .is_none()
            {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_damaged_copy_is_restored_from_a_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (objects, local) = primary(dir.path()).await;
        damage(&objects, &local).await;
        assert_eq!(objects.counts().unwrap().verification_failed, 1);
        let peers = Fake {
            answers: vec![("s1".into(), Ok(DATA.to_vec()))],
            ..Fake::default()
        };
        let outcome = repair(&objects, &peers, "a", &local).await.unwrap();
        assert_eq!(outcome, Outcome::Repaired { from: "s1".into() });
        assert_eq!(on_disk(&objects, &local), DATA);
        let row = objects.row("a").unwrap().unwrap();
        assert_eq!(row.verification, Verification::Succeeded);
        assert!(!row.checksum_mismatch && row.verification_failure.is_none());
        assert_eq!(objects.counts().unwrap().verification_failed, 0);
        assert_eq!(peers.counted.lock().unwrap().get("repaired"), Some(&1));
        // Repairing again finds nothing to do.
        let again = repair(&objects, &peers, "a", &local).await.unwrap();
        assert_eq!(again, Outcome::Moot);
    }

    #[tokio::test]
    async fn wrong_or_too_many_bytes_are_never_installed_and_the_next_holder_is_tried() {
        let dir = tempfile::tempdir().unwrap();
        let (objects, local) = primary(dir.path()).await;
        damage(&objects, &local).await;
        let damaged = on_disk(&objects, &local);
        let mut longer = DATA.to_vec();
        longer.extend_from_slice(b" and more");
        let mut flipped = DATA.to_vec();
        flipped[5] ^= 0x20;
        let peers = Fake {
            answers: vec![
                ("liar".into(), Ok(flipped)),
                ("endless".into(), Ok(longer)),
                ("short".into(), Ok(DATA[..4].to_vec())),
                ("refuses".into(), Err("holds no verified copy".into())),
                ("good".into(), Ok(DATA.to_vec())),
            ],
            ..Fake::default()
        };
        // Nothing a bad peer sent reached the copy before the good one answered.
        let outcome = repair(&objects, &peers, "a", &local).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Repaired {
                from: "good".into()
            }
        );
        assert_eq!(
            *peers.asked.lock().unwrap(),
            ["liar", "endless", "short", "refuses", "good"]
        );
        assert_ne!(damaged, DATA);
        assert_eq!(on_disk(&objects, &local), DATA);
        assert!(
            tmp_is_empty(dir.path()).await,
            "rejected transfers leave no file"
        );
    }

    #[tokio::test]
    async fn with_no_holder_the_copy_stays_damaged_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (objects, local) = primary(dir.path()).await;
        damage(&objects, &local).await;
        let damaged = on_disk(&objects, &local);
        let mut longer = DATA.to_vec();
        longer.push(0);
        let peers = Fake {
            answers: vec![
                ("s1".into(), Err("s1 holds no verified copy".into())),
                ("s2".into(), Ok(longer)),
            ],
            ..Fake::default()
        };
        let Outcome::Failed(reason) = repair(&objects, &peers, "a", &local).await.unwrap() else {
            panic!("no peer has the bytes");
        };
        let sha = hex::encode(Sha256::digest(DATA));
        assert!(
            reason.starts_with(&format!("no site holds a verified copy of a sha256 {sha}")),
            "{reason}"
        );
        assert!(reason.contains("s1 holds no verified copy"), "{reason}");
        assert!(reason.contains("s2: site s2 sent more than"), "{reason}");
        assert_eq!(on_disk(&objects, &local), damaged);
        assert_eq!(
            objects.row("a").unwrap().unwrap().verification,
            Verification::Failed
        );
        assert_eq!(peers.counted.lock().unwrap().get("failed"), Some(&1));
        assert!(tmp_is_empty(dir.path()).await);

        // Nobody to ask at all: the reason says why.
        let none = Fake::default();
        let Outcome::Failed(reason) = repair(&objects, &none, "a", &local).await.unwrap() else {
            panic!("no peer at all");
        };
        assert!(
            reason.contains("no secondary reports an advertise_url"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_copy_replaced_meanwhile_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (objects, local) = primary(dir.path()).await;
        damage(&objects, &local).await;
        // A new version is pushed while the repair fetches the old one.
        let mut sink = objects.blobs().sink(None, None).unwrap();
        sink.write(b"new".to_vec()).await.unwrap();
        let (temp, digest) = sink.finish().await.unwrap();
        let name = ObjectName::parse("a").unwrap();
        objects
            .commit_put(&name, "upload", temp, digest, "admin")
            .await
            .unwrap();
        let peers = Fake {
            answers: vec![("s1".into(), Ok(DATA.to_vec()))],
            ..Fake::default()
        };
        let outcome = repair(&objects, &peers, "a", &local).await.unwrap();
        assert_eq!(outcome, Outcome::Moot);
        assert!(!objects.blobs().file("a", &local.sha256).unwrap().exists());
        assert!(tmp_is_empty(dir.path()).await);
    }
}
