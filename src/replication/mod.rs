//! Replication: the followers that keep a secondary's settings log and event log in step
//! with the primary's, the sync workers that fetch the bytes the events announce, the
//! verifier that re-checks local copies (on every site), and the repair that puts back a
//! damaged copy on the primary from a secondary's verified one.
//!
//! None of it knows gRPC: the follower reads a [`LogSource`], the sync workers an
//! [`ObjectSource`], the repair its [`Peers`] (the gRPC clients live at the edge, in
//! `server::client`), and they write through the domain types, so the checks they rely on
//! — contiguity, epoch, hash chain, checksums — are those of the log and the object store
//! themselves.

pub mod bandwidth;
mod follower;
pub mod repair;
pub mod sync;
pub mod verify;

pub use bandwidth::Bandwidth;
pub use follower::{
    Follower, FollowerError, FollowerState, FollowerStatus, LogSource, OpenError, Received,
    SourceError, BACKOFF_MAX,
};
pub use repair::{Outcome, Peers};
pub use sync::{FetchError, ObjectSource};
