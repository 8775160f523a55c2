//! The nouns of contact-server (ids, tasks, acknowledgements, registrations)
//! and their validation from protobuf messages and request metadata.
//!
//! Everything a client sends passes through a `TryFrom` or `parse` here
//! before it reaches an actor, so the actors only ever see valid values.
//! No IO happens in this module.

use std::{fmt, sync::Arc};

use bytes::Bytes;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    error::Error,
    proto::{self, v1},
};

/// Request metadata key: the worker's chosen id.
pub const CLIENT_ID_KEY: &str = "contact-client-id";
/// Request metadata key: comma-separated queue names the worker takes tasks from.
pub const QUEUES_KEY: &str = "contact-queues";
/// Request metadata key: the worker's in-flight limit.
pub const MAX_IN_FLIGHT_KEY: &str = "contact-max-in-flight";
/// The queue of a task or worker that names none.
pub const DEFAULT_QUEUE: &str = "default";
/// The longest client id or queue name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The most queues one worker may subscribe to.
pub const MAX_QUEUES_PER_WORKER: usize = 32;

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

// === Ids ===

/// A worker's id: chosen by the worker, or a fresh UUID when it names none.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Validates a client-supplied id.
    pub fn parse(id: &str) -> Result<Self, Error> {
        check_name("client id", id)?;
        Ok(Self(id.into()))
    }

    /// A fresh random id for a worker that did not name itself.
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A queue's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Validates a client-supplied queue name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        check_name("queue name", name)?;
        Ok(Self(name.into()))
    }

    /// The queue "default".
    pub fn default_queue() -> Self {
        Self(DEFAULT_QUEUE.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's id, assigned by the server at submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh id for a newly accepted task.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses a client-supplied task id.
    pub fn parse(id: &str) -> Result<Self, Error> {
        Uuid::try_parse(id)
            .map(Self)
            .map_err(|_| Error::InvalidArgument(format!("task id {id:?} is not a valid UUID")))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One getTask stream's identity; a worker that reconnects gets a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh session id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === Tasks ===

/// Where a task should go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any worker subscribed to this queue.
    Queue(QueueName),
    /// This one worker.
    Client(ClientId),
}

/// A validated submission, not yet accepted.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// Where it goes.
    pub target: Target,
    /// Text shown to seed clients.
    pub text: String,
    /// Opaque payload.
    pub payload: Bytes,
}

impl TryFrom<v1::SubmitRequest> for NewTask {
    type Error = Error;

    fn try_from(request: v1::SubmitRequest) -> Result<Self, Error> {
        let target = match (
            request.queue.is_empty(),
            request.target_client_id.is_empty(),
        ) {
            (true, true) => Target::Queue(QueueName::default_queue()),
            (false, true) => Target::Queue(QueueName::parse(&request.queue)?),
            (true, false) => Target::Client(ClientId::parse(&request.target_client_id)?),
            (false, false) => {
                return Err(Error::InvalidArgument(
                    "set queue or target_client_id, not both".into(),
                ));
            }
        };
        Ok(Self {
            target,
            text: request.text,
            payload: request.payload,
        })
    }
}

/// One push of a task to a worker.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The task.
    pub task_id: TaskId,
    /// Its text.
    pub text: Arc<str>,
    /// Its payload.
    pub payload: Bytes,
    /// Its queue, or `None` for a task sent to the worker by id.
    pub queue: Option<QueueName>,
    /// Which delivery this is, from 1.
    pub attempt: u32,
}

impl From<&Delivery> for proto::ServerMsg {
    fn from(delivery: &Delivery) -> Self {
        proto::ServerMsg {
            task: delivery.text.to_string(),
            task_id: delivery.task_id.to_string(),
            payload: delivery.payload.clone(),
            queue: delivery
                .queue
                .as_ref()
                .map(|q| q.as_str().to_owned())
                .unwrap_or_default(),
            attempt: delivery.attempt,
        }
    }
}

/// How a worker says a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Finished; store the result.
    Done,
    /// Failed; retry up to the attempt limit.
    Failed,
    /// Not now; put it back.
    Retry,
}

/// A worker's acknowledgement of one task, validated.
#[derive(Clone, Debug)]
pub struct Ack {
    /// The task, or `None` for "my oldest unacknowledged task" (seed clients).
    pub task_id: Option<TaskId>,
    /// How it ended.
    pub outcome: Outcome,
    /// What the task produced.
    pub result: TaskResult,
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

impl TryFrom<proto::Result> for Ack {
    type Error = Error;

    fn try_from(message: proto::Result) -> Result<Self, Error> {
        let task_id = if message.task_id.is_empty() {
            None
        } else {
            Some(TaskId::parse(&message.task_id)?)
        };
        let outcome = match proto::Outcome::try_from(message.outcome) {
            Ok(proto::Outcome::Unspecified | proto::Outcome::Done) => Outcome::Done,
            Ok(proto::Outcome::Failed) => Outcome::Failed,
            Ok(proto::Outcome::Retry) => Outcome::Retry,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "outcome {} is not a known Outcome value",
                    message.outcome
                )));
            }
        };
        Ok(Self {
            task_id,
            outcome,
            result: TaskResult {
                ret: message.ret,
                output: message.output,
                error: message.error,
            },
        })
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting to be delivered.
    Pending,
    /// Pushed to a worker, not yet acknowledged.
    Delivered,
    /// Acknowledged as done.
    Done,
    /// Given up on.
    DeadLettered,
}

impl TaskState {
    /// Done and dead-lettered tasks never change again.
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Done | TaskState::DeadLettered)
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
        }
    }
}

// === Workers ===

/// What a worker asked for when it opened getTask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Its id.
    pub client_id: ClientId,
    /// True when the server chose the id (the worker sent none).
    pub generated_id: bool,
    /// The queues it takes tasks from.
    pub queues: Arc<[QueueName]>,
    /// How many unacknowledged tasks it may hold.
    pub max_in_flight: u32,
}

impl Registration {
    /// Reads the registration keys from getTask's request metadata; missing
    /// keys take the defaults.
    pub fn from_metadata(
        metadata: &MetadataMap,
        default_max_in_flight: u32,
        max_in_flight_cap: u32,
    ) -> Result<Self, Error> {
        let (client_id, generated_id) = match metadata_text(metadata, CLIENT_ID_KEY)? {
            Some(id) => (ClientId::parse(id)?, false),
            None => (ClientId::generate(), true),
        };
        let queues: Arc<[QueueName]> = match metadata_text(metadata, QUEUES_KEY)? {
            Some(list) => {
                let mut queues = Vec::new();
                for name in list.split(',').map(str::trim) {
                    let queue = QueueName::parse(name)?;
                    if !queues.contains(&queue) {
                        queues.push(queue);
                    }
                }
                if queues.len() > MAX_QUEUES_PER_WORKER {
                    return Err(Error::InvalidArgument(format!(
                        "{QUEUES_KEY} names {} queues; at most {MAX_QUEUES_PER_WORKER} are allowed",
                        queues.len()
                    )));
                }
                queues.into()
            }
            None => Arc::new([QueueName::default_queue()]),
        };
        let max_in_flight = match metadata_text(metadata, MAX_IN_FLIGHT_KEY)? {
            Some(text) => match text.trim().parse::<u32>() {
                Ok(n) if (1..=max_in_flight_cap).contains(&n) => n,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{MAX_IN_FLIGHT_KEY} must be a whole number from 1 to {max_in_flight_cap}, got {text:?}"
                    )));
                }
            },
            None => default_max_in_flight,
        };
        Ok(Self {
            client_id,
            generated_id,
            queues,
            max_in_flight,
        })
    }
}

/// The most status text kept per worker, in bytes.
pub const MAX_STATUS_LEN: usize = 1024;

/// What a worker reports on sendStatus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// Status text, cut to [`MAX_STATUS_LEN`] bytes; empty for a heartbeat.
    pub text: String,
    /// Tasks the worker says it is running.
    pub running: u32,
}

impl From<proto::ClientMsg> for StatusReport {
    fn from(message: proto::ClientMsg) -> Self {
        Self {
            text: status_text(message.msg),
            running: message.running,
        }
    }
}

/// Status text as kept: cut to [`MAX_STATUS_LEN`] bytes on a character
/// boundary, so a chatty worker cannot grow the registry.
fn status_text(mut text: String) -> String {
    if text.len() > MAX_STATUS_LEN {
        let mut end = MAX_STATUS_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The worker id a tellResult or sendStatus call names in its metadata, if any.
pub fn client_id_from_metadata(metadata: &MetadataMap) -> Result<Option<ClientId>, Error> {
    metadata_text(metadata, CLIENT_ID_KEY)?
        .map(ClientId::parse)
        .transpose()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (key, value) in pairs {
            map.insert(*key, value.parse().unwrap());
        }
        map
    }

    /// A worker that says nothing gets a fresh id, the default queue and the
    /// default credit: that is what makes seed clients work.
    #[test]
    fn empty_metadata_takes_defaults() {
        let reg = Registration::from_metadata(&MetadataMap::new(), 8, 100).unwrap();
        assert_eq!(reg.queues.as_ref(), &[QueueName::default_queue()]);
        assert_eq!(reg.max_in_flight, 8);
        assert!(reg.generated_id);
        assert!(Uuid::try_parse(reg.client_id.as_str()).is_ok());
    }

    /// Every registration key is read and checked.
    #[test]
    fn metadata_is_read_and_checked() {
        let reg = Registration::from_metadata(
            &metadata(&[
                (CLIENT_ID_KEY, "w-1"),
                (QUEUES_KEY, "a, b,a"),
                (MAX_IN_FLIGHT_KEY, "3"),
            ]),
            8,
            100,
        )
        .unwrap();
        assert_eq!(reg.client_id.as_str(), "w-1");
        assert!(!reg.generated_id);
        assert_eq!(reg.queues.len(), 2);
        assert_eq!(reg.max_in_flight, 3);

        for bad in [
            vec![(CLIENT_ID_KEY, "has space")],
            vec![(QUEUES_KEY, "a,,b")],
            vec![(MAX_IN_FLIGHT_KEY, "0")],
            vec![(MAX_IN_FLIGHT_KEY, "101")],
            vec![(MAX_IN_FLIGHT_KEY, "many")],
        ] {
            let err = Registration::from_metadata(&metadata(&bad), 8, 100).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }

    /// Status text is cut on a character boundary, never mid-character.
    #[test]
    fn status_text_is_bounded() {
        let report = StatusReport::from(proto::ClientMsg {
            msg: "é".repeat(MAX_STATUS_LEN),
            running: 3,
        });
        assert!(report.text.len() <= MAX_STATUS_LEN);
        assert!(report.text.chars().all(|c| c == 'é'));
        assert_eq!(report.running, 3);
        assert_eq!(status_text("ok".into()), "ok");
    }

    /// A submission names a queue or a worker, never both.
    #[test]
    fn submit_request_validation() {
        let task = NewTask::try_from(v1::SubmitRequest::default()).unwrap();
        assert_eq!(task.target, Target::Queue(QueueName::default_queue()));
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
    }

    /// Acks: a malformed id or outcome is refused; an empty id means "oldest".
    #[test]
    fn ack_validation() {
        let seed_ack = Ack::try_from(proto::Result {
            ret: "ok".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(seed_ack.task_id, None);
        assert_eq!(seed_ack.outcome, Outcome::Done);
        let bad_id = proto::Result {
            task_id: "nope".into(),
            ..Default::default()
        };
        assert!(Ack::try_from(bad_id).is_err());
        let bad_outcome = proto::Result {
            outcome: 99,
            ..Default::default()
        };
        assert!(Ack::try_from(bad_outcome).is_err());
    }
}
