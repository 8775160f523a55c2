//! The library's one error type, and the one place where gRPC status codes are
//! chosen (`impl From<Error> for Status`).
//!
//! Variants are named for what the caller can do about them. Messages are
//! lowercase, specific, and never carry internals a client should not see.

use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// What can go wrong on a request, as the caller should see it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request itself is malformed: a bad id, an oversized field, a bad value.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing the request names does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing: "task", "worker".
        what: &'static str,
        /// The id the caller gave.
        id: String,
    },
    /// The request is well-formed but conflicts with the current state, e.g. an
    /// acknowledgement for a task the worker does not hold.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request repeats something that already happened, e.g. a second ack.
    #[error("{0}")]
    AlreadyExists(String),
    /// A limit is reached, e.g. a full queue; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A wait ran out of time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The server is draining and takes no new work.
    #[error("server is shutting down")]
    ShuttingDown,
    /// An internal actor is gone; only seen while the server stops.
    #[error("{0} is not running")]
    Unavailable(&'static str),
}

impl<T> From<mpsc::error::SendError<T>> for Error {
    fn from(_: mpsc::error::SendError<T>) -> Self {
        Error::Unavailable("an internal service")
    }
}

impl From<oneshot::error::RecvError> for Error {
    fn from(_: oneshot::error::RecvError) -> Self {
        Error::Unavailable("an internal service")
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::NotFound { .. } => Status::not_found(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::AlreadyExists(_) => Status::already_exists(message),
            Error::ResourceExhausted(_) => Status::resource_exhausted(message),
            Error::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::ShuttingDown | Error::Unavailable(_) => Status::unavailable(message),
        }
    }
}
