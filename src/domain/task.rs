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

/// What a submission may ask for under the server's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitLimits {
    /// The furthest in the future a not-before time may lie
    /// (`tasks.max_delay_secs`).
    pub max_delay: Duration,
    /// The largest message the server sends (`server.max_message_bytes`): a
    /// task whose push would be larger could never be delivered.
    pub max_message_bytes: usize,
}

/// Bytes of a pushed `ServerMsg` beyond its text, payload and queue, at the
/// most: task id and broadcast id (36-byte UUIDs), and attempt, lease,
/// receipt flag and priority at their longest varints (a task's kind is
/// `KIND_TASK`, 0, which is not encoded). Every field number is below 16, so
/// each key is one byte.
const PUSH_FIXED_BYTES: usize = (2 + 36) * 2 + (1 + 5) + (1 + 10) + (1 + 1) + (1 + 10);

/// The encoded size of one length-delimited field (absent when empty).
fn field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(len as u64) + len
    }
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
    /// [`NewTask::fingerprint`] of a task with an idempotency key, worked
    /// out by the request handler so the queue actor does not hash
    /// payloads on its turn.
    pub key_fingerprint: Option<u64>,
}

impl NewTask {
    /// Works out the key's fingerprint, off the queue actor.
    pub fn with_fingerprint(mut self) -> Self {
        if self.idempotency_key.is_some() {
            self.key_fingerprint = Some(self.fingerprint());
        }
        self
    }

    /// The fingerprint a key is checked with: the handler's, else worked out now.
    pub fn key_fingerprint(&self) -> u64 {
        self.key_fingerprint.unwrap_or_else(|| self.fingerprint())
    }

    /// Checks what only the server's limits can tell: that the task can be
    /// pushed to a worker at all, and that it is not put off absurdly far.
    pub fn check(&self, limits: &SubmitLimits) -> Result<(), Error> {
        let push = self.push_len();
        if push > limits.max_message_bytes {
            return Err(Error::InvalidArgument(format!(
                "the task would be pushed to workers as a {push}-byte message, over \
                 server.max_message_bytes ({}): shorten its text and payload",
                limits.max_message_bytes
            )));
        }
        let latest = crate::clock::unix_ms_now()
            .saturating_add(u64::try_from(limits.max_delay.as_millis()).unwrap_or(u64::MAX));
        if self.not_before_unix_ms > latest {
            return Err(Error::InvalidArgument(format!(
                "not_before_unix_ms {} is more than tasks.max_delay_secs ({} s) from now",
                self.not_before_unix_ms,
                limits.max_delay.as_secs()
            )));
        }
        Ok(())
    }

    /// What makes two submissions "the same task" for an idempotency key:
    /// where it goes, its text, payload, priority, TTL and lease. The
    /// not-before time is left out: a producer retrying "in ten seconds"
    /// computes a new one. FNV-1a, so the value never depends on the
    /// toolchain (it will be kept on disk).
    pub fn fingerprint(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            // Each field is length-prefixed, so ("ab", "c") differs from ("a", "bc").
            for byte in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(PRIME);
            }
        };
        match self.target() {
            Target::Queue(queue) => {
                feed(b"queue");
                feed(queue.as_str().as_bytes());
            }
            Target::Client(client) => {
                feed(b"client");
                feed(client.as_str().as_bytes());
            }
        }
        feed(self.text.as_bytes());
        feed(&self.payload);
        feed(&self.priority.to_le_bytes());
        let millis = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as u64);
        feed(&millis(self.ttl).to_le_bytes());
        feed(&millis(self.lease).to_le_bytes());
        hash
    }

    /// The most bytes a push of this task can take on the wire.
    fn push_len(&self) -> usize {
        let queue_len = match &self.target {
            Some(Target::Queue(queue)) => queue.as_str().len(),
            Some(Target::Client(_)) => 0,
            None => super::DEFAULT_QUEUE.len(),
        };
        PUSH_FIXED_BYTES
            + field_len(self.text.len())
            + field_len(self.payload.len())
            + field_len(queue_len)
    }

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
            key_fingerprint: None,
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

    /// Reads a reason written by [`DeadLetterReason::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::MaxAttempts,
            Self::FailedPermanently,
            Self::Expired,
            Self::Undeliverable,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
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
    /// Its text while the server still keeps it (until it is done or
    /// cancelled): the console shows it; the Tasks API leaves it out, since
    /// a producer has it.
    pub text: Option<Arc<str>>,
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

    /// The size a submission is checked against is the largest push of it
    /// there can be, and no larger: every field at its longest.
    #[test]
    fn push_len_is_the_largest_push() {
        use prost::Message as _;
        let queue = QueueName::parse(&"q".repeat(MAX_NAME_LEN)).unwrap();
        let task = NewTask {
            target: Some(Target::Queue(queue.clone())),
            text: "t".repeat(300),
            payload: Bytes::from(vec![7; 70_000]),
            ..NewTask::default()
        };
        let delivery = Delivery {
            task_id: TaskId::generate(),
            text: Some(task.text.as_str().into()),
            payload: task.payload.clone(),
            queue: Some(queue),
            attempt: u32::MAX,
            lease: Duration::from_millis(u64::MAX),
            priority: -1,
            broadcast: Some(BroadcastId::generate()),
        };
        assert_eq!(delivery.to_message(true).encoded_len(), task.push_len());
        let limits = |max_message_bytes| SubmitLimits {
            max_delay: Duration::from_secs(60),
            max_message_bytes,
        };
        assert!(task.check(&limits(task.push_len())).is_ok());
        let err = task.check(&limits(task.push_len() - 1)).unwrap_err();
        assert!(
            err.to_string().contains("server.max_message_bytes"),
            "{err}"
        );
    }

    /// The fingerprint tells tasks apart by every field a retry repeats, and
    /// ignores the not-before time a retry computes anew.
    #[test]
    fn fingerprints_tell_tasks_apart() {
        let task = NewTask {
            text: "resize".into(),
            payload: Bytes::from_static(b"img-1"),
            ..NewTask::default()
        };
        let later = NewTask {
            not_before_unix_ms: 12_345,
            ..task.clone()
        };
        assert_eq!(task.fingerprint(), later.fingerprint());
        let named_default = NewTask {
            target: Some(Target::Queue(QueueName::default_queue())),
            ..task.clone()
        };
        assert_eq!(task.fingerprint(), named_default.fingerprint());
        for other in [
            NewTask {
                text: "resiz".into(),
                payload: Bytes::from_static(b"eimg-1"),
                ..task.clone()
            },
            NewTask {
                priority: 1,
                ..task.clone()
            },
            NewTask {
                ttl: Some(Duration::from_secs(1)),
                ..task.clone()
            },
            NewTask {
                target: Some(Target::Queue(QueueName::parse("mail").unwrap())),
                ..task.clone()
            },
        ] {
            assert_ne!(task.fingerprint(), other.fingerprint(), "{other:?}");
        }
    }

    /// A not-before time past the maximum delay is refused, naming the key.
    #[test]
    fn not_before_is_bounded() {
        let limits = SubmitLimits {
            max_delay: Duration::from_secs(60),
            max_message_bytes: 1 << 20,
        };
        let soon = NewTask {
            not_before_unix_ms: crate::clock::unix_ms_now() + 30_000,
            ..NewTask::default()
        };
        assert!(soon.check(&limits).is_ok());
        let never = NewTask {
            not_before_unix_ms: u64::MAX,
            ..NewTask::default()
        };
        let err = never.check(&limits).unwrap_err();
        assert!(
            err.to_string().contains("tasks.max_delay_secs (60 s)"),
            "{err}"
        );
    }

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
