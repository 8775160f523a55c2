//! The task queue: one actor that owns every accepted task from submit to its
//! end, which is where rule 2 ("nothing accepted is lost") lives.
//!
//! A task is `Pending` (in a named queue or held for one worker, maybe not
//! before a time), then `Delivered` to one worker, then `Done`,
//! `DeadLettered` or `Cancelled`. A task whose worker fails it, asks to retry
//! it, lets its lease or receipt run out, or goes away is `Pending` again.
//!
//! Sessions pull: a session asks for up to its free credit with a `Lease`
//! request, which waits in line until tasks are ready (at the latest, at the
//! end of the turn in which it arrived). Waiting sessions are served first
//! come, first served, and a burst is split evenly among them, which shares a
//! queue fairly among its workers. Every answer goes back on the request's
//! own `oneshot`, so this actor never sends on a bounded channel and cannot
//! take part in a cycle. If a session is gone when its answer is sent, the
//! tasks come straight back; a session hands back what it holds with a
//! `Release`.
//!
//! Timers owned here: delayed tasks (producer's not-before time and retry
//! backoff), task TTLs, the wait of a task for an offline worker, and
//! idempotency keys. Execution leases and receipts are timed by the session
//! that holds the task, which tells the queue when one runs out.
//!
//! The interface speaks only of ids and domain values, so a durable store can
//! later sit under the actor's state without changing any caller.
//!
//! This file holds the handle and the messages. The actor's state is split
//! by owner: `actor.rs` (the loop and the handlers that tie the rest
//! together), `entry.rs` (one task, and the one readiness check of a line
//! slot), `backlog.rs` (pending tasks per queue or worker), `lines.rs` (a
//! line's order, and the timer heap), `table.rs` (tasks by id),
//! `waiting.rs` (sessions waiting for tasks), `archive.rs` (finished tasks,
//! watchers, dead letters, idempotency keys, broadcast records) and
//! `policy.rs` (limits, and what becomes of a task that fails or expires).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

use crate::{
    domain::{
        BroadcastId, ClientId, Delivery, NewTask, Outcome, QueueName, SessionId, TaskId, TaskInfo,
        TaskResult,
    },
    error::Error,
    journal::{Journal, Recovered},
};

mod actor;
mod archive;
mod backlog;
mod entry;
mod lines;
mod policy;
mod table;
#[cfg(test)]
mod tests;
mod waiting;

pub(crate) use policy::QueuePolicy;

/// Capacity of the queue's inbox. Producers and sessions wait (backpressure)
/// when it is full; it never drops a message.
pub(crate) const QUEUE_INBOX_CAPACITY: usize = 4096;

/// Why tasks are handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReleaseReason {
    /// The worker went away (stream dropped, expired, resumed without them).
    WorkerLost,
    /// The execution lease ran out.
    LeaseExpired,
    /// The worker did not confirm receipt in time.
    ReceiptMissed,
}

/// Tasks a session hands back to the queue.
#[derive(Debug)]
pub(crate) struct Release {
    /// The session.
    pub(crate) session: SessionId,
    /// Its worker.
    pub(crate) worker: ClientId,
    /// Tasks pushed to the worker, with their attempts: redelivered.
    pub(crate) delivered: Vec<(TaskId, u32)>,
    /// Why they come back.
    pub(crate) reason: ReleaseReason,
    /// Tasks leased but never pushed: back in line, no attempt counted.
    pub(crate) undelivered: Vec<TaskId>,
    /// Set when the session has ended: its worker is offline now, and (when
    /// `true`) its id was one the server made up, so no one can target it
    /// again: forget it unless tasks wait for it.
    pub(crate) session_ended: Option<bool>,
}

/// One checked acknowledgement.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The task.
    pub(crate) task: TaskId,
    /// The attempt it acknowledges.
    pub(crate) attempt: u32,
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// What it produced.
    pub(crate) result: TaskResult,
    /// With `Retry`: the worker's own delay.
    pub(crate) retry_after: Option<Duration>,
}

/// One queue, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueueStats {
    /// The queue.
    pub(crate) name: QueueName,
    /// Tasks waiting, ready or delayed.
    pub(crate) pending: usize,
    /// Of those, the ones that may go now.
    pub(crate) ready: usize,
    /// Workers of this queue waiting for a task.
    pub(crate) waiting_workers: usize,
    /// How long its oldest ready task has been due, if any is ready.
    pub(crate) oldest_ready_age: Option<Duration>,
    /// Its dead letters, kept for requeueing.
    pub(crate) dead_letters: usize,
}

/// How much of a task's result text and error a read copies: all of it,
/// or (for views that show a prefix, such as the console's lists) at most
/// this many bytes of each, so a list of large results costs little.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detail {
    Full,
    Cut(usize),
}

/// Counts since the server started (the same events as the
/// `contact_tasks_*_total` counters), for rates operators watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Tasks accepted.
    pub(crate) submitted: u64,
    /// Tasks acknowledged done.
    pub(crate) done: u64,
    /// Attempts acknowledged as failed (for now or permanently).
    pub(crate) failed: u64,
    /// Tasks dead-lettered.
    pub(crate) dead_lettered: u64,
}

/// What a cancel found.
#[derive(Debug)]
pub(crate) struct Cancelled {
    /// The task, now cancelled.
    pub(crate) info: TaskInfo,
    /// The worker that held it, to be told.
    pub(crate) holder: Option<(ClientId, u32)>,
}

// === Handle ===

/// Cloneable handle to the queue actor. The actor ends when the last handle drops.
#[derive(Clone, Debug)]
pub(crate) struct QueueHandle {
    tx: mpsc::Sender<QueueMsg>,
}

impl QueueHandle {
    /// Starts the queue actor on `tracker`.
    pub(crate) fn spawn(
        policy: QueuePolicy,
        journal: Journal,
        recovered: Option<Recovered>,
        tracker: &TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_INBOX_CAPACITY);
        let mut actor = actor::Queue::new(rx, policy, journal);
        if let Some(recovered) = recovered {
            actor.restore(recovered);
        }
        tracker.spawn(actor.run().instrument(info_span!("queue")));
        Self { tx }
    }

    async fn ask<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<T>) -> QueueMsg,
    ) -> Result<T, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx.send(message(respond_to)).await?;
        Ok(response.await?)
    }

    /// Accepts tasks; one answer per task, in order.
    pub(crate) async fn submit(
        &self,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Result<TaskId, Error>>, Error> {
        self.ask(|respond_to| QueueMsg::Submit { tasks, respond_to })
            .await
    }

    /// Tells the queue a worker is online, so tasks may target it by id.
    pub(crate) async fn attach(&self, client: ClientId) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Attach { client }).await?)
    }

    /// Asks for up to `max` tasks for `session`. The answer arrives on the
    /// returned receiver once tasks are ready; dropping it (or closing it)
    /// cancels the request and any tasks sent to it come back. `turn`
    /// counts the session's leases, so its queues are served in turn.
    pub(crate) async fn lease(
        &self,
        session: SessionId,
        client: ClientId,
        queues: Arc<[QueueName]>,
        max: u32,
        turn: u32,
    ) -> Result<oneshot::Receiver<Vec<Delivery>>, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx
            .send(QueueMsg::Lease(LeaseRequest {
                session,
                client,
                queues,
                max,
                respond_to,
                ticket: 0,
                turn,
            }))
            .await?;
        Ok(response)
    }

    /// Applies acknowledgements a session has checked.
    pub(crate) async fn complete(
        &self,
        worker: ClientId,
        acks: Vec<Completion>,
    ) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Complete { worker, acks }).await?)
    }

    /// Hands back tasks a session holds.
    pub(crate) async fn release(&self, release: Release) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Release(release)).await?)
    }

    /// A task's current state.
    pub(crate) async fn get(&self, task: TaskId) -> Result<TaskInfo, Error> {
        self.ask(|respond_to| QueueMsg::Get { task, respond_to })
            .await?
    }

    /// Resolves when the task is finished (at once if it already is).
    pub(crate) async fn watch(&self, task: TaskId) -> Result<TaskInfo, Error> {
        self.ask(|respond_to| QueueMsg::Watch { task, respond_to })
            .await?
    }

    /// Cancels a task that is not finished.
    pub(crate) async fn cancel(&self, task: TaskId) -> Result<Cancelled, Error> {
        self.ask(|respond_to| QueueMsg::Cancel { task, respond_to })
            .await?
    }

    /// Dead-lettered tasks, oldest first.
    pub(crate) async fn dead_letters(
        &self,
        queue: Option<QueueName>,
        limit: usize,
        detail: Detail,
    ) -> Result<Vec<TaskInfo>, Error> {
        self.ask(|respond_to| QueueMsg::DeadLetters {
            queue,
            limit,
            detail,
            respond_to,
        })
        .await
    }

    /// Puts a dead-lettered task back in line with its attempts reset.
    pub(crate) async fn requeue(&self, task: TaskId) -> Result<TaskInfo, Error> {
        self.ask(|respond_to| QueueMsg::Requeue { task, respond_to })
            .await?
    }

    /// Opens a broadcast; sessions add one copy each with `submit`.
    pub(crate) async fn open_broadcast(&self) -> Result<BroadcastId, Error> {
        self.ask(|respond_to| QueueMsg::OpenBroadcast { respond_to })
            .await?
    }

    /// The copies of a broadcast made so far.
    pub(crate) async fn broadcast_copies(
        &self,
        broadcast: BroadcastId,
        detail: Detail,
    ) -> Result<Vec<TaskInfo>, Error> {
        self.ask(|respond_to| QueueMsg::BroadcastCopies {
            broadcast,
            detail,
            respond_to,
        })
        .await?
    }

    /// Several tasks at once (`None` for one the queue no longer has).
    pub(crate) async fn tasks(
        &self,
        ids: Vec<TaskId>,
        detail: Detail,
    ) -> Result<Vec<Option<TaskInfo>>, Error> {
        self.ask(|respond_to| QueueMsg::Tasks {
            ids,
            detail,
            respond_to,
        })
        .await
    }

    /// The counts since start, for the console's rates.
    pub(crate) async fn totals(&self) -> Result<Totals, Error> {
        self.ask(|respond_to| QueueMsg::Totals { respond_to }).await
    }

    /// The broadcasts whose copies are kept, newest first, at most `limit`.
    pub(crate) async fn broadcasts(&self, limit: usize) -> Result<Vec<BroadcastId>, Error> {
        self.ask(|respond_to| QueueMsg::Broadcasts { limit, respond_to })
            .await
    }

    /// Every queue with pending tasks, waiting workers or dead letters, by name.
    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        self.ask(|respond_to| QueueMsg::QueueStats { respond_to })
            .await
    }

    /// Publishes the queue's gauges (depth and oldest-task age per queue,
    /// tasks in flight); `/metrics` asks before each scrape.
    pub(crate) async fn publish_gauges(&self) -> Result<(), Error> {
        self.ask(|respond_to| QueueMsg::PublishGauges { respond_to })
            .await
    }

    /// A worker resumes a session from before the server's restart, naming
    /// the tasks it still holds: those the journal has delivered to it at
    /// those attempts move to `session`, unchanged (no second execution);
    /// the rest of its recovered tasks go back in line. The deliveries it
    /// keeps; none when the journal had none delivered to it.
    pub(crate) async fn adopt(
        &self,
        worker: ClientId,
        session: SessionId,
        held: Vec<(TaskId, u32)>,
    ) -> Result<Vec<Delivery>, Error> {
        self.ask(|respond_to| QueueMsg::Adopt {
            worker,
            session,
            held,
            respond_to,
        })
        .await
    }

    /// Removes every dead letter (of `queue`, when given) for good; how many.
    pub(crate) async fn purge_dead_letters(&self, queue: Option<QueueName>) -> Result<u64, Error> {
        self.ask(|respond_to| QueueMsg::PurgeDeadLetters { queue, respond_to })
            .await
    }

    /// Stops accepting new tasks; everything already accepted is still served.
    pub(crate) async fn drain(&self) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Drain).await?)
    }
}

/// A broadcast task as sessions receive it, to submit their own copy.
#[derive(Clone, Debug)]
pub(crate) struct BroadcastTask {
    /// The broadcast.
    pub(crate) id: BroadcastId,
    /// Workers of this queue get a copy.
    pub(crate) queue: QueueName,
    /// The task's text.
    pub(crate) text: String,
    /// The task's payload.
    pub(crate) payload: Bytes,
}

// === Messages ===

#[derive(Debug)]
enum QueueMsg {
    /// Accept new tasks.
    Submit {
        tasks: Vec<NewTask>,
        respond_to: oneshot::Sender<Vec<Result<TaskId, Error>>>,
    },
    /// A worker is online.
    Attach { client: ClientId },
    /// A session wants tasks.
    Lease(LeaseRequest),
    /// A session applied acknowledgements.
    Complete {
        worker: ClientId,
        acks: Vec<Completion>,
    },
    /// A session hands back tasks.
    Release(Release),
    /// Read one task.
    Get {
        task: TaskId,
        respond_to: oneshot::Sender<Result<TaskInfo, Error>>,
    },
    /// Wait for one task to finish.
    Watch {
        task: TaskId,
        respond_to: oneshot::Sender<Result<TaskInfo, Error>>,
    },
    /// Cancel one task.
    Cancel {
        task: TaskId,
        respond_to: oneshot::Sender<Result<Cancelled, Error>>,
    },
    /// List dead letters.
    DeadLetters {
        queue: Option<QueueName>,
        limit: usize,
        detail: Detail,
        respond_to: oneshot::Sender<Vec<TaskInfo>>,
    },
    /// Requeue a dead letter.
    Requeue {
        task: TaskId,
        respond_to: oneshot::Sender<Result<TaskInfo, Error>>,
    },
    /// Start a broadcast record.
    OpenBroadcast {
        respond_to: oneshot::Sender<Result<BroadcastId, Error>>,
    },
    /// Read a broadcast's copies.
    BroadcastCopies {
        broadcast: BroadcastId,
        detail: Detail,
        respond_to: oneshot::Sender<Result<Vec<TaskInfo>, Error>>,
    },
    /// Report every queue.
    QueueStats {
        respond_to: oneshot::Sender<Vec<QueueStats>>,
    },
    /// Several tasks.
    Tasks {
        ids: Vec<TaskId>,
        detail: Detail,
        respond_to: oneshot::Sender<Vec<Option<TaskInfo>>>,
    },
    /// The counts since start.
    Totals { respond_to: oneshot::Sender<Totals> },
    /// The broadcasts kept, newest first, at most `limit`.
    Broadcasts {
        limit: usize,
        respond_to: oneshot::Sender<Vec<BroadcastId>>,
    },
    /// Set the gauges, then answer.
    PublishGauges { respond_to: oneshot::Sender<()> },
    /// The server is stopping: refuse new tasks.
    Drain,
    /// Remove dead letters (of one queue, or all).
    PurgeDeadLetters {
        queue: Option<QueueName>,
        respond_to: oneshot::Sender<u64>,
    },
    /// A worker resumes a session the journal recovered: the tasks it
    /// names (at their attempts) become its new session's.
    Adopt {
        worker: ClientId,
        session: SessionId,
        held: Vec<(TaskId, u32)>,
        respond_to: oneshot::Sender<Vec<Delivery>>,
    },
}

#[derive(Debug)]
struct LeaseRequest {
    session: SessionId,
    client: ClientId,
    queues: Arc<[QueueName]>,
    max: u32,
    respond_to: oneshot::Sender<Vec<Delivery>>,
    /// Tells a parked request from an older one of the same session.
    ticket: u64,
    /// Which of the session's leases this is: a worker of several queues is
    /// served starting from queue `turn % queues.len()`, so each gets its turn.
    turn: u32,
}
