//! Replication on a secondary: the follower that keeps the settings log in step with the
//! primary's.
//!
//! The follower knows nothing of gRPC: it reads a [`LogSource`] (the gRPC client lives at
//! the edge, in `server::client`) and writes through [`crate::settings::Settings`], so the
//! checks it relies on — contiguity, epoch, hash chain — are the log's own.

mod follower;

pub use follower::{
    Follower, FollowerError, FollowerState, FollowerStatus, LogSource, Received, SourceError,
    BACKOFF_MAX,
};
