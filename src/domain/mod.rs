//! The nouns of contact-server (ids, tasks, acknowledgements, registrations)
//! and their validation from protobuf messages and request metadata.
//!
//! Everything a client sends passes through a `TryFrom` or `parse` here
//! before it reaches an actor, so the actors only ever see valid values.
//! No IO happens in this module.

use tonic::metadata::MetadataMap;

use crate::error::Error;

mod ids;
mod task;
mod worker;

pub use ids::{BroadcastId, ClientId, QueueName, SessionId, TaskId};
pub use task::{
    DeadLetterReason, Delivery, NewTask, SubmitLimits, Target, TaskInfo, TaskResult, TaskState,
};
pub use worker::{
    Ack, AckKind, Outcome, Registration, RegistrationLimits, Resume, StatusReport, WorkerOp,
    client_id_from_metadata,
};

/// Request metadata key: the worker's chosen id.
pub const CLIENT_ID_KEY: &str = "contact-client-id";
/// Request metadata key: comma-separated queue names the worker takes tasks from.
pub const QUEUES_KEY: &str = "contact-queues";
/// Request metadata key: the worker's in-flight limit.
pub const MAX_IN_FLIGHT_KEY: &str = "contact-max-in-flight";
/// Request metadata key: "true" when the worker confirms receipt of each task.
pub const RECEIPTS_KEY: &str = "contact-receipts";
/// Request metadata key: the worker's keepalive interval in milliseconds.
pub const KEEPALIVE_MS_KEY: &str = "contact-keepalive-ms";
/// Response metadata key: the session id to name when resuming.
pub const SESSION_ID_KEY: &str = "contact-session-id";
/// Response metadata key: how many held tasks a resume kept.
pub const RESUMED_KEY: &str = "contact-resumed";
/// Metadata key on the status that ends a getTask stream: why the server
/// ended it ([`EndReason`]), so a client can tell "stop" from "reconnect"
/// without reading the message.
pub const END_REASON_KEY: &str = "contact-end-reason";

/// Why the server ended a worker's getTask stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// An operator drained the worker and it acknowledged everything: stop.
    Drained,
    /// An operator disconnected the worker: stop.
    Disconnected,
    /// The server is stopping: reconnect later.
    ShuttingDown,
    /// The worker was silent past the liveness timeout: reconnect.
    Expired,
}

impl EndReason {
    /// The value sent under [`END_REASON_KEY`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drained => "drained",
            Self::Disconnected => "disconnected",
            Self::ShuttingDown => "shutting-down",
            Self::Expired => "expired",
        }
    }

    /// Reads a value sent under [`END_REASON_KEY`].
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Drained,
            Self::Disconnected,
            Self::ShuttingDown,
            Self::Expired,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }

    /// True when a worker should not reconnect: an operator wants it gone.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Drained | Self::Disconnected)
    }
}

/// The queue of a task or worker that names none.
pub const DEFAULT_QUEUE: &str = "default";
/// The longest client id, queue name or idempotency key, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The most queues one worker may subscribe to.
pub const MAX_QUEUES_PER_WORKER: usize = 32;
/// The most status text kept per worker, in bytes.
pub const MAX_STATUS_LEN: usize = 1024;

/// The most of a rejected value an error message quotes: enough to
/// recognise it, never so much that the status outgrows what clients accept
/// (a 1 MiB id echoed whole makes grpcio report RESOURCE_EXHAUSTED instead).
const QUOTE_LIMIT: usize = 64;

/// A client-supplied value as an error message shows it: debug-quoted, and
/// cut to [`QUOTE_LIMIT`] bytes with its full length noted when longer.
pub(crate) fn quote(text: &str) -> String {
    if text.len() <= QUOTE_LIMIT {
        return format!("{text:?}");
    }
    format!("{:?}… ({} bytes)", prefix(text, QUOTE_LIMIT), text.len())
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Names are used in logs and metadata, so they are kept to a printable,
/// unambiguous alphabet.
fn check_name(kind: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "{kind} must be 1 to {MAX_NAME_LEN} bytes long, got {}",
            name.len()
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(Error::InvalidArgument(format!(
            "{kind} may contain only letters, digits, '-', '_', '.' and ':', found {bad:?}"
        )));
    }
    Ok(())
}

fn metadata_text<'a>(metadata: &'a MetadataMap, key: &str) -> Result<Option<&'a str>, Error> {
    metadata
        .get(key)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Error::InvalidArgument(format!("metadata {key} is not ASCII text")))
        })
        .transpose()
}
