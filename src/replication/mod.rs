//! Replication on a secondary: the followers that keep the settings log and the event log in
//! step with the primary's, the sync workers that fetch the bytes the events announce, and
//! the verifier that re-checks local copies (on every site).
//!
//! None of it knows gRPC: the follower reads a [`LogSource`] and the sync workers an
//! [`ObjectSource`] (the gRPC clients live at the edge, in `server::client`), and they write
//! through the domain types, so the checks they rely on — contiguity, epoch, hash chain,
//! checksums — are those of the log and the object store themselves.

mod follower;
pub mod sync;
pub mod verify;

pub use follower::{
    Follower, FollowerError, FollowerState, FollowerStatus, LogSource, OpenError, Received,
    SourceError, BACKOFF_MAX,
};
pub use sync::{FetchError, ObjectSource};
