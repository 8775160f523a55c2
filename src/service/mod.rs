//! The gRPC facades. Each service only validates requests (through
//! `domain`), calls actor handles, and converts answers back to protobuf;
//! no state lives here beyond the handles in [`Core`].

use std::{pin::pin, sync::Arc};

use futures_util::FutureExt as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Code, Status, Streaming};

use crate::{
    auth::Scope,
    domain::{NewTask, QueueName, RegistrationLimits, SubmitLimits, Target},
    error::Error,
    proto::v1,
    queue::QueueHandle,
    session::registry::{RegistryHandle, SessionIndex},
    session::{Notice, SessionDeps, SessionTiming},
};

mod admin;
mod contact;
mod tasks;

pub(crate) use admin::AdminService;
pub(crate) use contact::ContactService;
pub(crate) use tasks::TasksService;

/// Most messages a streaming handler reads before it hands them on as one
/// batch; only messages that already arrived are batched, nothing waits.
const MAX_STREAM_BATCH: usize = 256;

/// What one read of a client's request stream brought.
#[derive(Debug)]
struct Batch<T> {
    /// The messages read: the first was waited for, the rest (at most
    /// [`MAX_STREAM_BATCH`] in all) had already arrived.
    items: Vec<T>,
    /// How the stream ended after them; `None` while it goes on.
    end: Option<StreamEnd>,
}

/// Why a request stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// The client closed its side.
    Finished,
    /// A message was over-size (`OUT_OF_RANGE`) or undecodable
    /// (`INVALID_ARGUMENT`): the call ends with this status.
    Failed(Status),
    /// The server is stopping.
    Stopping,
}

/// Reads the next batch of a request stream: waits for one message (or the
/// end, or the server stopping), then takes what has already arrived without
/// waiting, so a fast client's messages travel on in batches. Messages that
/// arrived before the server stopped are still returned, so a caller can
/// tell which of them it applied.
async fn next_batch<T>(inbound: &mut Streaming<T>, stopping: &CancellationToken) -> Batch<T> {
    let mut batch = Batch {
        items: Vec::new(),
        end: None,
    };
    tokio::select! {
        () = stopping.cancelled() => batch.end = Some(StreamEnd::Stopping),
        message = inbound.message() => match message {
            Ok(Some(message)) => batch.items.push(message),
            Ok(None) => return Batch { items: batch.items, end: Some(StreamEnd::Finished) },
            Err(status) => return Batch { items: batch.items, end: Some(failed(status)) },
        },
    }
    while batch.items.len() < MAX_STREAM_BATCH {
        match pin!(inbound.message()).now_or_never() {
            Some(Ok(Some(message))) => batch.items.push(message),
            // The client closing its side says more than the server
            // stopping: everything it sent has been read.
            Some(Ok(None)) => {
                batch.end = Some(StreamEnd::Finished);
                break;
            }
            Some(Err(status)) => {
                batch.end = Some(failed(status));
                break;
            }
            None => break,
        }
    }
    // Stopping with a full batch: more may have arrived; the next read
    // takes them before the call ends.
    if matches!(batch.end, Some(StreamEnd::Stopping)) && batch.items.len() >= MAX_STREAM_BATCH {
        batch.end = None;
    }
    batch
}

/// tonic reports a message it cannot decode as `INTERNAL` (the text of
/// prost's decode error); to the client it is bad input, the same as a
/// malformed field. Other internal errors (the transport's) stay as they are.
fn failed(status: Status) -> StreamEnd {
    if status.code() == Code::Internal && status.message().contains("failed to decode") {
        StreamEnd::Failed(Status::invalid_argument(format!(
            "undecodable message: {}",
            status.message()
        )))
    } else {
        StreamEnd::Failed(status)
    }
}

/// What every service holds: actor handles and the server's lifecycle tokens.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    /// The task queue.
    pub(crate) queue: QueueHandle,
    /// The worker registry.
    pub(crate) registry: RegistryHandle,
    /// Who is connected, for routing acks and status to sessions.
    pub(crate) index: Arc<SessionIndex>,
    /// Server-wide notices; each session subscribes its own receiver.
    pub(crate) notices: async_broadcast::InactiveReceiver<Notice>,
    /// Cancelled when the server starts draining: no new work is taken.
    pub(crate) draining: CancellationToken,
    /// Cancelled when open calls must end.
    pub(crate) stopping: CancellationToken,
    /// Tracks every session, so shutdown can wait for them to drain.
    pub(crate) sessions: TaskTracker,
    /// Tracks the tasks that streaming handlers spawn, so shutdown can wait for them.
    pub(crate) calls: TaskTracker,
    /// What a worker may ask for when it registers.
    pub(crate) workers: RegistrationLimits,
    /// What a producer may ask for when it submits.
    pub(crate) submit_limits: SubmitLimits,
    /// Session timeouts.
    pub(crate) timing: SessionTiming,
}

impl Core {
    /// Validates a submission, against the server's limits too.
    fn admit(&self, request: v1::SubmitRequest, scope: &Scope) -> Result<NewTask, Error> {
        let task = NewTask::try_from(request)?;
        task.check(&self.submit_limits)?;
        if let Some(target) = &task.target {
            scope.check_target(target)?;
        } else {
            scope.check_target(&Target::Queue(QueueName::default_queue()))?;
        }
        Ok(task.with_fingerprint())
    }

    fn session_deps(&self) -> SessionDeps {
        SessionDeps {
            queue: self.queue.clone(),
            registry: self.registry.clone(),
            tracker: self.sessions.clone(),
            timing: self.timing,
        }
    }
}
