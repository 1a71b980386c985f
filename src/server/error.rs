//! The one mapping from domain errors to what callers see: a gRPC status (with the primary's
//! address in metadata when the error names it) and an HTTP status. Every domain error says
//! what kind of failure it is ([`Classify`]); nothing else in the server decides codes for
//! domain errors.
//!
//! | kind | gRPC | HTTP |
//! |---|---|---|
//! | refused (mode, role, fence, epoch) | FAILED_PRECONDITION | 409 |
//! | not the primary | FAILED_PRECONDITION + `geo-primary` | 409 |
//! | fenced (replaced as the primary) | FAILED_PRECONDITION + `geo-fenced` | 409 |
//! | invalid | INVALID_ARGUMENT | 400 |
//! | not found | NOT_FOUND | 404 |
//! | conflict (superseded) | FAILED_PRECONDITION | 409 |
//! | aborted by an admin | ABORTED | 409 |
//! | timed out (an idle client) | DEADLINE_EXCEEDED | 408 |
//! | unavailable | UNAVAILABLE | 503 |
//! | exhausted (disk full) | RESOURCE_EXHAUSTED | 507 |
//! | bad gateway (the proxy's upstream down) | UNAVAILABLE | 502 |
//! | gateway timeout (the proxy's upstream slow) | DEADLINE_EXCEEDED | 504 |
//! | internal | INTERNAL (logged) | 500 |
//!
//! Refusals are FAILED_PRECONDITION, not UNAVAILABLE, which clients retry blindly. A full
//! disk is RESOURCE_EXHAUSTED, which gRPC defines for "the entire file system is out of
//! space": neither a refusal in this site's state nor a fault to retry at once (see
//! `store::disk::DiskFull`).

use http::StatusCode;
use tonic::{Code, Status};

use crate::types::{Classify, ErrorKind};

/// Metadata key that carries the primary's address on refusals from a secondary.
pub const PRIMARY_METADATA: &str = "geo-primary";
/// Metadata key present on refusals by a fenced site, so a follower knows to stop hoping.
pub const FENCED_METADATA: &str = "geo-fenced";

/// The gRPC code of a kind of failure.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Refused | ErrorKind::NotPrimary | ErrorKind::Fenced | ErrorKind::Conflict => {
            Code::FailedPrecondition
        }
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::TimedOut | ErrorKind::GatewayTimeout => Code::DeadlineExceeded,
        ErrorKind::Unavailable | ErrorKind::BadGateway => Code::Unavailable,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The HTTP status of a kind of failure.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Refused
        | ErrorKind::NotPrimary
        | ErrorKind::Fenced
        | ErrorKind::Conflict
        | ErrorKind::Aborted => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Exhausted => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A domain error as a gRPC status. Internal errors are logged here, once.
pub fn status(e: impl Classify) -> Status {
    let kind = e.kind();
    if kind == ErrorKind::Internal {
        tracing::error!(error = %e, "request failed");
    }
    let mut s = Status::new(code(kind), e.to_string());
    if let Some(v) = e.primary().and_then(|p| p.parse().ok()) {
        s.metadata_mut().insert(PRIMARY_METADATA, v);
    }
    if kind == ErrorKind::Fenced {
        s.metadata_mut().insert(
            FENCED_METADATA,
            tonic::metadata::MetadataValue::from_static("1"),
        );
    }
    s
}

/// Whether `s` is a fenced site's refusal.
pub fn is_fenced(s: &Status) -> bool {
    s.metadata().contains_key(FENCED_METADATA)
}

/// A domain error as an HTTP answer: its status and its message as plain text.
pub fn http(e: impl Classify) -> (StatusCode, String) {
    let kind = e.kind();
    if kind == ErrorKind::Internal {
        tracing::error!(error = %e, "request failed");
    }
    (http_status(kind), e.to_string())
}

/// A failure the server itself decides, with no domain error behind it (a call to the
/// wrong kind of site, a blocking task that panicked, a relay that closed).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Plain {
    pub kind: ErrorKind,
    pub message: String,
}

impl Classify for Plain {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// [`Plain`] as a status.
pub fn plain(kind: ErrorKind, message: impl Into<String>) -> Status {
    status(Plain {
        kind,
        message: message.into(),
    })
}

/// The primary could not be reached from this secondary: UNAVAILABLE, naming it (clients
/// may retry).
#[derive(Debug, thiserror::Error)]
#[error("the primary at {primary} cannot be reached: {detail}")]
pub struct PrimaryUnreachable {
    pub primary: String,
    pub detail: String,
}

impl Classify for PrimaryUnreachable {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }

    fn primary(&self) -> Option<&str> {
        Some(&self.primary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("not here")]
    struct NotHere;

    impl Classify for NotHere {
        fn kind(&self) -> ErrorKind {
            ErrorKind::NotPrimary
        }
        fn primary(&self) -> Option<&str> {
            Some("https://p.example:7600")
        }
    }

    #[test]
    fn a_refusal_naming_the_primary_carries_it_in_metadata() {
        let s = status(NotHere);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "not here");
        assert_eq!(
            s.metadata()
                .get(PRIMARY_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("https://p.example:7600")
        );
        assert_eq!(http(NotHere).0, StatusCode::CONFLICT);
    }

    #[test]
    fn every_kind_has_a_distinct_meaning_for_retrying_clients() {
        // Refusals must never be UNAVAILABLE (clients retry that blindly), and faults never
        // a refusal.
        for kind in [
            ErrorKind::Refused,
            ErrorKind::NotPrimary,
            ErrorKind::Conflict,
        ] {
            assert_eq!(code(kind), Code::FailedPrecondition);
        }
        assert_eq!(code(ErrorKind::Unavailable), Code::Unavailable);
        assert_eq!(code(ErrorKind::Exhausted), Code::ResourceExhausted);
        assert_eq!(
            http_status(ErrorKind::Exhausted),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(code(ErrorKind::Internal), Code::Internal);
        assert_eq!(
            http_status(ErrorKind::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(http_status(ErrorKind::Invalid), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(ErrorKind::BadGateway), StatusCode::BAD_GATEWAY);
        assert_eq!(
            http_status(ErrorKind::GatewayTimeout),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
