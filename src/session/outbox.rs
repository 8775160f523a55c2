//! The session's end of its getTask stream: the bounded buffer tonic drains
//! towards the worker. It owns the sender (none while the session waits
//! for a resume), knows how much of the buffer is free for tasks, and sends
//! the messages that are not tasks: keepalives, cancels and the final
//! status.
//!
//! Only the session actor uses it; it never waits for room itself (the
//! actor's loop does, with [`wait_for_room`]), so a worker that does not
//! read never stalls the actor.

use tokio::{
    sync::mpsc::{self, error::TrySendError},
    time::Instant,
};
use tonic::Status;

use super::StreamItem;
use crate::{domain::TaskId, proto};

/// Slots kept free in the stream buffer for tasks: one for a control
/// message, one for the final status.
const RESERVED_SLOTS: usize = 2;

/// What became of a task pushed down the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// It is in the buffer.
    Sent,
    /// The buffer had no room.
    Full,
    /// The worker's stream is gone (or the session is detached).
    Closed,
}

/// The getTask stream, as the session writes it.
#[derive(Debug)]
pub(super) struct Outbox {
    /// `None` while detached (the stream dropped, waiting for a resume).
    tx: Option<mpsc::Sender<StreamItem>>,
    /// Workers that asked for receipts or keepalives understand messages
    /// that are not tasks; seed clients never get one.
    extended: bool,
    /// When a message was last sent (or skipped), for keepalives.
    last_sent: Instant,
}

impl Outbox {
    /// A stream just opened at `now`.
    pub(super) fn new(tx: mpsc::Sender<StreamItem>, extended: bool, now: Instant) -> Self {
        Self {
            tx: Some(tx),
            extended,
            last_sent: now,
        }
    }

    /// The stream is there to write to.
    pub(super) fn is_attached(&self) -> bool {
        self.tx.is_some()
    }

    /// The stream dropped: nothing more can be sent.
    pub(super) fn detach(&mut self) {
        self.tx = None;
    }

    /// A sender for futures that watch the stream while the actor selects.
    pub(super) fn sender(&self) -> Option<mpsc::Sender<StreamItem>> {
        self.tx.clone()
    }

    /// When a message was last sent.
    pub(super) fn last_sent(&self) -> Instant {
        self.last_sent
    }

    /// Tasks were pushed at `now`.
    pub(super) fn sent_at(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// How many tasks the buffer has room for now, keeping the reserved
    /// slots (messages of tasks taken back, keepalives and cancels also
    /// take slots until the worker reads). None while detached.
    pub(super) fn room(&self) -> u32 {
        self.tx
            .as_ref()
            .map_or(0, |tx| tx.capacity().saturating_sub(RESERVED_SLOTS) as u32)
    }

    /// How many free buffer slots to wait for before asking for tasks again,
    /// given `free` credit: a quarter of the buffer (or the free credit, if
    /// less), plus the reserved slots. Never more than the buffer holds.
    pub(super) fn room_wanted(&self, free: u32) -> usize {
        let Some(tx) = &self.tx else {
            return 1;
        };
        let batch = (free as usize).min(tx.max_capacity() / 4).max(1);
        (batch + RESERVED_SLOTS).min(tx.max_capacity())
    }

    /// Puts a task's message in the buffer, if it has room.
    pub(super) fn push(&self, message: proto::ServerMsg) -> Pushed {
        let Some(tx) = &self.tx else {
            return Pushed::Closed;
        };
        match tx.try_send(StreamItem::Message(Box::new(message))) {
            Ok(()) => Pushed::Sent,
            Err(TrySendError::Full(_)) => Pushed::Full,
            Err(TrySendError::Closed(_)) => Pushed::Closed,
        }
    }

    /// Tells a worker that understands it that a task was taken back.
    pub(super) fn send_cancel(&mut self, task: TaskId, attempt: u32) {
        if self.extended {
            self.send_control(proto::Kind::Cancel, Some((task, attempt)));
        }
    }

    /// Shows the worker the stream is alive.
    pub(super) fn send_keepalive(&mut self) {
        self.send_control(proto::Kind::Keepalive, None);
    }

    /// Sends a keepalive or cancel message if the stream has room; both are
    /// hints, so a full buffer (the worker is busy reading tasks) skips them.
    fn send_control(&mut self, kind: proto::Kind, task: Option<(TaskId, u32)>) {
        // Counted as sent even when skipped, so a full buffer does not make
        // the keepalive deadline fire again at once.
        self.last_sent = Instant::now();
        // The last slot is kept for the final status.
        let Some(tx) = self.tx.as_ref().filter(|tx| tx.capacity() > 1) else {
            return;
        };
        let (task_id, attempt) = task.map_or((String::new(), 0), |(t, a)| (t.to_string(), a));
        let message = proto::ServerMsg {
            kind: kind.into(),
            task_id,
            attempt,
            ..Default::default()
        };
        // A hint: dropped if a push took the slot meanwhile.
        let _ = tx.try_send(StreamItem::Message(Box::new(message)));
    }

    /// Ends the stream with `status`, if the worker is still reading.
    pub(super) fn end(&self, status: Status) {
        if let Some(tx) = &self.tx {
            // The reserved slot is normally free; if not, the worker is
            // gone or not reading, and the stream ends without a reason.
            let _ = tx.try_send(StreamItem::End(Box::new(status)));
        }
    }
}

/// Resolves when the worker's stream closes; never while detached.
pub(super) async fn closed(tx: Option<&mpsc::Sender<StreamItem>>) {
    match tx {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

/// With `wanted`, resolves once that many buffer slots are free; otherwise
/// (or detached) never. The slots are not kept: this only waits for the
/// worker to read, then the loop asks for tasks again, for a worthwhile
/// batch rather than single tasks.
pub(super) async fn wait_for_room(tx: Option<&mpsc::Sender<StreamItem>>, wanted: Option<usize>) {
    match (tx, wanted) {
        (Some(tx), Some(wanted)) => {
            let _ = tx.reserve_many(wanted).await;
        }
        _ => std::future::pending().await,
    }
}
