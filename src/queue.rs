//! The task queue: one actor that owns every accepted task from submit to its
//! end, which is where rule 2 ("nothing accepted is lost") lives.
//!
//! A task is `Pending` (in a named queue, or held for one worker), then
//! `Delivered` to one session, then `Done` or `DeadLettered`; a task whose
//! worker fails it, asks to retry it, or goes away is `Pending` again.
//!
//! Sessions pull: a session asks for up to its free credit with a `Lease`
//! request, which waits in line until tasks are ready (at the latest, at the
//! end of the turn in which it arrived). Waiting sessions are served first
//! come, first served, and a burst is split evenly among them, which shares a
//! queue fairly among its workers. Every answer goes back on the request's own
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

    /// Hands back tasks a session holds: `delivered` tasks were pushed to the
    /// worker (a redelivery), `undelivered` never left the server.
    pub async fn release(&self, release: Release) -> Result<(), Error> {
        Ok(self.tx.send(QueueMsg::Release(release)).await?)
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
    /// A session hands back tasks (all it holds, when it ends).
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
    /// The server is stopping: refuse new tasks.
    Drain,
}

/// Tasks a session hands back to the queue.
#[derive(Debug)]
pub struct Release {
    /// The session.
    pub session: SessionId,
    /// Its worker.
    pub worker: ClientId,
    /// Tasks pushed to the worker and not acknowledged: redelivered.
    pub delivered: Vec<TaskId>,
    /// Tasks leased but never pushed: back in line, no attempt counted.
    pub undelivered: Vec<TaskId>,
    /// The session ended and its worker's id was one the server made up, so
    /// no one can target it again: forget it unless tasks wait for it.
    pub forget_worker: bool,
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
            QueueMsg::Release(release) => self.handle_release(release),
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
        // Park even when tasks are ready: dispatch serves waiting sessions in
        // arrival order, so a late asker never jumps the line.
        if self
            .direct
            .get(&request.client)
            .is_some_and(|d| !d.is_empty())
        {
            self.dirty_clients.insert(request.client.clone());
        }
        for queue in request.queues.iter() {
            if self.ready.get(queue).is_some_and(|r| !r.is_empty()) {
                self.dirty_queues.insert(queue.clone());
            }
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

    fn is_current(&self, (session, ticket): (SessionId, u64)) -> bool {
        self.parked
            .get(&session)
            .is_some_and(|r| r.ticket == ticket)
    }

    /// Hands parked sessions the tasks that became pending (or the sessions
    /// that arrived) this turn. A burst is split evenly across the sessions
    /// waiting on its queue, first come first served, instead of filling the
    /// first session's whole credit.
    fn dispatch(&mut self) {
        // Serving a session that has gone puts its tasks back in line, which
        // marks them dirty again; go round until nothing is left to offer.
        while !self.dirty_clients.is_empty() || !self.dirty_queues.is_empty() {
            self.dispatch_dirty();
        }
    }

    fn dispatch_dirty(&mut self) {
        for client in std::mem::take(&mut self.dirty_clients) {
            if self.direct.get(&client).is_none_or(VecDeque::is_empty) {
                continue;
            }
            if let Some(session) = self.waiting_client.get(&client).copied()
                && let Some(request) = self.parked.remove(&session)
            {
                let max = request.max as usize;
                self.serve(request, max);
            }
        }
        for queue in std::mem::take(&mut self.dirty_queues) {
            let mut waiters = self.waiting.get(&queue).map_or(0, |line| {
                line.iter().filter(|entry| self.is_current(**entry)).count()
            });
            while waiters > 0 {
                let ready = self.ready.get(&queue).map_or(0, VecDeque::len);
                if ready == 0 {
                    break;
                }
                let Some(entry) = self.waiting.get_mut(&queue).and_then(VecDeque::pop_front) else {
                    break;
                };
                if !self.is_current(entry) {
                    continue;
                }
                if let Some(request) = self.parked.remove(&entry.0) {
                    self.serve(request, ready.div_ceil(waiters));
                }
                waiters -= 1;
            }
        }
    }

    /// Answers a lease request with up to `limit` tasks (never more than it
    /// asked for): the worker's own tasks first, then its queues in order.
    fn serve(&mut self, request: LeaseRequest, limit: usize) {
        if self.waiting_client.get(&request.client) == Some(&request.session) {
            self.waiting_client.remove(&request.client);
        }
        let max = limit.min(request.max as usize);
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

    fn handle_release(&mut self, release: Release) {
        let Release {
            session,
            worker,
            delivered,
            undelivered,
            forget_worker,
        } = release;
        let worker = &worker;
        if forget_worker && self.direct.get(worker).is_none_or(VecDeque::is_empty) {
            self.known_clients.remove(worker);
            self.direct.remove(worker);
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::ClientId;

    fn queue(max_attempts: u32) -> Queue {
        let (_tx, rx) = mpsc::channel(1);
        Queue::new(
            rx,
            QueuePolicy {
                max_attempts,
                max_finished_tasks: 100,
            },
        )
    }

    fn new_task(target: Target) -> NewTask {
        NewTask {
            target,
            text: "t".into(),
            payload: Bytes::new(),
        }
    }

    fn submit(queue: &mut Queue, tasks: Vec<NewTask>) -> Vec<Result<TaskId, Error>> {
        let (respond_to, mut answer) = oneshot::channel();
        queue.handle(QueueMsg::Submit { tasks, respond_to });
        queue.dispatch();
        answer.try_recv().unwrap()
    }

    fn submit_n(queue: &mut Queue, n: usize) -> Vec<TaskId> {
        let tasks = (0..n)
            .map(|_| new_task(Target::Queue(QueueName::default_queue())))
            .collect();
        submit(queue, tasks)
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    struct Worker {
        session: SessionId,
        client: ClientId,
    }

    fn worker(name: &str) -> Worker {
        Worker {
            session: SessionId::generate(),
            client: ClientId::parse(name).unwrap(),
        }
    }

    fn lease(queue: &mut Queue, worker: &Worker, max: u32) -> oneshot::Receiver<Vec<Delivery>> {
        let (respond_to, answer) = oneshot::channel();
        queue.handle(QueueMsg::Lease(LeaseRequest {
            session: worker.session,
            client: worker.client.clone(),
            queues: Arc::new([QueueName::default_queue()]),
            max,
            respond_to,
            ticket: 0,
        }));
        answer
    }

    fn ids(answer: &mut oneshot::Receiver<Vec<Delivery>>) -> Vec<TaskId> {
        answer
            .try_recv()
            .unwrap()
            .iter()
            .map(|d| d.task_id)
            .collect()
    }

    fn state(queue: &Queue, id: TaskId) -> (TaskState, u32) {
        let info = queue.info(id).unwrap();
        (info.state, info.attempts)
    }

    /// A burst is split evenly across the sessions already waiting, in the
    /// order they asked, rather than filling the first one's credit.
    #[test]
    fn burst_is_split_across_waiting_sessions() {
        let mut q = queue(5);
        let workers: Vec<Worker> = ["a", "b", "c"].into_iter().map(worker).collect();
        let mut answers: Vec<_> = workers.iter().map(|w| lease(&mut q, w, 8)).collect();
        q.dispatch();
        let tasks = submit_n(&mut q, 6);
        let got: Vec<Vec<TaskId>> = answers.iter_mut().map(ids).collect();
        assert_eq!(
            got,
            vec![
                tasks[0..2].to_vec(),
                tasks[2..4].to_vec(),
                tasks[4..6].to_vec()
            ]
        );
    }

    /// Waiting sessions are served first come, first served.
    #[test]
    fn waiting_sessions_are_served_in_arrival_order() {
        let mut q = queue(5);
        let (a, b) = (worker("a"), worker("b"));
        let mut first = lease(&mut q, &a, 1);
        let mut second = lease(&mut q, &b, 1);
        q.dispatch();
        assert!(first.try_recv().is_err(), "nothing to hand out yet");
        let one = submit_n(&mut q, 1);
        assert_eq!(ids(&mut first), one);
        let two = submit_n(&mut q, 1);
        assert_eq!(ids(&mut second), two);
        assert_eq!(state(&q, one[0]), (TaskState::Delivered, 1));
    }

    /// Tasks a worker held when its session ended go back to the front with
    /// the attempt counted; at max_attempts they are dead-lettered instead.
    #[test]
    fn released_tasks_are_redelivered_then_dead_lettered() {
        let mut q = queue(2);
        let a = worker("a");
        let tasks = submit_n(&mut q, 2);
        let mut answer = lease(&mut q, &a, 1);
        q.dispatch();
        assert_eq!(ids(&mut answer), vec![tasks[0]]);
        q.handle(QueueMsg::Release(Release {
            session: a.session,
            worker: a.client.clone(),
            delivered: vec![tasks[0]],
            undelivered: vec![],
            forget_worker: false,
        }));
        assert_eq!(state(&q, tasks[0]), (TaskState::Pending, 1));

        let b = worker("b");
        let mut answer = lease(&mut q, &b, 1);
        q.dispatch();
        assert_eq!(ids(&mut answer), vec![tasks[0]], "redelivered first");
        q.handle(QueueMsg::Release(Release {
            session: b.session,
            worker: b.client.clone(),
            delivered: vec![tasks[0]],
            undelivered: vec![],
            forget_worker: false,
        }));
        let info = q.info(tasks[0]).unwrap();
        assert_eq!((info.state, info.attempts), (TaskState::DeadLettered, 2));
        assert!(
            info.result.error.contains("max_attempts"),
            "{}",
            info.result.error
        );
    }

    /// Tasks that never reached the worker (its session ended first) come
    /// back without an attempt counted.
    #[test]
    fn undelivered_tasks_do_not_count_an_attempt() {
        let mut q = queue(1);
        let a = worker("a");
        let answer = lease(&mut q, &a, 4);
        drop(answer);
        let tasks = submit_n(&mut q, 1);
        assert_eq!(state(&q, tasks[0]), (TaskState::Pending, 0));

        let mut answer = lease(&mut q, &a, 4);
        q.dispatch();
        assert_eq!(ids(&mut answer), tasks);
        q.handle(QueueMsg::Release(Release {
            session: a.session,
            worker: a.client.clone(),
            delivered: vec![],
            undelivered: tasks.clone(),
            forget_worker: true,
        }));
        assert_eq!(state(&q, tasks[0]), (TaskState::Pending, 0));
    }

    /// Acks: done stores the result and wakes watchers; a failure below
    /// max_attempts requeues; an ack from a worker that does not hold the
    /// task changes nothing.
    #[test]
    fn completions_apply_only_for_the_holder() {
        let mut q = queue(3);
        let a = worker("a");
        let tasks = submit_n(&mut q, 2);
        let mut answer = lease(&mut q, &a, 2);
        q.dispatch();
        assert_eq!(ids(&mut answer), tasks);
        let (respond_to, mut watched) = oneshot::channel();
        q.handle(QueueMsg::Watch {
            task: tasks[0],
            respond_to,
        });
        assert!(watched.try_recv().is_err());

        let result = TaskResult {
            ret: "ok".into(),
            ..Default::default()
        };
        q.handle(QueueMsg::Complete {
            worker: ClientId::parse("intruder").unwrap(),
            acks: vec![(tasks[0], Outcome::Done, result.clone())],
        });
        assert_eq!(state(&q, tasks[0]), (TaskState::Delivered, 1));
        q.handle(QueueMsg::Complete {
            worker: a.client.clone(),
            acks: vec![
                (tasks[0], Outcome::Done, result),
                (tasks[1], Outcome::Failed, TaskResult::default()),
            ],
        });
        let done = watched.try_recv().unwrap().unwrap();
        assert_eq!(
            (done.state, done.result.ret.as_str()),
            (TaskState::Done, "ok")
        );
        assert_eq!(state(&q, tasks[1]), (TaskState::Pending, 1));
    }

    /// A task for a worker no one has registered is refused; a task for a
    /// known worker waits for that worker only.
    #[test]
    fn targeted_tasks_wait_for_their_worker() {
        let mut q = queue(3);
        let (a, b) = (worker("a"), worker("b"));
        let refused = submit(&mut q, vec![new_task(Target::Client(a.client.clone()))]);
        assert!(matches!(refused[0], Err(Error::NotFound { .. })));

        q.handle(QueueMsg::Attach {
            client: a.client.clone(),
        });
        let id = submit(&mut q, vec![new_task(Target::Client(a.client.clone()))])[0]
            .clone()
            .unwrap();
        let mut for_b = lease(&mut q, &b, 4);
        q.dispatch();
        assert!(for_b.try_recv().is_err(), "b must not get a's task");
        let mut for_a = lease(&mut q, &a, 4);
        q.dispatch();
        let delivered = for_a.try_recv().unwrap();
        assert_eq!(delivered[0].task_id, id);
        assert_eq!(delivered[0].queue, None);
    }

    /// While draining, new tasks are refused and nothing already held is lost.
    #[test]
    fn draining_refuses_new_tasks() {
        let mut q = queue(3);
        let held = submit_n(&mut q, 1);
        q.handle(QueueMsg::Drain);
        let refused = submit(
            &mut q,
            vec![new_task(Target::Queue(QueueName::default_queue()))],
        );
        assert_eq!(refused, vec![Err(Error::ShuttingDown)]);
        assert_eq!(state(&q, held[0]), (TaskState::Pending, 0));
    }
}
