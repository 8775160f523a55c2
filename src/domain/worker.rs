//! What workers say: their registration (getTask metadata and body), their
//! acknowledgements and receipts, and their control operations.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use super::{
    CLIENT_ID_KEY, ClientId, KEEPALIVE_MS_KEY, MAX_IN_FLIGHT_KEY, MAX_QUEUES_PER_WORKER,
    MAX_STATUS_LEN, QUEUES_KEY, QueueName, RECEIPTS_KEY, SessionId, TaskId, TaskResult,
    metadata_text, quote,
};
use crate::{error::Error, proto};

/// How a worker says a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Finished; store the result.
    Done,
    /// Failed; retry after a backoff, up to the attempt limit.
    Failed,
    /// Not now; retry after the given or the backoff delay.
    Retry,
    /// Failed for good; dead-letter it now.
    FailedPermanently,
}

/// What an acknowledgement says.
#[derive(Clone, Debug)]
pub enum AckKind {
    /// Only "I have it": the task is running.
    Receipt,
    /// The task ended.
    Outcome {
        /// How.
        outcome: Outcome,
        /// What it produced.
        result: TaskResult,
        /// With `Retry`: wait this long before the next delivery.
        retry_after: Option<Duration>,
    },
}

/// A worker's acknowledgement (or receipt) of one task, validated.
#[derive(Clone, Debug)]
pub struct Ack {
    /// The task, or `None` for "my oldest unacknowledged task" (seed clients).
    pub task_id: Option<TaskId>,
    /// The attempt it is for; `None` means the current one.
    pub attempt: Option<u32>,
    /// What it says.
    pub kind: AckKind,
}

impl TryFrom<proto::Result> for Ack {
    type Error = Error;

    fn try_from(message: proto::Result) -> Result<Self, Error> {
        let task_id = if message.task_id.is_empty() {
            None
        } else {
            Some(TaskId::parse(&message.task_id)?)
        };
        let attempt = (message.attempt > 0).then_some(message.attempt);
        if message.receipt {
            if task_id.is_none() {
                return Err(Error::InvalidArgument(
                    "a receipt must name its task_id".into(),
                ));
            }
            return Ok(Self {
                task_id,
                attempt,
                kind: AckKind::Receipt,
            });
        }
        let outcome = match proto::Outcome::try_from(message.outcome) {
            Ok(proto::Outcome::Unspecified | proto::Outcome::Done) => Outcome::Done,
            Ok(proto::Outcome::Failed) => Outcome::Failed,
            Ok(proto::Outcome::Retry) => Outcome::Retry,
            Ok(proto::Outcome::FailedPermanently) => Outcome::FailedPermanently,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "outcome {} is not a known Outcome value",
                    message.outcome
                )));
            }
        };
        Ok(Self {
            task_id,
            attempt,
            kind: AckKind::Outcome {
                outcome,
                result: TaskResult {
                    ret: message.ret,
                    output: message.output,
                    error: message.error,
                },
                retry_after: (message.retry_after_ms > 0)
                    .then(|| Duration::from_millis(message.retry_after_ms)),
            },
        })
    }
}

/// An operation a worker sends on sendStatus.
#[derive(Clone, Debug)]
pub enum WorkerOp {
    /// An acknowledgement or receipt.
    Ack(Ack),
    /// Extend a task's lease.
    Extend {
        /// The task.
        task_id: TaskId,
        /// The attempt; `None` means the current one.
        attempt: Option<u32>,
        /// The new lease from now; `None` is the task's lease length.
        lease: Option<Duration>,
    },
    /// Set the worker's credit; 0 pauses it.
    Credit(u32),
}

impl WorkerOp {
    /// The operation a ClientMsg carries, if any; `cap` bounds a credit change.
    pub fn from_message(
        op: Option<proto::client_msg::Op>,
        cap: u32,
    ) -> Result<Option<Self>, Error> {
        Ok(match op {
            None => None,
            Some(proto::client_msg::Op::Ack(ack)) => Some(WorkerOp::Ack(Ack::try_from(ack)?)),
            Some(proto::client_msg::Op::Extend(extend)) => Some(WorkerOp::Extend {
                task_id: TaskId::parse(&extend.task_id)?,
                attempt: (extend.attempt > 0).then_some(extend.attempt),
                lease: (extend.lease_ms > 0).then(|| Duration::from_millis(extend.lease_ms)),
            }),
            Some(proto::client_msg::Op::Credit(credit)) => {
                if credit.max_in_flight > cap {
                    return Err(Error::InvalidArgument(format!(
                        "credit {} is above the server's cap of {cap}",
                        credit.max_in_flight
                    )));
                }
                Some(WorkerOp::Credit(credit.max_in_flight))
            }
        })
    }
}

/// A resuming worker's claim: its last session and the tasks it still holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The session it had.
    pub session: SessionId,
    /// The tasks it still holds, with their attempts.
    pub held: Vec<(TaskId, u32)>,
}

/// What a registration may ask for: the server's worker limits, as the
/// configuration sets them (`[workers]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationLimits {
    /// Credit of a worker that names none.
    pub default_max_in_flight: u32,
    /// The most credit a worker may ask for.
    pub max_in_flight_cap: u32,
    /// The shortest keepalive interval a worker may ask for.
    pub min_keepalive: Duration,
    /// How long a keepalive worker may be silent; its interval must be shorter.
    pub liveness_timeout: Duration,
}

/// What a worker asked for when it opened getTask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Its id.
    pub client_id: ClientId,
    /// True when the server chose the id (the worker sent none).
    pub generated_id: bool,
    /// The queues it takes tasks from.
    pub queues: std::sync::Arc<[QueueName]>,
    /// How many unacknowledged tasks it may hold.
    pub max_in_flight: u32,
    /// It confirms receipt of each task.
    pub receipts: bool,
    /// It wants keepalives this often, and promises to be heard from.
    pub keepalive: Option<Duration>,
    /// It resumes an earlier session.
    pub resume: Option<Resume>,
}

impl Registration {
    /// Reads the registration from getTask's request metadata and body;
    /// missing keys take the defaults.
    pub fn from_request(
        metadata: &MetadataMap,
        body: proto::Empty,
        limits: &RegistrationLimits,
    ) -> Result<Self, Error> {
        let (client_id, generated_id) = match metadata_text(metadata, CLIENT_ID_KEY)? {
            Some(id) => (ClientId::parse(id)?, false),
            None => (ClientId::generate(), true),
        };
        let queues: std::sync::Arc<[QueueName]> = match metadata_text(metadata, QUEUES_KEY)? {
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
            None => std::sync::Arc::new([QueueName::default_queue()]),
        };
        let cap = limits.max_in_flight_cap;
        let max_in_flight = match metadata_text(metadata, MAX_IN_FLIGHT_KEY)? {
            Some(text) => match text.trim().parse::<u32>() {
                Ok(n) if (1..=cap).contains(&n) => n,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{MAX_IN_FLIGHT_KEY} must be a whole number from 1 to {cap}, got {}",
                        quote(text)
                    )));
                }
            },
            None => limits.default_max_in_flight,
        };
        let receipts = match metadata_text(metadata, RECEIPTS_KEY)? {
            None => false,
            Some(text) => match text.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{RECEIPTS_KEY} must be \"true\" or \"false\", got {}",
                        quote(text)
                    )));
                }
            },
        };
        let min_keepalive = limits.min_keepalive.as_millis();
        let keepalive = match metadata_text(metadata, KEEPALIVE_MS_KEY)? {
            None => None,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(ms) if u128::from(ms) >= min_keepalive && ms <= 3_600_000 => {
                    Some(Duration::from_millis(ms))
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{KEEPALIVE_MS_KEY} must be a whole number from {min_keepalive} to \
                         3600000, got {}",
                        quote(text)
                    )));
                }
            },
        };
        // A worker heard from only once per keepalive would be expired every
        // liveness timeout, forever: refuse the promise it cannot keep.
        let liveness = limits.liveness_timeout;
        if let Some(every) = keepalive.filter(|every| *every >= liveness) {
            return Err(Error::InvalidArgument(format!(
                "{KEEPALIVE_MS_KEY} {} must be below workers.liveness_timeout_secs ({} s): a \
                 worker promises to be heard from within the liveness timeout",
                every.as_millis(),
                liveness.as_secs()
            )));
        }
        let resume = if body.resume_session_id.is_empty() {
            if !body.held.is_empty() {
                return Err(Error::InvalidArgument(
                    "held tasks without resume_session_id".into(),
                ));
            }
            None
        } else {
            if generated_id {
                return Err(Error::InvalidArgument(format!(
                    "resuming needs the worker's own {CLIENT_ID_KEY}"
                )));
            }
            let held = body
                .held
                .iter()
                .map(|h| Ok((TaskId::parse(&h.task_id)?, h.attempt)))
                .collect::<Result<Vec<_>, Error>>()?;
            Some(Resume {
                session: SessionId::parse(&body.resume_session_id)?,
                held,
            })
        };
        Ok(Self {
            client_id,
            generated_id,
            queues,
            max_in_flight,
            receipts,
            keepalive,
            resume,
        })
    }
}

/// The worker id a tellResult or sendStatus call names in its metadata, if any.
pub fn client_id_from_metadata(metadata: &MetadataMap) -> Result<Option<ClientId>, Error> {
    metadata_text(metadata, CLIENT_ID_KEY)?
        .map(ClientId::parse)
        .transpose()
}

/// What a worker reports on sendStatus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// Status text, cut to [`MAX_STATUS_LEN`] bytes; empty keeps the last one.
    pub text: String,
    /// Tasks the worker says it is running.
    pub running: u32,
}

impl StatusReport {
    /// The status part of a ClientMsg.
    pub fn new(msg: String, running: u32) -> Self {
        Self {
            text: status_text(msg),
            running,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use uuid::Uuid;

    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (key, value) in pairs {
            map.insert(*key, value.parse().unwrap());
        }
        map
    }

    fn limits() -> RegistrationLimits {
        RegistrationLimits {
            default_max_in_flight: 8,
            max_in_flight_cap: 100,
            min_keepalive: Duration::from_millis(100),
            liveness_timeout: Duration::from_secs(15),
        }
    }

    fn register(pairs: &[(&'static str, &str)], body: proto::Empty) -> Result<Registration, Error> {
        Registration::from_request(&metadata(pairs), body, &limits())
    }

    /// A worker that says nothing gets a fresh id, the default queue and the
    /// default credit: that is what makes seed clients work.
    #[test]
    fn empty_metadata_takes_defaults() {
        let reg = register(&[], proto::Empty::default()).unwrap();
        assert_eq!(reg.queues.as_ref(), &[QueueName::default_queue()]);
        assert_eq!(reg.max_in_flight, 8);
        assert!(reg.generated_id && !reg.receipts);
        assert_eq!((reg.keepalive, reg.resume), (None, None));
        assert!(Uuid::try_parse(reg.client_id.as_str()).is_ok());
    }

    /// Every registration key is read and checked.
    #[test]
    fn metadata_is_read_and_checked() {
        let reg = register(
            &[
                (CLIENT_ID_KEY, "w-1"),
                (QUEUES_KEY, "a, b,a"),
                (MAX_IN_FLIGHT_KEY, "3"),
                (RECEIPTS_KEY, "true"),
                (KEEPALIVE_MS_KEY, "250"),
            ],
            proto::Empty::default(),
        )
        .unwrap();
        assert_eq!(reg.client_id.as_str(), "w-1");
        assert!(!reg.generated_id);
        assert_eq!(reg.queues.len(), 2);
        assert_eq!(reg.max_in_flight, 3);
        assert!(reg.receipts);
        assert_eq!(reg.keepalive, Some(Duration::from_millis(250)));

        for bad in [
            vec![(CLIENT_ID_KEY, "has space")],
            vec![(QUEUES_KEY, "a,,b")],
            vec![(MAX_IN_FLIGHT_KEY, "0")],
            vec![(MAX_IN_FLIGHT_KEY, "101")],
            vec![(MAX_IN_FLIGHT_KEY, "many")],
            vec![(RECEIPTS_KEY, "yes")],
            vec![(KEEPALIVE_MS_KEY, "1")],
            // At or above the liveness timeout (15 s by default): the worker
            // would be expired between two of its own heartbeats.
            vec![(KEEPALIVE_MS_KEY, "15000")],
        ] {
            let err = register(&bad, proto::Empty::default()).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }

    /// A rejected value is quoted by its prefix only, however long it is.
    #[test]
    fn errors_quote_a_short_prefix() {
        let huge = "9".repeat(1 << 20);
        let err = register(
            &[(MAX_IN_FLIGHT_KEY, huge.as_str())],
            proto::Empty::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.len() < 300, "{} bytes", err.len());
        assert!(err.contains("1048576 bytes"), "{err}");
        let err = TaskId::parse(&"x".repeat(1 << 20)).unwrap_err().to_string();
        assert!(err.len() < 300 && err.contains("not a valid UUID"), "{err}");
    }

    /// A keepalive at or past the liveness timeout names both values.
    #[test]
    fn keepalive_must_be_below_liveness() {
        let err = register(&[(KEEPALIVE_MS_KEY, "20000")], proto::Empty::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("20000") && err.contains("liveness_timeout_secs (15 s)"),
            "{err}"
        );
        assert!(register(&[(KEEPALIVE_MS_KEY, "14999")], proto::Empty::default()).is_ok());
    }

    /// A resume names a session and the held tasks, and needs a worker id.
    #[test]
    fn resume_is_read_and_checked() {
        let session = Uuid::new_v4().to_string();
        let task = Uuid::new_v4().to_string();
        let body = proto::Empty {
            resume_session_id: session.clone(),
            held: vec![proto::HeldTask {
                task_id: task.clone(),
                attempt: 2,
            }],
        };
        let reg = register(&[(CLIENT_ID_KEY, "w")], body.clone()).unwrap();
        let resume = reg.resume.unwrap();
        assert_eq!(resume.held, vec![(TaskId::parse(&task).unwrap(), 2)]);
        assert!(register(&[], body).is_err(), "a generated id cannot resume");
        let orphan_held = proto::Empty {
            held: vec![proto::HeldTask::default()],
            ..Default::default()
        };
        assert!(register(&[(CLIENT_ID_KEY, "w")], orphan_held).is_err());
    }

    /// Acks: a malformed id or outcome is refused; an empty id means "oldest";
    /// a receipt must name its task.
    #[test]
    fn ack_validation() {
        let seed_ack = Ack::try_from(proto::Result {
            ret: "ok".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(seed_ack.task_id, None);
        assert!(matches!(
            seed_ack.kind,
            AckKind::Outcome {
                outcome: Outcome::Done,
                ..
            }
        ));
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
        let anonymous_receipt = proto::Result {
            receipt: true,
            ..Default::default()
        };
        assert!(Ack::try_from(anonymous_receipt).is_err());
    }

    /// Credit changes are bounded by the cap; 0 (pause) is allowed.
    #[test]
    fn credit_is_bounded() {
        let op = |n| {
            Some(proto::client_msg::Op::Credit(proto::Credit {
                max_in_flight: n,
            }))
        };
        assert!(matches!(
            WorkerOp::from_message(op(0), 10).unwrap(),
            Some(WorkerOp::Credit(0))
        ));
        assert!(WorkerOp::from_message(op(11), 10).is_err());
        assert!(WorkerOp::from_message(None, 10).unwrap().is_none());
    }

    /// Status text is cut on a character boundary, never mid-character.
    #[test]
    fn status_text_is_bounded() {
        let report = StatusReport::new("é".repeat(MAX_STATUS_LEN), 3);
        assert!(report.text.len() <= MAX_STATUS_LEN);
        assert!(report.text.chars().all(|c| c == 'é'));
        assert_eq!(report.running, 3);
        assert_eq!(status_text("ok".into()), "ok");
    }
}
