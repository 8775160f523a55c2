//! The session: one actor per worker session (a getTask stream, and the
//! grace period after it drops). It owns the worker's credit, asks the queue
//! for tasks only while it has credit, pushes them down the stream, and times
//! what it holds: each delivery's execution lease and receipt, the worker's
//! liveness, and the stream's keepalives.
//!
//! Every acknowledgement, receipt, extension and credit change reaches the
//! session that holds the task (from tellResult or sendStatus handlers, on
//! this session's inbox with a `oneshot` for the answer), so fencing by
//! attempt needs no extra round trip.
//!
//! However the session ends (the worker leaves, crashes, goes silent or does
//! not resume in time; the server drains), it hands every task it holds back
//! to the queue before it exits. A worker that resumes takes over the tasks
//! it still holds instead.
//!
//! Talks to: the queue (lease, complete, release, submit of broadcast copies)
//! and the registry (detached, closed), both over their bounded inboxes;
//! neither ever sends back to a session on a bounded channel.
//!
//! This file holds the handle, the messages and the types callers see. The
//! actor's loop and handlers are in `actor` (the resume handover in
//! `actor/resume`); the held-task list and its deadlines in `held`; the
//! getTask stream's buffer and control messages in `outbox`; how a session
//! ends, and the status it says so with, in `end`; the record and counters
//! the registry reads, in `worker`; and the registry itself, the actor where
//! sessions register, in `registry` (a part of this module, so the two
//! handles that know each other do not make an import cycle between
//! modules).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::{Instrument, info_span};

use crate::{
    domain::{ClientId, Registration, SessionId, TaskId, WorkerOp},
    error::Error,
    proto,
    queue::{BroadcastTask, QueueHandle},
};
use registry::RegistryHandle;

mod actor;
mod end;
mod held;
mod outbox;
pub(crate) mod registry;
mod rejection;
mod worker;

use actor::Session;
use held::Held;
pub(crate) use held::HeldView;
pub(crate) use rejection::{GoneReason, Rejection};
pub(crate) use worker::{WorkerRecord, WorkerStats};

/// Capacity of a session's inbox (operations from tellResult and sendStatus
/// handlers, cancellations).
pub(crate) const SESSION_INBOX_CAPACITY: usize = 64;

/// What a session puts in its getTask stream's buffer: boxed, so that each
/// buffer slot is two words. Every worker's buffer has room for the server's
/// credit cap, and an idle worker's memory is dominated by such buffers.
#[derive(Debug)]
pub(crate) enum StreamItem {
    /// A message to the worker.
    Message(Box<proto::ServerMsg>),
    /// The stream ends with this status.
    End(Box<Status>),
}

impl StreamItem {
    /// The item as tonic streams it.
    pub(crate) fn into_result(self) -> Result<proto::ServerMsg, Status> {
        match self {
            StreamItem::Message(message) => Ok(*message),
            StreamItem::End(status) => Err(*status),
        }
    }
}

/// Server-wide notices, broadcast to every session.
#[derive(Clone, Debug)]
pub(crate) enum Notice {
    /// Take no new tasks; end once everything held is acknowledged.
    Drain,
    /// End now, handing back whatever is held.
    ShutdownNow,
}

/// Session timing, from the `[workers]` config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionTiming {
    /// How long a worker has to confirm receipt.
    pub(crate) receipt_timeout: Duration,
    /// How long a keepalive worker may stay silent.
    pub(crate) liveness_timeout: Duration,
    /// How long a dropped worker's tasks wait for it to resume.
    pub(crate) resume_grace: Duration,
    /// The longest lease an extension may ask for.
    pub(crate) max_lease: Duration,
}

/// What a session needs from the rest of the server.
#[derive(Clone, Debug)]
pub(crate) struct SessionDeps {
    /// The task queue.
    pub(crate) queue: QueueHandle,
    /// The worker registry.
    pub(crate) registry: RegistryHandle,
    /// Where sessions are spawned and awaited at shutdown.
    pub(crate) tracker: TaskTracker,
    /// Timeouts.
    pub(crate) timing: SessionTiming,
}

/// A started session, as getTask answers it.
#[derive(Debug)]
pub(crate) struct Started {
    /// The worker's id.
    pub(crate) client: ClientId,
    /// The session's id, for a later resume.
    pub(crate) session: SessionId,
    /// How many held tasks a resume kept (0 without a resume).
    pub(crate) resumed: usize,
}

// === Handle ===

/// Cloneable handle to one session.
#[derive(Clone, Debug)]
pub(crate) struct SessionHandle {
    tx: mpsc::Sender<SessionMsg>,
    id: SessionId,
    client: ClientId,
    /// The principal that registered it, when authentication is on: only
    /// that principal's calls reach the session.
    owner: Option<Arc<str>>,
    /// Its counters, which the session keeps current.
    stats: Arc<WorkerStats>,
}

impl SessionHandle {
    /// Registers the worker and starts its session, which pushes into
    /// `stream_tx`. A resuming worker takes over the tasks it still holds from
    /// its earlier session. `notices` must be subscribed before the caller
    /// checked that the server is not draining, so no notice is missed.
    pub(crate) async fn start(
        registration: Registration,
        peer: Option<SocketAddr>,
        owner: Option<Arc<str>>,
        stream_tx: mpsc::Sender<StreamItem>,
        notices: async_broadcast::Receiver<Notice>,
        deps: &SessionDeps,
    ) -> Result<Started, Error> {
        let (tx, inbox) = mpsc::channel(SESSION_INBOX_CAPACITY);
        let stats = Arc::new(WorkerStats {
            max_in_flight: registration.max_in_flight.into(),
            ..Default::default()
        });
        let handle = Self {
            tx,
            id: SessionId::generate(),
            client: registration.client_id.clone(),
            owner,
            stats: stats.clone(),
        };
        let record = WorkerRecord {
            client: registration.client_id.clone(),
            generated_id: registration.generated_id,
            session: handle.clone(),
            peer,
            queues: registration.queues.clone(),
            stats: stats.clone(),
        };
        let span =
            info_span!("session", client.id = %registration.client_id, session.id = %handle.id);
        let resume = registration.resume.clone();
        let mut session = Session::new(
            handle.id,
            registration,
            inbox,
            stream_tx,
            notices,
            deps,
            stats,
        );
        // Registration runs in the session's own task, so a caller that goes
        // away mid-start (a reset stream, an expired deadline) cannot leave a
        // registered worker without a session: once registered, the session
        // runs, sees its stream gone, and ends itself.
        let (started_tx, started) = oneshot::channel();
        let started_info = (handle.client.clone(), handle.id);
        deps.tracker.spawn(
            async move {
                let previous = match session
                    .registry
                    .register(record, resume.as_ref().map(|r| r.session))
                    .await
                {
                    Ok(previous) => previous,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                let resumed = match (previous, resume) {
                    (Some(previous), resume) => session.take_over(previous, resume).await,
                    // A session this process never had: one from before a
                    // restart, which the queue may still hold tasks for.
                    (None, Some(resume)) => session.take_over_recovered(resume).await,
                    (None, None) => 0,
                };
                // A queue that is gone ends the session at its first lease.
                let _ = session.queue.attach(session.client().clone()).await;
                let _ = started_tx.send(Ok(resumed));
                session.run().await;
            }
            .instrument(span),
        );
        let resumed = started.await??;
        Ok(Started {
            client: started_info.0,
            session: started_info.1,
            resumed,
        })
    }

    /// This session's id.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    /// The worker this session serves.
    pub(crate) fn client(&self) -> &ClientId {
        &self.client
    }

    /// The principal that registered the session, if authentication is on.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Applies operations in order, answering each. With `stop_at_error`
    /// (tellResult) nothing after the first refused operation is applied.
    pub(crate) async fn apply(
        &self,
        ops: Vec<WorkerOp>,
        stop_at_error: bool,
    ) -> Result<Vec<Result<(), Rejection>>, Rejection> {
        let (respond_to, response) = oneshot::channel();
        self.tx
            .send(SessionMsg::Apply {
                ops,
                stop_at_error,
                respond_to,
            })
            .await
            .map_err(|_| Rejection::SessionEnded)?;
        response.await.map_err(|_| Rejection::SessionEnded)
    }

    /// The worker was heard from (a status report or heartbeat). Waits for
    /// room: the inbox also carries producers' and operators' messages
    /// (broadcast copies, cancels), which are no proof of life, so a
    /// heartbeat must not be dropped when it is full.
    pub(crate) async fn heard(&self) {
        // A session that has ended needs no proof of life.
        let _ = self.tx.send(SessionMsg::Heard).await;
    }

    /// A producer cancelled a task this session's worker holds.
    pub(crate) async fn cancelled(&self, task: TaskId, attempt: u32) {
        // A session that has ended already handed the task back; the queue
        // has it as cancelled either way.
        let _ = self.tx.send(SessionMsg::Cancelled { task, attempt }).await;
    }

    /// Makes this worker's copy of a broadcast, if it takes one (it is
    /// subscribed to the queue, its stream is open, it is not draining); the
    /// copy's task id.
    pub(crate) async fn broadcast_copy(&self, task: Arc<BroadcastTask>) -> Option<TaskId> {
        let (respond_to, answer) = oneshot::channel();
        self.tx
            .send(SessionMsg::BroadcastCopy { task, respond_to })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }

    /// An operator drains this worker: nothing new is sent, and the stream
    /// ends once it has acknowledged what it holds.
    pub(crate) async fn drain(&self) -> Result<(), Error> {
        self.tx
            .send(SessionMsg::Drain)
            .await
            .map_err(|_| Error::Unavailable("the worker's session"))
    }

    /// Tasks pushed to this worker and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> u32 {
        self.stats
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The tasks this worker holds now, oldest first.
    pub(crate) async fn holding(&self) -> Result<Vec<HeldView>, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx
            .send(SessionMsg::Holding { respond_to })
            .await
            .map_err(|_| Error::Unavailable("the worker's session"))?;
        response
            .await
            .map_err(|_| Error::Unavailable("the worker's session"))
    }

    /// An operator disconnects this worker now; what it holds is redelivered.
    pub(crate) async fn disconnect(&self) -> Result<(), Error> {
        self.tx
            .send(SessionMsg::Disconnect)
            .await
            .map_err(|_| Error::Unavailable("the worker's session"))
    }

    /// A resuming session takes over the tasks of `held` that this (old)
    /// session still holds; the rest go back to the queue and this session
    /// ends.
    async fn hand_over(&self, held: Vec<(TaskId, u32)>) -> Vec<Held> {
        let (respond_to, response) = oneshot::channel();
        if self
            .tx
            .send(SessionMsg::HandOver { held, respond_to })
            .await
            .is_err()
        {
            return Vec::new();
        }
        response.await.unwrap_or_default()
    }
}

// === Messages ===

#[derive(Debug)]
enum SessionMsg {
    /// Operations from the worker's tellResult or sendStatus call.
    Apply {
        ops: Vec<WorkerOp>,
        stop_at_error: bool,
        respond_to: oneshot::Sender<Vec<Result<(), Rejection>>>,
    },
    /// The worker reported status.
    Heard,
    /// A producer cancelled a task this worker holds.
    Cancelled { task: TaskId, attempt: u32 },
    /// A new session of the same worker takes over.
    HandOver {
        held: Vec<(TaskId, u32)>,
        respond_to: oneshot::Sender<Vec<Held>>,
    },
    /// A producer broadcasts to this worker's queue: make this worker's
    /// copy, and answer with its id (none when the worker takes no copy).
    BroadcastCopy {
        task: Arc<BroadcastTask>,
        respond_to: oneshot::Sender<Option<TaskId>>,
    },
    /// An operator drains this worker.
    Drain,
    /// An operator disconnects this worker.
    Disconnect,
    /// An operator looks at what this worker holds.
    Holding {
        respond_to: oneshot::Sender<Vec<HeldView>>,
    },
}
