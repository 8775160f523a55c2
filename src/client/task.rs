//! A task pushed to the worker, as your code holds it: its fields, the
//! calls that finish or extend it, and the hand-back when it is dropped
//! unfinished. Each call is a command to the driver.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::{
    ClientError,
    command::{Command, PendingOp, request},
};
use crate::proto::{self, Outcome, client_msg::Op};

/// A task pushed to this worker. Finish it with one of the consuming
/// methods; each returns once the server has applied (or refused) it.
/// Dropping an unfinished task hands it back as a retry, which counts as an
/// attempt (like [`Task::retry_after`]).
#[derive(Debug)]
pub struct Task {
    /// The task's id.
    pub id: String,
    /// Which delivery this is (1 the first time).
    pub attempt: u32,
    /// The task's text.
    pub text: String,
    /// The task's payload.
    pub payload: Bytes,
    /// Its queue; empty for a task sent to this worker by id.
    pub queue: String,
    /// Its priority.
    pub priority: i32,
    /// The execution lease: finish or [`Task::extend`] within it.
    pub lease: Duration,
    /// The broadcast it is a copy of, if any.
    pub broadcast_id: String,
    cancelled: CancellationToken,
    commands: mpsc::UnboundedSender<Command>,
    finished: bool,
}

impl Task {
    /// The task a `Task` push announces; `cancelled` fires when the server
    /// takes it back, and `commands` reaches the driver.
    pub(super) fn new(
        message: proto::ServerMsg,
        cancelled: CancellationToken,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        Self {
            id: message.task_id,
            attempt: message.attempt,
            text: message.task,
            payload: message.payload,
            queue: message.queue,
            priority: message.priority,
            lease: Duration::from_millis(message.lease_ms),
            broadcast_id: message.broadcast_id,
            cancelled,
            commands,
            finished: false,
        }
    }

    /// The task is done; `ret` is stored as its result.
    pub async fn done(self, ret: impl Into<String>) -> Result<(), ClientError> {
        self.finish(ack(Outcome::Done, ret.into(), String::new()))
            .await
    }

    /// The task is done, with binary output stored beside `ret`.
    pub async fn done_with_output(
        self,
        ret: impl Into<String>,
        output: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let mut result = ack(Outcome::Done, ret.into(), String::new());
        result.output = output.into();
        self.finish(result).await
    }

    /// The task failed: it is retried after its queue's backoff, until its
    /// attempts run out.
    pub async fn fail(self, error: impl Into<String>) -> Result<(), ClientError> {
        self.finish(ack(Outcome::Failed, String::new(), error.into()))
            .await
    }

    /// The task failed and must not be retried: it is dead-lettered.
    pub async fn fail_permanently(self, error: impl Into<String>) -> Result<(), ClientError> {
        self.finish(ack(Outcome::FailedPermanently, String::new(), error.into()))
            .await
    }

    /// The worker cannot take it now: deliver it again after `delay` (this
    /// counts as an attempt).
    pub async fn retry_after(self, delay: Duration) -> Result<(), ClientError> {
        let mut result = ack(Outcome::Retry, String::new(), String::new());
        result.retry_after_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.finish(result).await
    }

    /// Still working: the lease runs for `lease` from now (capped by the
    /// server's maximum).
    pub async fn extend(&self, lease: Duration) -> Result<(), ClientError> {
        let message = proto::ClientMsg {
            op: Some(Op::Extend(proto::Extend {
                task_id: self.id.clone(),
                attempt: self.attempt,
                lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1),
            })),
            ..Default::default()
        };
        request(&self.commands, message, None).await
    }

    /// Resolves when the task is taken away (a producer cancelled it, its
    /// lease ran out, or the session it came on could not be resumed):
    /// stop working on it; finishing it will be refused. The server says so
    /// only to workers that asked for receipts or keepalives (and only when
    /// its stream has room), so ask for one of them to rely on this.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancelled.cancelled()
    }

    /// True once the server has taken the task away.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    async fn finish(mut self, mut result: proto::Result) -> Result<(), ClientError> {
        self.finished = true;
        result.task_id = self.id.clone();
        result.attempt = self.attempt;
        let message = proto::ClientMsg {
            op: Some(Op::Ack(result)),
            ..Default::default()
        };
        request(
            &self.commands,
            message,
            Some((self.id.clone(), self.attempt)),
        )
        .await
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.finished || self.cancelled.is_cancelled() {
            return;
        }
        let mut result = ack(
            Outcome::Retry,
            String::new(),
            "the worker dropped the task without finishing it".to_owned(),
        );
        result.task_id = self.id.clone();
        result.attempt = self.attempt;
        let message = proto::ClientMsg {
            op: Some(Op::Ack(result)),
            ..Default::default()
        };
        // A stopped driver cannot send it; the lease then brings it back.
        let _ = self.commands.send(Command::Op(Box::new(PendingOp::new(
            message,
            Some((self.id.clone(), self.attempt)),
            None,
        ))));
    }
}

fn ack(outcome: Outcome, ret: String, error: String) -> proto::Result {
    proto::Result {
        outcome: outcome.into(),
        ret,
        error,
        ..Default::default()
    }
}
