//! What kind of failure an error is, so that one mapping in `server::error` can turn every
//! domain error into a gRPC and an HTTP status.
//!
//! A domain error says what happened in its own words (its `Display`); [`Classify`] says
//! only which kind it is, and whether it names the primary. Refusals (the request was
//! wrong for this site's state) and faults (this site is broken) are always distinct kinds,
//! so a storage failure is never reported as a refusal or the other way round.

/// The kinds of failure a caller can act on differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Refused because of the mode, the role, a fence or the epoch: retrying the same request
    /// here will not help until an operator changes the state.
    Refused,
    /// Refused because this site is not the primary; the error may name the primary.
    NotPrimary,
    /// Refused because this site was replaced as the primary (fenced): it takes no writes
    /// and serves nothing to other sites as a primary. Callers that follow it must be
    /// repointed.
    Fenced,
    /// The request itself is malformed or out of bounds.
    Invalid,
    /// The thing asked for does not exist.
    NotFound,
    /// The request lost a race: what it refers to has changed since (a superseded version).
    Conflict,
    /// The request was cut short by an operator.
    Aborted,
    /// The caller was too slow (sent nothing for too long).
    TimedOut,
    /// Not now: the site is stopping, or a site it needs cannot be reached. Retrying later
    /// may help.
    Unavailable,
    /// This site has run out of disk space: it refuses writes it would store until space is
    /// freed, then takes them again by itself (reads, the mode and the gate go on).
    Exhausted,
    /// The application this site fronts (the gating proxy's upstream) cannot be reached or
    /// sent no valid answer: not the caller's fault, and retrying later may help.
    BadGateway,
    /// The application this site fronts did not answer in time.
    GatewayTimeout,
    /// This site is broken (storage, corruption): not the caller's fault.
    Internal,
}

/// An error that knows its [`ErrorKind`].
pub trait Classify: std::fmt::Display {
    fn kind(&self) -> ErrorKind;

    /// The primary's address, when the error is about where the primary is.
    fn primary(&self) -> Option<&str> {
        None
    }
}
