//! Why a session refused a worker's operation, and how that is told to the
//! worker. The session knows what it holds; for a task it does not hold,
//! only the queue knows what became of it (acknowledged, cancelled, moved
//! on to a later attempt), so [`Rejection::explain`] asks it. The facades
//! only turn the resulting error into a status.

use crate::{
    domain::{ClientId, TaskId, TaskState},
    error::Error,
    queue::QueueHandle,
};

/// Why a session refused an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// This session holds no task with that id.
    NotHeld(TaskId),
    /// An ack without a task id, but nothing is unacknowledged.
    NothingHeld,
    /// The attempt named is not the one this worker holds.
    Stale {
        /// The task.
        task: TaskId,
        /// The attempt the worker named.
        given: u32,
        /// The attempt it holds.
        held: u32,
    },
    /// The task was taken back from this worker.
    Gone {
        /// The task.
        task: TaskId,
        /// Why.
        why: GoneReason,
    },
    /// The session has ended.
    SessionEnded,
}

/// Why a session no longer holds a task it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoneReason {
    /// Its execution lease ran out.
    LeaseExpired,
    /// Its receipt did not come in time.
    ReceiptMissed,
    /// A producer cancelled it.
    Cancelled,
}

impl GoneReason {
    fn describe(self) -> &'static str {
        match self {
            GoneReason::LeaseExpired => "its lease expired",
            GoneReason::ReceiptMissed => "its receipt was not confirmed in time",
            GoneReason::Cancelled => "it was cancelled",
        }
    }
}

impl Rejection {
    /// The error a worker is told, asking the queue what became of a task
    /// this session does not hold when that tells the worker more (acked
    /// already, cancelled, or on a later attempt).
    pub(crate) async fn explain(
        self,
        queue: &QueueHandle,
        worker: &ClientId,
        attempt: Option<u32>,
    ) -> Error {
        let Rejection::NotHeld(id) = self else {
            return self.into_error();
        };
        match queue.get(id).await {
            Err(error) => error,
            Ok(info) if info.state == TaskState::Done && info.worker.as_ref() == Some(worker) => {
                Error::AlreadyExists(format!("task {id} was already acknowledged"))
            }
            Ok(info) if info.state == TaskState::Cancelled => {
                Error::FailedPrecondition(format!("task {id} was cancelled"))
            }
            Ok(info) if attempt.is_some_and(|given| given < info.attempts) => {
                metrics::counter!(crate::metrics::STALE_ACKS_REFUSED).increment(1);
                Error::FailedPrecondition(format!(
                    "attempt {} of task {id} is no longer current (the task is on attempt {})",
                    attempt.unwrap_or(0),
                    info.attempts
                ))
            }
            Ok(_) => Error::FailedPrecondition(format!("task {id} is not held by this worker")),
        }
    }

    /// The error for a rejection the session can explain alone; `NotHeld`
    /// is explained better by [`Rejection::explain`].
    pub(crate) fn into_error(self) -> Error {
        match self {
            Rejection::NotHeld(task) => {
                Error::FailedPrecondition(format!("task {task} is not held by this worker"))
            }
            Rejection::NothingHeld => Error::FailedPrecondition(
                "this worker holds no unacknowledged task for an ack without task_id".into(),
            ),
            Rejection::Stale { task, given, held } => Error::FailedPrecondition(format!(
                "attempt {given} of task {task} is not current; this worker holds attempt {held}"
            )),
            Rejection::Gone { task, why } => Error::FailedPrecondition(format!(
                "task {task} was taken back from this worker: {}",
                why.describe()
            )),
            Rejection::SessionEnded => Error::FailedPrecondition(
                "this worker's session has ended; its tasks were handed back".into(),
            ),
        }
    }
}
