//! Tasks: what producers submit, what workers are pushed, and what
//! producers read back.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::{BroadcastId, ClientId, MAX_NAME_LEN, QueueName, TaskId};
use crate::{
    error::Error,
    proto::{self, v1},
};

/// Where a task should go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Any worker subscribed to this queue.
    Queue(QueueName),
    /// This one worker.
    Client(ClientId),
}

/// A validated submission, not yet accepted.
#[derive(Clone, Debug, Default)]
pub struct NewTask {
    /// Where it goes; `None` is the default queue.
    pub target: Option<Target>,
    /// Text shown to seed clients.
    pub text: String,
    /// Opaque payload.
    pub payload: Bytes,
    /// Higher runs first.
    pub priority: i32,
    /// Not delivered before this time (ms since the Unix epoch); 0: at once.
    pub not_before_unix_ms: u64,
    /// Dead-lettered as expired if not started within this long.
    pub ttl: Option<Duration>,
    /// Resubmitting the same key within the window returns the first task.
    pub idempotency_key: Option<String>,
    /// The execution lease of each delivery; `None` is the server default.
    pub lease: Option<Duration>,
    /// The broadcast this task is a copy of.
    pub broadcast: Option<BroadcastId>,
}

impl NewTask {
    /// Where the task goes, the default queue when it names nothing.
    pub fn target(&self) -> Target {
        self.target
            .clone()
            .unwrap_or_else(|| Target::Queue(QueueName::default_queue()))
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

impl TryFrom<v1::SubmitRequest> for NewTask {
    type Error = Error;

    fn try_from(request: v1::SubmitRequest) -> Result<Self, Error> {
        let target = match (
            request.queue.is_empty(),
            request.target_client_id.is_empty(),
        ) {
            (true, true) => None,
            (false, true) => Some(Target::Queue(QueueName::parse(&request.queue)?)),
            (true, false) => Some(Target::Client(ClientId::parse(&request.target_client_id)?)),
            (false, false) => {
                return Err(Error::InvalidArgument(
                    "set queue or target_client_id, not both".into(),
                ));
            }
        };
        let idempotency_key = match request.idempotency_key {
            key if key.is_empty() => None,
            key if key.len() > MAX_NAME_LEN => {
                return Err(Error::InvalidArgument(format!(
                    "idempotency_key must be at most {MAX_NAME_LEN} bytes"
                )));
            }
            key => Some(key),
        };
        Ok(Self {
            target,
            text: request.text,
            payload: request.payload,
            priority: request.priority,
            not_before_unix_ms: request.not_before_unix_ms,
            ttl: millis(request.ttl_ms),
            idempotency_key,
            lease: millis(request.lease_ms),
            broadcast: None,
        })
    }
}

/// One push of a task to a worker.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The task.
    pub task_id: TaskId,
    /// Its text, if it has any.
    pub text: Option<Arc<str>>,
    /// Its payload.
    pub payload: Bytes,
    /// Its queue, or `None` for a task sent to the worker by id.
    pub queue: Option<QueueName>,
    /// Which delivery this is, from 1.
    pub attempt: u32,
    /// The execution lease of this delivery.
    pub lease: Duration,
    /// Its priority.
    pub priority: i32,
    /// The broadcast it is a copy of.
    pub broadcast: Option<BroadcastId>,
}

impl Delivery {
    /// The task message pushed to the worker.
    pub fn to_message(&self, receipt_required: bool) -> proto::ServerMsg {
        proto::ServerMsg {
            task: self.text.as_deref().unwrap_or_default().to_owned(),
            task_id: self.task_id.to_string(),
            payload: self.payload.clone(),
            queue: self
                .queue
                .as_ref()
                .map(|q| q.as_str().to_owned())
                .unwrap_or_default(),
            attempt: self.attempt,
            kind: proto::Kind::Task.into(),
            lease_ms: self.lease.as_millis() as u64,
            receipt_required,
            broadcast_id: self.broadcast.map(|b| b.to_string()).unwrap_or_default(),
            priority: self.priority,
        }
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting to be delivered (maybe not before a time).
    Pending,
    /// Pushed to a worker, not yet acknowledged.
    Delivered,
    /// Acknowledged as done.
    Done,
    /// Given up on.
    DeadLettered,
    /// Cancelled by a producer.
    Cancelled,
}

impl TaskState {
    /// Finished tasks never change again (but a dead letter can be requeued).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Done | TaskState::DeadLettered | TaskState::Cancelled
        )
    }
}

/// Why a task was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// Its queue's `max_attempts` deliveries were used up.
    MaxAttempts,
    /// A worker said it failed and must not be retried.
    FailedPermanently,
    /// Its TTL passed before any worker started it.
    Expired,
    /// Its target worker stayed offline past the target TTL.
    Undeliverable,
}

impl DeadLetterReason {
    /// The reason as a metric label and in TaskInfo.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MaxAttempts => "max_attempts",
            DeadLetterReason::FailedPermanently => "failed_permanently",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Undeliverable => "undeliverable",
        }
    }
}

/// What a worker reports with an acknowledgement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskResult {
    /// Result text.
    pub ret: String,
    /// Binary output.
    pub output: Bytes,
    /// Error text.
    pub error: String,
}

impl TaskResult {
    /// True when the worker reported nothing at all.
    pub fn is_empty(&self) -> bool {
        self.ret.is_empty() && self.output.is_empty() && self.error.is_empty()
    }
}

/// A snapshot of one task, as producers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task.
    pub id: TaskId,
    /// Its state.
    pub state: TaskState,
    /// Where it was sent.
    pub target: Target,
    /// How many deliveries so far.
    pub attempts: u32,
    /// The worker holding it now, or the one that finished it.
    pub worker: Option<ClientId>,
    /// Its result (or last error).
    pub result: TaskResult,
    /// Its priority.
    pub priority: i32,
    /// While pending: not before this time (ms since the Unix epoch); 0: now.
    pub not_before_unix_ms: u64,
    /// Why it was dead-lettered.
    pub dead_letter_reason: Option<DeadLetterReason>,
    /// The broadcast it is a copy of.
    pub broadcast: Option<BroadcastId>,
}

impl From<TaskInfo> for v1::TaskInfo {
    fn from(info: TaskInfo) -> Self {
        let (queue, target_client_id) = match info.target {
            Target::Queue(q) => (q.as_str().to_owned(), String::new()),
            Target::Client(c) => (String::new(), c.as_str().to_owned()),
        };
        let state = match info.state {
            TaskState::Pending => v1::TaskState::Pending,
            TaskState::Delivered => v1::TaskState::Delivered,
            TaskState::Done => v1::TaskState::Done,
            TaskState::DeadLettered => v1::TaskState::DeadLettered,
            TaskState::Cancelled => v1::TaskState::Cancelled,
        };
        v1::TaskInfo {
            task_id: info.id.to_string(),
            state: state.into(),
            queue,
            target_client_id,
            attempts: info.attempts,
            worker_id: info
                .worker
                .map(|w| w.as_str().to_owned())
                .unwrap_or_default(),
            ret: info.result.ret,
            output: info.result.output,
            error: info.result.error,
            priority: info.priority,
            not_before_unix_ms: info.not_before_unix_ms,
            dead_letter_reason: info
                .dead_letter_reason
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            broadcast_id: info.broadcast.map(|b| b.to_string()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A submission names a queue or a worker, never both; optional limits
    /// of 0 mean "none".
    #[test]
    fn submit_request_validation() {
        let task = NewTask::try_from(v1::SubmitRequest::default()).unwrap();
        assert_eq!(task.target(), Target::Queue(QueueName::default_queue()));
        assert_eq!(
            (task.ttl, task.lease, task.idempotency_key),
            (None, None, None)
        );
        let both = v1::SubmitRequest {
            queue: "q".into(),
            target_client_id: "w".into(),
            ..Default::default()
        };
        assert!(NewTask::try_from(both).is_err());
        let bad_queue = v1::SubmitRequest {
            queue: "no/slash".into(),
            ..Default::default()
        };
        assert!(NewTask::try_from(bad_queue).is_err());
        let long_key = v1::SubmitRequest {
            idempotency_key: "k".repeat(MAX_NAME_LEN + 1),
            ..Default::default()
        };
        assert!(NewTask::try_from(long_key).is_err());
        let full = NewTask::try_from(v1::SubmitRequest {
            ttl_ms: 5,
            lease_ms: 7,
            idempotency_key: "k".into(),
            priority: -3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(full.ttl, Some(Duration::from_millis(5)));
        assert_eq!(full.lease, Some(Duration::from_millis(7)));
        assert_eq!(full.priority, -3);
    }
}
