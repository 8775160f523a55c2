//! The task queue: one actor that owns every accepted task from submit to its
//! end, which is where rule 2 ("nothing accepted is lost") lives.
//!
//! A task is `Pending` (in a named queue, or held for one worker), then
//! `Delivered` to one session, then `Done` or `DeadLettered`; a task whose
//! worker fails it, asks to retry it, or goes away is `Pending` again.
//!
//! Sessions pull: a session asks for up to its free credit with a `Lease`
//! request, answered at once when tasks are ready or parked until some arrive.
//! Parked sessions are served first come, first served, which shares a queue
//! fairly among its workers. Every answer goes back on the request's own
//! `oneshot`, so this actor never sends on a bounded channel and cannot take
//! part in a cycle. If a session is gone when its answer is sent, the tasks
//! come straight back; a session that ends hands back what it holds with a
//! `Release`.
//!
//! The interface (submit, lease, complete, release, get, watch) speaks only of
//! ids and domain values, so a durable store can later sit under the maps
//! below without changing any caller.

use std::collections::{HashMap, HashSet, VecDeque, hash_map::Entry};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span};

use crate::{
    domain::{
        ClientId, Delivery, NewTask, Outcome, QueueName, SessionId, Target, TaskId, TaskInfo,
        TaskResult, TaskState,
    },
    error::Error,
    metrics::QueueMetrics,
};

/// Capacity of the queue's inbox. Producers and sessions wait (backpressure)
/// when it is full; it never drops a message.
pub const QUEUE_INBOX_CAPACITY: usize = 4096;

/// Messages the actor handles per turn before it dispatches, so a burst of
/// submits is handed to workers in batches rather than one by one.
const MAX_MESSAGES_PER_TURN: usize = 256;

/// The limits the queue enforces.
#[derive(Clone, Copy, Debug)]
pub struct QueuePolicy {
    /// Deliveries before a task is dead-lettered.
    pub max_attempts: u32,
    /// Done tasks kept for `get`/`watch`.
    pub max_finished_tasks: usize,
}

// === Handle ===

/// Cloneable handle to the queue actor. The actor ends when the last handle drops.
#[derive(Clone, Debug)]
pub struct QueueHandle {
    tx: mpsc::Sender<QueueMsg>,
}

impl QueueHandle {
    /// Starts the queue actor on `tracker`.
    pub fn spawn(policy: QueuePolicy, tracker: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_INBOX_CAPACITY);
        let actor = Queue::new(rx, policy);
        tracker.spawn(actor.run().instrument(info_span!("queue")));
        Self { tx }
    }

    /// Accepts tasks; one answer per task, in order.
    pub async fn submit(&self, tasks: Vec<NewTask>) -> Result<Vec<Result<TaskId, Error>>, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx.send(QueueMsg::Submit { tasks, respond_to }).await?;
        Ok(response.await?)
    }

    /// Tells the queue a worker exists, so tasks may target it by id.
    pub async fn attach(&self, client: ClientId) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Attach { client }).await?)
    }

    /// Asks for up to `max` tasks for `session`. The answer arrives on the
    /// returned receiver once tasks are ready; dropping it (or closing it)
    /// cancels the request and any tasks sent to it come back.
    pub async fn lease(
        &self,
        session: SessionId,
        client: ClientId,
        queues: Arc<[QueueName]>,
        max: u32,
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
            }))
            .await?;
        Ok(response)
    }

    /// Applies acknowledgements a session has checked.
    pub async fn complete(
        &self,
        worker: ClientId,
        acks: Vec<(TaskId, Outcome, TaskResult)>,
    ) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Complete { worker, acks }).await?)
    }

    /// Hands back what a session held when it ended: `delivered` tasks were
    /// pushed to the worker (a redelivery), `undelivered` never left the server.
    pub async fn release(
        &self,
        session: SessionId,
        worker: ClientId,
        delivered: Vec<TaskId>,
        undelivered: Vec<TaskId>,
    ) -> Result<(), Error> {
        Ok(self
            .tx
            .send(QueueMsg::Release {
                session,
                worker,
                delivered,
                undelivered,
            })
            .await?)
    }

    /// A task's current state.
    pub async fn get(&self, task: TaskId) -> Result<TaskInfo, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx.send(QueueMsg::Get { task, respond_to }).await?;
        response.await?
    }

    /// Resolves when the task is finished (at once if it already is).
    pub async fn watch(&self, task: TaskId) -> Result<TaskInfo, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx.send(QueueMsg::Watch { task, respond_to }).await?;
        response.await?
    }

    /// Stops accepting new tasks; everything already accepted is still served.
    pub async fn drain(&self) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Drain).await?)
    }
}

// === Messages ===

#[derive(Debug)]
enum QueueMsg {
    /// Accept new tasks.
    Submit {
        tasks: Vec<NewTask>,
        respond_to: oneshot::Sender<Vec<Result<TaskId, Error>>>,
    },
    /// A worker registered.
    Attach { client: ClientId },
    /// A session wants tasks.
    Lease(LeaseRequest),
    /// A session applied acknowledgements.
    Complete {
        worker: ClientId,
        acks: Vec<(TaskId, Outcome, TaskResult)>,
    },
    /// A session ended and hands back what it held.
    Release {
        session: SessionId,
        worker: ClientId,
        delivered: Vec<TaskId>,
        undelivered: Vec<TaskId>,
    },
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
    /// The server is stopping: refuse new tasks.
    Drain,
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
}

// === Actor ===

#[derive(Debug)]
struct TaskEntry {
    target: Target,
    text: Arc<str>,
    payload: Bytes,
    state: TaskState,
    attempts: u32,
    worker: Option<ClientId>,
    result: TaskResult,
}

impl TaskEntry {
    fn info(&self, id: TaskId) -> TaskInfo {
        TaskInfo {
            id,
            state: self.state,
            target: self.target.clone(),
            attempts: self.attempts,
            worker: self.worker.clone(),
            result: self.result.clone(),
        }
    }
}

#[derive(Debug)]
struct Queue {
    rx: mpsc::Receiver<QueueMsg>,
    policy: QueuePolicy,
    tasks: HashMap<TaskId, TaskEntry>,
    /// Pending tasks of each named queue, oldest first.
    ready: HashMap<QueueName, VecDeque<TaskId>>,
    /// Pending tasks held for one worker, oldest first.
    direct: HashMap<ClientId, VecDeque<TaskId>>,
    /// Every worker id that has registered since start: targets must be one.
    known_clients: HashSet<ClientId>,
    /// Lease requests waiting for tasks, one per session.
    parked: HashMap<SessionId, LeaseRequest>,
    /// Waiting sessions per queue, first come first served. Entries whose
    /// ticket no longer matches `parked` are stale and skipped.
    waiting: HashMap<QueueName, VecDeque<(SessionId, u64)>>,
    /// The parked session of each worker, for tasks targeted at it.
    waiting_client: HashMap<ClientId, SessionId>,
    /// Queues and workers that gained pending tasks since the last dispatch.
    dirty_queues: HashSet<QueueName>,
    dirty_clients: HashSet<ClientId>,
    /// Done tasks, oldest first, evicted past `max_finished_tasks`.
    finished: VecDeque<TaskId>,
    watchers: HashMap<TaskId, Vec<oneshot::Sender<Result<TaskInfo, Error>>>>,
    next_ticket: u64,
    pending_count: usize,
    in_flight_count: usize,
    draining: bool,
    metrics: QueueMetrics,
}

impl Queue {
    fn new(rx: mpsc::Receiver<QueueMsg>, policy: QueuePolicy) -> Self {
        Self {
            rx,
            policy,
            tasks: HashMap::new(),
            ready: HashMap::new(),
            direct: HashMap::new(),
            known_clients: HashSet::new(),
            parked: HashMap::new(),
            waiting: HashMap::new(),
            waiting_client: HashMap::new(),
            dirty_queues: HashSet::new(),
            dirty_clients: HashSet::new(),
            finished: VecDeque::new(),
            watchers: HashMap::new(),
            next_ticket: 1,
            pending_count: 0,
            in_flight_count: 0,
            draining: false,
            metrics: QueueMetrics::new(),
        }
    }

    async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_MESSAGES_PER_TURN);
        while self.rx.recv_many(&mut batch, MAX_MESSAGES_PER_TURN).await > 0 {
            for msg in batch.drain(..) {
                self.handle(msg);
            }
            self.dispatch();
            self.metrics.queue_depth.set(self.pending_count as f64);
            self.metrics.in_flight.set(self.in_flight_count as f64);
        }
        debug!(
            pending = self.pending_count,
            in_flight = self.in_flight_count,
            "queue stopped"
        );
    }

    fn handle(&mut self, msg: QueueMsg) {
        match msg {
            QueueMsg::Submit { tasks, respond_to } => {
                let ids = tasks.into_iter().map(|t| self.handle_submit(t)).collect();
                // The producer may have gone; the tasks are accepted all the same.
                let _ = respond_to.send(ids);
            }
            QueueMsg::Attach { client } => {
                self.known_clients.insert(client);
            }
            QueueMsg::Lease(request) => self.handle_lease(request),
            QueueMsg::Complete { worker, acks } => {
                for (task, outcome, result) in acks {
                    self.handle_complete(&worker, task, outcome, result);
                }
            }
            QueueMsg::Release {
                session,
                worker,
                delivered,
                undelivered,
            } => self.handle_release(session, &worker, delivered, undelivered),
            QueueMsg::Get { task, respond_to } => {
                let _ = respond_to.send(self.info(task));
            }
            QueueMsg::Watch { task, respond_to } => self.handle_watch(task, respond_to),
            QueueMsg::Drain => self.draining = true,
        }
    }

    fn handle_submit(&mut self, task: NewTask) -> Result<TaskId, Error> {
        if self.draining {
            return Err(Error::ShuttingDown);
        }
        if let Target::Client(client) = &task.target
            && !self.known_clients.contains(client)
        {
            return Err(Error::NotFound {
                what: "worker",
                id: client.to_string(),
            });
        }
        let id = TaskId::generate();
        match &task.target {
            Target::Queue(_) => self.metrics.submitted_queue.increment(1),
            Target::Client(_) => self.metrics.submitted_client.increment(1),
        }
        self.tasks.insert(
            id,
            TaskEntry {
                target: task.target,
                text: task.text.into(),
                payload: task.payload,
                state: TaskState::Pending,
                attempts: 0,
                worker: None,
                result: TaskResult::default(),
            },
        );
        self.make_pending(id, false);
        Ok(id)
    }

    /// Puts a task (already in `tasks`) back in line: at the front when it
    /// was first in line before (a lost delivery), else at the back.
    fn make_pending(&mut self, id: TaskId, front: bool) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        entry.state = TaskState::Pending;
        entry.worker = None;
        let line = match &entry.target {
            Target::Queue(queue) => {
                if !self.dirty_queues.contains(queue) {
                    self.dirty_queues.insert(queue.clone());
                }
                self.ready.entry(queue.clone()).or_default()
            }
            Target::Client(client) => {
                if !self.dirty_clients.contains(client) {
                    self.dirty_clients.insert(client.clone());
                }
                self.direct.entry(client.clone()).or_default()
            }
        };
        if front {
            line.push_front(id);
        } else {
            line.push_back(id);
        }
        self.pending_count += 1;
    }

    fn handle_lease(&mut self, mut request: LeaseRequest) {
        if request.respond_to.is_closed() || request.max == 0 {
            return;
        }
        if self.has_work_for(&request.client, &request.queues) {
            self.serve(request);
            return;
        }
        request.ticket = self.next_ticket;
        self.next_ticket += 1;
        let parked_count = self.parked.len() + 1;
        for queue in request.queues.iter() {
            let line = self.waiting.entry(queue.clone()).or_default();
            line.push_back((request.session, request.ticket));
            // A session parked on several queues but served from one leaves
            // stale entries behind; sweep them before they pile up.
            if line.len() > 2 * parked_count + 16 {
                let parked = &self.parked;
                let (session, ticket) = (request.session, request.ticket);
                line.retain(|(s, t)| {
                    (*s == session && *t == ticket) || parked.get(s).is_some_and(|r| r.ticket == *t)
                });
            }
        }
        self.waiting_client
            .insert(request.client.clone(), request.session);
        self.parked.insert(request.session, request);
    }

    fn has_work_for(&self, client: &ClientId, queues: &[QueueName]) -> bool {
        self.direct.get(client).is_some_and(|d| !d.is_empty())
            || queues
                .iter()
                .any(|q| self.ready.get(q).is_some_and(|r| !r.is_empty()))
    }

    /// Hands parked sessions the tasks that became pending this turn.
    fn dispatch(&mut self) {
        for client in std::mem::take(&mut self.dirty_clients) {
            if self.direct.get(&client).is_none_or(VecDeque::is_empty) {
                continue;
            }
            if let Some(session) = self.waiting_client.get(&client).copied()
                && let Some(request) = self.parked.remove(&session)
            {
                self.serve(request);
            }
        }
        for queue in std::mem::take(&mut self.dirty_queues) {
            loop {
                if self.ready.get(&queue).is_none_or(VecDeque::is_empty) {
                    break;
                }
                let Some((session, ticket)) =
                    self.waiting.get_mut(&queue).and_then(VecDeque::pop_front)
                else {
                    break;
                };
                if self
                    .parked
                    .get(&session)
                    .is_some_and(|r| r.ticket == ticket)
                    && let Some(request) = self.parked.remove(&session)
                {
                    self.serve(request);
                }
            }
        }
    }

    /// Answers a lease request with up to `max` tasks: the worker's own
    /// tasks first, then its queues in order.
    fn serve(&mut self, request: LeaseRequest) {
        if self.waiting_client.get(&request.client) == Some(&request.session) {
            self.waiting_client.remove(&request.client);
        }
        let max = request.max as usize;
        let mut ids = Vec::with_capacity(max.min(64));
        if let Some(line) = self.direct.get_mut(&request.client) {
            while ids.len() < max {
                match line.pop_front() {
                    Some(id) => ids.push(id),
                    None => break,
                }
            }
        }
        for queue in request.queues.iter() {
            if ids.len() >= max {
                break;
            }
            if let Some(line) = self.ready.get_mut(queue) {
                while ids.len() < max {
                    match line.pop_front() {
                        Some(id) => ids.push(id),
                        None => break,
                    }
                }
            }
        }
        self.pending_count -= ids.len();
        let mut deliveries = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            entry.state = TaskState::Delivered;
            entry.attempts += 1;
            entry.worker = Some(request.client.clone());
            deliveries.push(Delivery {
                task_id: id,
                text: entry.text.clone(),
                payload: entry.payload.clone(),
                queue: match &entry.target {
                    Target::Queue(q) => Some(q.clone()),
                    Target::Client(_) => None,
                },
                attempt: entry.attempts,
            });
        }
        let count = deliveries.len();
        self.in_flight_count += count;
        match request.respond_to.send(deliveries) {
            Ok(()) => self.metrics.dispatched.increment(count as u64),
            Err(returned) => {
                // The session ended before the answer reached it: nothing left
                // the server, so the tasks go back to the front as they were.
                let ids: Vec<TaskId> = returned.iter().map(|d| d.task_id).collect();
                self.undo_deliveries(&ids);
            }
        }
    }

    /// Takes back tasks that were leased but never pushed to the worker.
    fn undo_deliveries(&mut self, ids: &[TaskId]) {
        for id in ids.iter().rev() {
            let Some(entry) = self.tasks.get_mut(id) else {
                continue;
            };
            if entry.state != TaskState::Delivered {
                continue;
            }
            entry.attempts = entry.attempts.saturating_sub(1);
            self.in_flight_count -= 1;
            self.make_pending(*id, true);
        }
    }

    fn handle_complete(
        &mut self,
        worker: &ClientId,
        id: TaskId,
        outcome: Outcome,
        result: TaskResult,
    ) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        // The session checked the ack against what it holds, so a mismatch
        // here means the task moved on meanwhile; the ack is stale.
        if entry.state != TaskState::Delivered || entry.worker.as_ref() != Some(worker) {
            debug!(task.id = %id, client.id = %worker, "stale acknowledgement ignored");
            return;
        }
        self.in_flight_count -= 1;
        match outcome {
            Outcome::Done => {
                self.metrics.acked_done.increment(1);
                entry.state = TaskState::Done;
                entry.result = result;
                // The payload is not needed once the task is done.
                entry.payload = Bytes::new();
                self.finish(id);
            }
            Outcome::Failed | Outcome::Retry => {
                let (acked, redelivered) = if outcome == Outcome::Failed {
                    (&self.metrics.acked_failed, &self.metrics.redelivered_failed)
                } else {
                    (&self.metrics.acked_retry, &self.metrics.redelivered_retry)
                };
                acked.increment(1);
                entry.result = result;
                if entry.attempts >= self.policy.max_attempts {
                    self.dead_letter(id);
                } else {
                    redelivered.increment(1);
                    self.make_pending(id, false);
                }
            }
        }
    }

    fn handle_release(
        &mut self,
        session: SessionId,
        worker: &ClientId,
        delivered: Vec<TaskId>,
        undelivered: Vec<TaskId>,
    ) {
        if let Some(request) = self.parked.remove(&session)
            && self.waiting_client.get(&request.client) == Some(&session)
        {
            self.waiting_client.remove(&request.client);
        }
        self.undo_deliveries(&undelivered);
        for id in delivered.into_iter().rev() {
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            if entry.state != TaskState::Delivered || entry.worker.as_ref() != Some(worker) {
                continue;
            }
            self.in_flight_count -= 1;
            if entry.attempts >= self.policy.max_attempts {
                entry.result.error = format!(
                    "worker {worker} went away before acknowledging, and the task had \
                     reached max_attempts ({})",
                    self.policy.max_attempts
                );
                self.dead_letter(id);
            } else {
                self.metrics.redelivered_worker_lost.increment(1);
                self.make_pending(id, true);
            }
        }
    }

    fn dead_letter(&mut self, id: TaskId) {
        if let Some(entry) = self.tasks.get_mut(&id) {
            entry.state = TaskState::DeadLettered;
            self.metrics.dead_lettered.increment(1);
            self.notify_watchers(id);
        }
    }

    /// Records a done task and forgets the oldest ones past the retention limit.
    fn finish(&mut self, id: TaskId) {
        self.notify_watchers(id);
        self.finished.push_back(id);
        while self.finished.len() > self.policy.max_finished_tasks {
            if let Some(old) = self.finished.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }

    fn notify_watchers(&mut self, id: TaskId) {
        if let Some(watchers) = self.watchers.remove(&id) {
            let info = self.info(id);
            for watcher in watchers {
                // A watcher that timed out has dropped its receiver; fine.
                let _ = watcher.send(info.clone());
            }
        }
    }

    fn handle_watch(&mut self, id: TaskId, respond_to: oneshot::Sender<Result<TaskInfo, Error>>) {
        match self.info(id) {
            Ok(info) if !info.state.is_final() => match self.watchers.entry(id) {
                Entry::Occupied(mut watchers) => {
                    watchers.get_mut().retain(|w| !w.is_closed());
                    watchers.get_mut().push(respond_to);
                }
                Entry::Vacant(slot) => {
                    slot.insert(vec![respond_to]);
                }
            },
            answer => {
                let _ = respond_to.send(answer);
            }
        }
    }

    fn info(&self, id: TaskId) -> Result<TaskInfo, Error> {
        self.tasks
            .get(&id)
            .map(|entry| entry.info(id))
            .ok_or(Error::NotFound {
                what: "task",
                id: id.to_string(),
            })
    }
}
