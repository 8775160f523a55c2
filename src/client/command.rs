//! What [`Task`](super::Task)s and the [`WorkerHandle`](super::WorkerHandle)
//! ask of the driver: the [`Command`]s on its inbox, the [`PendingOp`] a
//! control message becomes while it waits for its answer, and [`request`],
//! the round trip both use.

use tokio::sync::{mpsc, oneshot};

use super::ClientError;
use crate::proto;

/// What tasks and handles ask of the driver.
#[derive(Debug)]
pub(super) enum Command {
    /// Send a control message.
    Op(Box<PendingOp>),
    /// Change the credit.
    Credit {
        max_in_flight: u32,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Drain, then report having stopped.
    Drain { done: oneshot::Sender<()> },
}

/// A control message on its way, and who waits for its answer.
#[derive(Debug)]
pub(super) struct PendingOp {
    pub(super) message: proto::ClientMsg,
    /// The task (and attempt) it finishes: forgotten once answered.
    pub(super) settles: Option<(String, u32)>,
    pub(super) reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// A credit that becomes the worker's own once accepted.
    pub(super) credit: Option<u32>,
    /// Sent before on a connection that dropped unanswered.
    pub(super) resent: bool,
}

impl PendingOp {
    pub(super) fn new(
        message: proto::ClientMsg,
        settles: Option<(String, u32)>,
        reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> Self {
        Self {
            message,
            settles,
            reply,
            credit: None,
            resent: false,
        }
    }

    /// A message nobody waits for (receipt, heartbeat, pause).
    pub(super) fn unanswered(message: proto::ClientMsg) -> Self {
        Self::new(message, None, None)
    }
}

/// Sends one control message through the driver and waits for its answer.
pub(super) async fn request(
    commands: &mpsc::UnboundedSender<Command>,
    message: proto::ClientMsg,
    settles: Option<(String, u32)>,
) -> Result<(), ClientError> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(Command::Op(Box::new(PendingOp::new(
            message,
            settles,
            Some(reply),
        ))))
        .map_err(|_| ClientError::Stopped)?;
    answer.await.map_err(|_| ClientError::Stopped)?
}
