//! The session: one actor per open getTask stream. It owns the worker's
//! credit (in-flight limit minus unacknowledged tasks), asks the queue for
//! tasks only while it has credit, pushes them down the stream, and checks
//! each acknowledgement against what it holds.
//!
//! However the stream ends (the worker leaves or crashes, the server drains,
//! the queue goes away), the session hands every task it holds back to the
//! queue before it exits, so a lost worker never loses a task.
//!
//! Talks to: the queue (lease, complete, release) and the registry (closed),
//! both over their bounded inboxes; neither ever sends back to a session on a
//! bounded channel. Ack batches arrive from tellResult handlers on this
//! session's own inbox, with a `oneshot` for the answer.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot,
};
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::{Instrument, debug, info_span, warn};

use crate::{
    domain::{
        Ack, ClientId, Delivery, Outcome, QueueName, Registration, SessionId, TaskId, TaskResult,
    },
    error::Error,
    proto,
    queue::{QueueHandle, Release},
    registry::{RegistryHandle, WorkerRecord, WorkerStats, unix_ms_now},
};

/// Capacity of a session's inbox (ack batches from tellResult handlers).
pub const SESSION_INBOX_CAPACITY: usize = 64;

/// The item type of a getTask response stream.
pub type StreamItem = Result<proto::ServerMsg, Status>;

/// Server-wide notices, broadcast to every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Take no new tasks; end the stream once everything held is acknowledged.
    Drain,
    /// End the stream now, handing back whatever is held.
    ShutdownNow,
}

/// Why an ack batch stopped short. Acks before the rejected one were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRejection {
    /// This session holds no task with that id.
    NotHeld(TaskId),
    /// An ack without a task id, but nothing is unacknowledged.
    NothingHeld,
    /// The session has ended.
    SessionEnded,
}

// === Handle ===

/// Cloneable handle to one session.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    tx: mpsc::Sender<SessionMsg>,
    id: SessionId,
    client: ClientId,
}

/// What a session needs from the rest of the server.
#[derive(Clone, Debug)]
pub struct SessionDeps {
    /// The task queue.
    pub queue: QueueHandle,
    /// The worker registry.
    pub registry: RegistryHandle,
    /// Where sessions are spawned and awaited at shutdown.
    pub tracker: TaskTracker,
}

impl SessionHandle {
    /// Registers the worker and starts its session, which pushes tasks into
    /// `stream_tx`. `notices` must be subscribed before the caller checked
    /// that the server is not draining, so no notice is missed.
    pub async fn start(
        registration: Registration,
        peer: Option<SocketAddr>,
        stream_tx: mpsc::Sender<StreamItem>,
        notices: async_broadcast::Receiver<Notice>,
        deps: &SessionDeps,
    ) -> Result<Self, Error> {
        let (tx, inbox) = mpsc::channel(SESSION_INBOX_CAPACITY);
        let handle = Self {
            tx,
            id: SessionId::generate(),
            client: registration.client_id.clone(),
        };
        let stats = Arc::new(WorkerStats::default());
        let record = WorkerRecord {
            client: registration.client_id.clone(),
            generated_id: registration.generated_id,
            session: handle.clone(),
            peer,
            queues: registration.queues.clone(),
            max_in_flight: registration.max_in_flight,
            stats: stats.clone(),
        };
        let span =
            info_span!("session", client.id = %registration.client_id, session.id = %handle.id);
        let session = Session {
            id: handle.id,
            client: registration.client_id,
            generated_id: registration.generated_id,
            queues: registration.queues,
            max_in_flight: registration.max_in_flight,
            inbox,
            stream_tx,
            notices,
            queue: deps.queue.clone(),
            registry: deps.registry.clone(),
            in_flight: VecDeque::new(),
            lease: None,
            draining: false,
            stats,
        };
        // Registration runs in the session's own task, so a caller that goes
        // away mid-start (a reset stream, an expired deadline) cannot leave a
        // registered worker without a session: once registered, the session
        // runs, sees its stream gone, and deregisters itself.
        let (started_tx, started) = oneshot::channel();
        deps.tracker.spawn(
            async move {
                if let Err(error) = session.registry.register(record).await {
                    let _ = started_tx.send(Err(error));
                    return;
                }
                // A queue that is gone ends the session at its first lease.
                let _ = session.queue.attach(session.client.clone()).await;
                let _ = started_tx.send(Ok(()));
                session.run().await;
            }
            .instrument(span),
        );
        started.await??;
        Ok(handle)
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The worker this session serves.
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    /// Applies acks in order, stopping at the first one this session cannot
    /// match to a task it holds.
    pub async fn ack(&self, acks: Vec<Ack>) -> Result<(), AckRejection> {
        let (respond_to, response) = oneshot::channel();
        self.tx
            .send(SessionMsg::Ack { acks, respond_to })
            .await
            .map_err(|_| AckRejection::SessionEnded)?;
        response.await.map_err(|_| AckRejection::SessionEnded)?
    }
}

// === Messages ===

#[derive(Debug)]
enum SessionMsg {
    /// Acknowledgements from the worker's tellResult call.
    Ack {
        acks: Vec<Ack>,
        respond_to: oneshot::Sender<Result<(), AckRejection>>,
    },
}

// === Actor ===

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The worker closed the stream or its connection dropped.
    Disconnected,
    /// The server drained and this worker acknowledged everything.
    Drained,
    /// The server is stopping now (or an actor it needs is gone).
    Shutdown,
    /// The stream buffer is full: the worker does not read what it is sent.
    NotReading,
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    client: ClientId,
    generated_id: bool,
    queues: Arc<[QueueName]>,
    max_in_flight: u32,
    inbox: mpsc::Receiver<SessionMsg>,
    stream_tx: mpsc::Sender<StreamItem>,
    notices: async_broadcast::Receiver<Notice>,
    queue: QueueHandle,
    registry: RegistryHandle,
    /// Pushed, unacknowledged tasks, oldest first (seed acks take the front).
    in_flight: VecDeque<TaskId>,
    /// The outstanding lease request, if any.
    lease: Option<oneshot::Receiver<Vec<Delivery>>>,
    draining: bool,
    stats: Arc<WorkerStats>,
}

impl Session {
    async fn run(mut self) {
        let end = self.serve().await;
        self.finish(end).await;
    }

    fn credit(&self) -> u32 {
        self.max_in_flight
            .saturating_sub(self.in_flight.len() as u32)
    }

    async fn serve(&mut self) -> End {
        loop {
            if self.draining && self.in_flight.is_empty() {
                return End::Drained;
            }
            if self.lease.is_none() && !self.draining && self.credit() > 0 {
                match self
                    .queue
                    .lease(
                        self.id,
                        self.client.clone(),
                        self.queues.clone(),
                        self.credit(),
                    )
                    .await
                {
                    Ok(lease) => self.lease = Some(lease),
                    Err(_) => return End::Shutdown,
                }
            }
            let lease_slot = &mut self.lease;
            let lease = async {
                match lease_slot.as_mut() {
                    Some(lease) => lease.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                notice = self.notices.recv() => match notice {
                    Ok(Notice::Drain) => {
                        self.draining = true;
                        self.cancel_lease().await;
                    }
                    Ok(Notice::ShutdownNow) | Err(async_broadcast::RecvError::Closed) => {
                        return End::Shutdown;
                    }
                    // Notices are states, so a missed one is repeated by the next.
                    Err(async_broadcast::RecvError::Overflowed(_)) => {}
                },
                () = self.stream_tx.closed() => return End::Disconnected,
                msg = self.inbox.recv() => match msg {
                    Some(SessionMsg::Ack { acks, respond_to }) => {
                        let answer = self.handle_acks(acks).await;
                        let _ = respond_to.send(answer);
                    }
                    // Unreachable while the registry holds our handle; if it
                    // ever happens, no more acks can arrive, so stop.
                    None => return End::Shutdown,
                },
                deliveries = lease => {
                    self.lease = None;
                    match deliveries {
                        Ok(deliveries) => {
                            if let Some(end) = self.push(deliveries).await {
                                return end;
                            }
                        }
                        Err(_) => return End::Shutdown,
                    }
                }
            }
        }
    }

    /// Pushes leased tasks down the stream. Returns how the session must
    /// end if the stream cannot take them; whatever was not pushed has been
    /// handed back already.
    async fn push(&mut self, deliveries: Vec<Delivery>) -> Option<End> {
        let mut end = None;
        let mut unpushed = Vec::new();
        for delivery in deliveries {
            if end.is_some() {
                unpushed.push(delivery.task_id);
                continue;
            }
            match self
                .stream_tx
                .try_send(Ok(proto::ServerMsg::from(&delivery)))
            {
                Ok(()) => self.in_flight.push_back(delivery.task_id),
                Err(TrySendError::Closed(_)) => {
                    end = Some(End::Disconnected);
                    unpushed.push(delivery.task_id);
                }
                // The buffer has a slot per task the worker may hold, so it
                // is only full when the worker acks tasks (without ids) that
                // it has not read. Such a worker is not reading: end it.
                Err(TrySendError::Full(_)) => {
                    warn!("worker acknowledges tasks it has not read; ending its session");
                    end = Some(End::NotReading);
                    unpushed.push(delivery.task_id);
                }
            }
        }
        self.stats
            .in_flight
            .store(self.in_flight.len() as u32, Ordering::Relaxed);
        if !unpushed.is_empty() {
            let _ = self
                .queue
                .release(self.release(Vec::new(), unpushed, false))
                .await;
        }
        end
    }

    async fn handle_acks(&mut self, acks: Vec<Ack>) -> Result<(), AckRejection> {
        let mut applied: Vec<(TaskId, Outcome, TaskResult)> = Vec::with_capacity(acks.len());
        let mut answer = Ok(());
        for ack in acks {
            let taken = match ack.task_id {
                None => self.in_flight.pop_front().ok_or(AckRejection::NothingHeld),
                Some(id) => self
                    .in_flight
                    .iter()
                    .position(|held| *held == id)
                    .and_then(|i| self.in_flight.remove(i))
                    .ok_or(AckRejection::NotHeld(id)),
            };
            match taken {
                Ok(id) => applied.push((id, ack.outcome, ack.result)),
                Err(rejection) => {
                    answer = Err(rejection);
                    break;
                }
            }
        }
        if !applied.is_empty() {
            self.stats
                .in_flight
                .store(self.in_flight.len() as u32, Ordering::Relaxed);
            self.stats
                .last_ack_unix_ms
                .store(unix_ms_now(), Ordering::Relaxed);
            if self
                .queue
                .complete(self.client.clone(), applied)
                .await
                .is_err()
            {
                warn!("queue stopped before acknowledgements were applied");
            }
        }
        answer
    }

    fn release(
        &self,
        delivered: Vec<TaskId>,
        undelivered: Vec<TaskId>,
        forget_worker: bool,
    ) -> Release {
        Release {
            session: self.id,
            worker: self.client.clone(),
            delivered,
            undelivered,
            forget_worker,
        }
    }

    /// Withdraws the outstanding lease request. Tasks already sent to it
    /// never reached the worker and go straight back.
    async fn cancel_lease(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        lease.close();
        if let Ok(deliveries) = lease.try_recv() {
            let ids = deliveries.iter().map(|d| d.task_id).collect();
            let _ = self
                .queue
                .release(self.release(Vec::new(), ids, false))
                .await;
        }
    }

    async fn finish(mut self, end: End) {
        self.cancel_lease().await;
        let held: Vec<TaskId> = self.in_flight.drain(..).collect();
        debug!(?end, held = held.len(), "session ending");
        if let Err(error) = self
            .queue
            .release(self.release(held, Vec::new(), self.generated_id))
            .await
        {
            warn!(%error, "queue stopped before the session's tasks were handed back");
        }
        let _ = self.registry.session_closed(self.client, self.id).await;
        if matches!(end, End::Drained | End::Shutdown) {
            // The worker is still reading: tell it why the stream ends.
            let _ = self
                .stream_tx
                .try_send(Err(Status::unavailable("server is shutting down")));
        }
    }
}
