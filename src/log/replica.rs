//! The apply side of a replicated log, as a follower sees it: a [`Replica`] takes entries a
//! primary sent and says whether it applied them. The settings and the event log both
//! implement it; the follower in `replication` drives it without knowing which one it is.

use std::future::Future;

use super::{Entry, Head, LogError};
use crate::types::Promotion;

/// Why a replica did not apply entries.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The log refused them (a gap, a stale epoch, divergence): a fact about the stream.
    #[error(transparent)]
    Refused(#[from] LogError),
    /// The primary claimed an epoch it sent no admin's proof of: nothing was stored; try
    /// again later.
    #[error("{0}")]
    Unproven(String),
    /// This site cannot write: following must stop.
    #[error("{0}")]
    Fatal(String),
    /// The disk is full: nothing was stored; try again once space is freed (the site stays
    /// up, see `store::disk`).
    #[error("{0}")]
    DiskFull(String),
}

impl ReplicaError {
    /// A failure of this site's storage: a full disk is waited out, anything else is fatal.
    pub fn storage(e: impl crate::types::Classify) -> ReplicaError {
        if e.kind() == crate::types::ErrorKind::Exhausted {
            ReplicaError::DiskFull(e.to_string())
        } else {
            ReplicaError::Fatal(e.to_string())
        }
    }
}

/// The log a follower writes into: the settings or the event log of this site.
pub trait Replica: Send + Sync + 'static {
    fn log_name(&self) -> &str;
    /// The last applied entry.
    fn head(&self) -> Head;
    /// The highest epoch this site has seen.
    fn epoch(&self) -> u64;
    /// Applies consecutive entries from the primary; those before a refused one are kept.
    fn apply(&self, entries: Vec<Entry>) -> impl Future<Output = Result<(), ReplicaError>> + Send;
    /// The admin's proof of the highest epoch this site has seen, presented to the primary.
    fn proof(&self) -> Option<Promotion>;
    /// Records the epoch the primary's heartbeat carries (never lowers it), only with the
    /// admin's proof of it (or of a higher one) when it is above the highest seen.
    fn observe_epoch(
        &self,
        epoch: u64,
        proof: Option<Promotion>,
    ) -> impl Future<Output = Result<(), ReplicaError>> + Send;
}
