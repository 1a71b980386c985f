//! geo-agent runs on every site of a Geo deployment — one primary, any number of
//! secondaries — and keeps their maintenance mode in step.
//!
//! The primary appends every settings change to a hash-chained, durable **settings log**
//! ([`log`], [`settings`]); each secondary's follower ([`replication`]) streams it over gRPC
//! and applies it in order, so maintenance mode and its banner message reach every site by
//! themselves. Replicated data ([`objects`]) takes the same road: the primary's event log
//! (the same log code) announces each object version, and secondaries' sync workers fetch
//! and verify the bytes. [`server`] is the network edge (the only module that knows protobuf),
//! [`site`] wires one site together, [`cli`] is the command line. See `ARCHITECTURE.md`.

pub mod cli;
pub mod config;
pub mod failover;
pub mod gate;
pub mod log;
pub mod objects;
pub mod proxy;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod status;
pub mod store;
pub mod types;
