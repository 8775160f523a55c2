//! The queue actor's state and handlers. Handlers are synchronous: nothing
//! here awaits except the inbox and the next timer.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque, hash_map::Entry},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
// Server-made random ids only: keys a client chooses keep std's SipHash.
use rustc_hash::FxHashMap;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{Span, debug, debug_span};

use super::{
    Cancelled, Completion, LeaseRequest, QueueMsg, QueuePolicy, QueueStats, Release, ReleaseReason,
    lines::{Line, Timer, Timers},
    table::TaskTable,
};
use crate::{
    alarm::Alarm,
    domain::{
        BroadcastId, ClientId, DeadLetterReason, Delivery, NewTask, Outcome, QueueName, SessionId,
        Target, TaskId, TaskInfo, TaskResult, TaskState,
    },
    error::Error,
    metrics::{QueueGauges, QueueMetrics, QueueSample, SUBMIT_TO_DISPATCH_SECONDS},
};

/// Messages handled per turn before dispatching, so a burst of submits is
/// handed to workers in batches rather than one by one.
const MAX_MESSAGES_PER_TURN: usize = 256;

/// Broadcast records kept for `GetBroadcast`; the oldest go first.
const MAX_BROADCASTS: usize = 10_000;

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the queue keeps per task. Kept small (a deep queue holds a million
/// of these): fields most tasks never use live in `extra`, allocated on
/// first use.
#[derive(Debug)]
struct TaskEntry {
    target: Target,
    /// `None` for a task without text (most tasks with a payload).
    text: Option<Arc<str>>,
    payload: Bytes,
    priority: i32,
    lease_ms: u32,
    state: TaskState,
    attempts: u32,
    /// Bumped whenever the task leaves or re-enters a line or timer, which
    /// makes older line slots and timers stale.
    generation: u32,
    /// When it last became due (in line, ready to go), in ms of the queue's
    /// clock ([`Queue::clock_ms`]): a 48-bit stamp split in two, so the
    /// entry keeps its size (a `u64` would add 8 bytes of padding).
    due_low: u32,
    due_high: u16,
    /// Its wait to a first delivery was recorded (not again on redelivery).
    wait_recorded: bool,
    worker: Option<ClientId>,
    extra: Option<Box<Extra>>,
}

/// The rarely used part of a task.
#[derive(Debug, Default)]
struct Extra {
    /// While pending with a delay: when it may go (and the same as wall time).
    not_before: Option<(Instant, u64)>,
    result: TaskResult,
    dead_letter: Option<(DeadLetterReason, u64)>,
    broadcast: Option<BroadcastId>,
    /// The task's span, from submission to its end, when task tracing is
    /// on (the `contact_server::task` target at debug level).
    span: Option<Box<Span>>,
}

impl TaskEntry {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn not_before(&self) -> Option<(Instant, u64)> {
        self.extra.as_ref().and_then(|e| e.not_before)
    }

    fn take_not_before(&mut self) -> Option<(Instant, u64)> {
        self.extra.as_mut().and_then(|e| e.not_before.take())
    }

    fn dead_letter(&self) -> Option<(DeadLetterReason, u64)> {
        self.extra.as_ref().and_then(|e| e.dead_letter)
    }

    fn broadcast(&self) -> Option<BroadcastId> {
        self.extra.as_ref().and_then(|e| e.broadcast)
    }

    fn span(&self) -> Option<&Span> {
        self.extra.as_ref().and_then(|e| e.span.as_deref())
    }

    /// Closes the task's span: it has reached an end.
    fn end_span(&mut self) {
        if let Some(extra) = self.extra.as_mut() {
            extra.span = None;
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_millis(u64::from(self.lease_ms))
    }

    fn due_ms(&self) -> u64 {
        u64::from(self.due_high) << 32 | u64::from(self.due_low)
    }

    fn set_due_ms(&mut self, ms: u64) {
        self.due_low = ms as u32;
        self.due_high = (ms >> 32) as u16;
    }

    fn info(&self, id: TaskId) -> TaskInfo {
        TaskInfo {
            id,
            state: self.state,
            target: self.target.clone(),
            attempts: self.attempts,
            worker: self.worker.clone(),
            result: self
                .extra
                .as_ref()
                .map(|e| e.result.clone())
                .unwrap_or_default(),
            priority: self.priority,
            not_before_unix_ms: self.not_before().map_or(0, |(_, ms)| ms),
            dead_letter_reason: self.dead_letter().map(|(reason, _)| reason),
            broadcast: self.broadcast(),
        }
    }
}

/// Where a task goes in its line.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// At the back of its priority: it became due at this instant.
    Back(Instant),
    /// At the front, keeping when it became due: it was first in line
    /// before a delivery that did not happen or did not finish.
    Front,
}

/// Logs a task event inside the task's span, when task tracing is on.
macro_rules! task_event {
    ($entry:expr, $($event:tt)+) => {
        if let Some(span) = $entry.span() {
            span.in_scope(|| debug!(target: TASK_TARGET, $($event)+));
        }
    };
}

/// The tracing target of per-task spans and events.
const TASK_TARGET: &str = "contact_server::task";

/// A task's span; disabled (and free) unless task tracing is on.
fn task_span(id: TaskId, target: &Target) -> Span {
    match target {
        Target::Queue(queue) => debug_span!(target: TASK_TARGET, "task", task.id = %id, %queue),
        Target::Client(client) => {
            debug_span!(target: TASK_TARGET, "task", task.id = %id, for_client = %client)
        }
    }
}

/// One queue's (or one targeted worker's) pending tasks.
#[derive(Debug, Default)]
struct TargetState {
    /// Tasks ready to go (slots may be stale).
    line: Line,
    /// Pending tasks, ready or delayed, against the maximum depth.
    depth: usize,
    /// Pending tasks in the line now (not delayed), to split bursts evenly.
    ready: usize,
    /// Listed in `Queue::dirty`.
    dirty: bool,
}

/// Empty target states are swept when there are more than this many, so
/// queue names that producers stop using do not pile up.
const TARGET_SWEEP_THRESHOLD: usize = 1024;

#[derive(Debug)]
pub(super) struct Queue {
    rx: mpsc::Receiver<QueueMsg>,
    policy: QueuePolicy,
    tasks: TaskTable<TaskEntry>,
    /// Per queue and per targeted worker: its line and counts. One map, so
    /// a task entering or leaving a line costs one lookup.
    targets: HashMap<Target, TargetState>,
    timers: Timers,
    /// Every worker id that has registered and may still be targeted.
    known_clients: HashSet<ClientId>,
    /// Workers with a session now.
    online: HashSet<ClientId>,
    /// Lease requests waiting for tasks, one per session.
    parked: FxHashMap<SessionId, LeaseRequest>,
    /// Waiting sessions per queue, first come first served. Entries whose
    /// ticket no longer matches `parked` are stale and skipped.
    waiting: HashMap<QueueName, VecDeque<(SessionId, u64)>>,
    /// The parked session of each worker, for tasks targeted at it.
    waiting_client: HashMap<ClientId, SessionId>,
    /// Targets that gained tasks (or waiters) since the last dispatch; each
    /// is listed once, guarded by its `dirty` flag.
    dirty: Vec<Target>,
    /// `targets` is swept of idle states when it grows past this.
    sweep_at: usize,
    /// Workers with a made-up id that went away while tasks for them were
    /// still delayed: forgotten once those tasks are gone.
    to_forget: HashSet<ClientId>,
    /// Done and cancelled tasks, oldest first, forgotten past the limit.
    finished: VecDeque<TaskId>,
    /// Dead letters in the order they died.
    dead: BTreeMap<u64, TaskId>,
    idempotency: HashMap<String, TaskId>,
    broadcasts: FxHashMap<BroadcastId, Vec<TaskId>>,
    broadcast_order: VecDeque<BroadcastId>,
    watchers: FxHashMap<TaskId, Vec<oneshot::Sender<Result<TaskInfo, Error>>>>,
    next_ticket: u64,
    next_dead_seq: u64,
    pending_count: usize,
    in_flight_count: usize,
    draining: bool,
    /// The zero of the per-task millisecond clock.
    epoch: Instant,
    metrics: QueueMetrics,
    gauges: QueueGauges,
}

impl Queue {
    pub(super) fn new(rx: mpsc::Receiver<QueueMsg>, policy: QueuePolicy) -> Self {
        let default_queue = QueueName::default_queue();
        let mut configured: Vec<&QueueName> = policy.per_queue.keys().collect();
        configured.sort();
        let gauges = QueueGauges::new(
            policy.metrics_queue_labels,
            std::iter::once(&default_queue).chain(configured),
        );
        Self {
            rx,
            policy,
            tasks: TaskTable::default(),
            targets: HashMap::new(),
            timers: Timers::default(),
            known_clients: HashSet::new(),
            online: HashSet::new(),
            parked: FxHashMap::default(),
            waiting: HashMap::new(),
            waiting_client: HashMap::new(),
            dirty: Vec::new(),
            sweep_at: TARGET_SWEEP_THRESHOLD,
            to_forget: HashSet::new(),
            finished: VecDeque::new(),
            dead: BTreeMap::new(),
            idempotency: HashMap::new(),
            broadcasts: FxHashMap::default(),
            broadcast_order: VecDeque::new(),
            watchers: FxHashMap::default(),
            next_ticket: 1,
            next_dead_seq: 1,
            pending_count: 0,
            in_flight_count: 0,
            draining: false,
            epoch: Instant::now(),
            metrics: QueueMetrics::new(),
            gauges,
        }
    }

    pub(super) async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_MESSAGES_PER_TURN);
        let mut alarm = Alarm::new();
        loop {
            alarm.set(self.timers.next());
            tokio::select! {
                received = self.rx.recv_many(&mut batch, MAX_MESSAGES_PER_TURN) => {
                    if received == 0 {
                        break;
                    }
                    for msg in batch.drain(..) {
                        self.handle(msg);
                    }
                }
                () = alarm.fired() => {}
            }
            if self.timers.next().is_some_and(|at| at <= Instant::now()) {
                self.fire_timers(Instant::now());
            }
            self.dispatch();
            self.sweep_targets();
        }
        debug!(
            pending = self.pending_count,
            in_flight = self.in_flight_count,
            "queue stopped"
        );
    }

    /// Milliseconds since `epoch` (48 bits: 8,900 years).
    fn clock_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Sets the gauges: depth and oldest ready task per queue, tasks in
    /// flight. Stale slots at the heads of lines are dropped on the way, so
    /// each head read is of a live task.
    fn publish_gauges(&mut self) {
        let now_ms = self.clock_ms(Instant::now());
        let tasks = &self.tasks;
        let samples =
            self.targets
                .iter_mut()
                .filter(|(_, s)| s.depth > 0)
                .map(|(target, state)| {
                    let oldest_due = state
                        .line
                        .heads(|(id, generation)| {
                            tasks.get(&id).is_some_and(|e| {
                                e.state == TaskState::Pending
                                    && e.generation == generation
                                    && e.not_before().is_none()
                            })
                        })
                        .filter_map(|(id, _)| tasks.get(&id))
                        .map(|e| now_ms.saturating_sub(e.due_ms()))
                        .max();
                    QueueSample {
                        queue: match target {
                            Target::Queue(queue) => Some(queue),
                            Target::Client(_) => None,
                        },
                        depth: state.depth,
                        oldest_age: oldest_due.map(Duration::from_millis),
                    }
                });
        self.gauges.publish(samples);
        self.metrics.in_flight.set(self.in_flight_count as f64);
    }

    pub(super) fn handle(&mut self, msg: QueueMsg) {
        match msg {
            QueueMsg::Submit { tasks, respond_to } => {
                let now = Instant::now();
                let ids = tasks
                    .into_iter()
                    .map(|t| self.handle_submit(t, now))
                    .collect();
                // The producer may have gone; the tasks are accepted all the same.
                let _ = respond_to.send(ids);
            }
            QueueMsg::Attach { client } => {
                self.known_clients.insert(client.clone());
                self.online.insert(client);
            }
            QueueMsg::Lease(request) => self.handle_lease(request),
            QueueMsg::Complete { worker, acks } => {
                for ack in acks {
                    self.handle_complete(&worker, ack);
                }
            }
            QueueMsg::Release(release) => self.handle_release(release),
            QueueMsg::Get { task, respond_to } => {
                let _ = respond_to.send(self.info(task));
            }
            QueueMsg::Watch { task, respond_to } => self.handle_watch(task, respond_to),
            QueueMsg::Cancel { task, respond_to } => {
                let _ = respond_to.send(self.handle_cancel(task));
            }
            QueueMsg::DeadLetters {
                queue,
                limit,
                respond_to,
            } => {
                let _ = respond_to.send(self.dead_letters(queue.as_ref(), limit));
            }
            QueueMsg::Requeue { task, respond_to } => {
                let _ = respond_to.send(self.handle_requeue(task));
            }
            QueueMsg::OpenBroadcast { respond_to } => {
                let _ = respond_to.send(self.open_broadcast());
            }
            QueueMsg::BroadcastCopies {
                broadcast,
                respond_to,
            } => {
                let _ = respond_to.send(self.broadcast_copies(broadcast));
            }
            QueueMsg::QueueStats { respond_to } => {
                let _ = respond_to.send(self.queue_stats());
            }
            QueueMsg::PublishGauges { respond_to } => {
                self.publish_gauges();
                let _ = respond_to.send(());
            }
            QueueMsg::Drain => self.draining = true,
        }
    }

    // === Submission ===

    fn handle_submit(&mut self, task: NewTask, now: Instant) -> Result<TaskId, Error> {
        if self.draining {
            return Err(Error::ShuttingDown);
        }
        if let Some(key) = &task.idempotency_key
            && let Some(id) = self.idempotency.get(key)
        {
            return Ok(*id);
        }
        let target = task.target();
        if let Target::Client(client) = &target
            && !self.known_clients.contains(client)
        {
            return Err(Error::NotFound {
                what: "worker",
                id: client.to_string(),
            });
        }
        if let Some(broadcast) = task.broadcast
            && !self.broadcasts.contains_key(&broadcast)
        {
            return Err(Error::NotFound {
                what: "broadcast",
                id: broadcast.to_string(),
            });
        }
        let max_depth = self.policy.limits(&target).max_depth;
        if self.depth(&target) >= max_depth {
            return Err(Error::ResourceExhausted(format!(
                "{} is full ({max_depth} pending tasks)",
                describe(&target)
            )));
        }
        if self.pending_count >= self.policy.max_pending_tasks {
            return Err(Error::ResourceExhausted(format!(
                "the server holds its maximum of {} pending tasks",
                self.policy.max_pending_tasks
            )));
        }
        let id = TaskId::generate();
        match &target {
            Target::Queue(_) => self.metrics.submitted_queue.increment(1),
            Target::Client(_) => self.metrics.submitted_client.increment(1),
        }
        if let Some(key) = task.idempotency_key {
            self.idempotency.insert(key.clone(), id);
            self.timers
                .add(now + self.policy.idempotency_window, Timer::ForgetKey(key));
        }
        if let Some(ttl) = task.ttl {
            self.timers.add(now + ttl, Timer::Expire(id));
        }
        if let Target::Client(_) = target {
            self.timers
                .add(now + self.policy.target_ttl, Timer::TargetTtl(id));
        }
        if let Some(broadcast) = task.broadcast
            && let Some(copies) = self.broadcasts.get_mut(&broadcast)
        {
            copies.push(id);
        }
        let lease = task
            .lease
            .unwrap_or(self.policy.default_lease)
            .min(self.policy.max_lease);
        let span = task_span(id, &target);
        let tracing_tasks = !span.is_disabled();
        let extra = (task.broadcast.is_some() || tracing_tasks).then(|| {
            Box::new(Extra {
                broadcast: task.broadcast,
                span: tracing_tasks.then(|| Box::new(span)),
                ..Default::default()
            })
        });
        self.tasks.insert(
            id,
            TaskEntry {
                target,
                text: (!task.text.is_empty()).then(|| task.text.into()),
                payload: task.payload,
                priority: task.priority,
                // The max lease is validated to fit (at most u32::MAX ms).
                lease_ms: u32::try_from(lease.as_millis()).unwrap_or(u32::MAX),
                state: TaskState::Pending,
                attempts: 0,
                generation: 0,
                due_low: 0,
                due_high: 0,
                wait_recorded: false,
                worker: None,
                extra,
            },
        );
        if tracing_tasks && let Some(entry) = self.tasks.get(&id) {
            task_event!(entry, priority = entry.priority, "submitted");
        }
        let wait = match task.not_before_unix_ms {
            0 => None,
            ms => (UNIX_EPOCH + Duration::from_millis(ms))
                .duration_since(SystemTime::now())
                .ok()
                .filter(|wait| !wait.is_zero()),
        };
        match wait {
            Some(wait) => self.make_pending_later(id, now + wait, task.not_before_unix_ms),
            None => self.make_pending(id, Placement::Back(now)),
        }
        Ok(id)
    }

    // === Lines ===

    /// Puts a task in line.
    fn make_pending(&mut self, id: TaskId, placement: Placement) {
        let due_ms = match placement {
            Placement::Back(at) => Some(self.clock_ms(at)),
            Placement::Front => None,
        };
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        if let Some(due_ms) = due_ms {
            entry.set_due_ms(due_ms);
        }
        let front = due_ms.is_none();
        entry.state = TaskState::Pending;
        entry.worker = None;
        entry.take_not_before();
        entry.generation = entry.generation.wrapping_add(1);
        let slot = (id, entry.generation);
        let priority = entry.priority;
        let state = target_state(&mut self.targets, &entry.target);
        state.line.push(priority, slot, front);
        state.depth += 1;
        state.ready += 1;
        if !state.dirty {
            state.dirty = true;
            self.dirty.push(entry.target.clone());
        }
        self.pending_count += 1;
    }

    #[cfg(test)]
    pub(super) fn wait_recorded(&self, id: TaskId) -> bool {
        self.tasks.get(&id).is_some_and(|e| e.wait_recorded)
    }

    #[cfg(test)]
    pub(super) fn target_count(&self) -> usize {
        self.targets.len()
    }

    #[cfg(test)]
    pub(super) fn sweep(&mut self) {
        self.sweep_targets();
    }

    fn depth(&self, target: &Target) -> usize {
        self.targets.get(target).map_or(0, |s| s.depth)
    }

    /// Lists a target for the next dispatch when its line has slots.
    fn mark_dirty(&mut self, target: &Target) {
        if let Some(state) = self.targets.get_mut(target)
            && !state.dirty
            && !state.line.is_empty()
        {
            state.dirty = true;
            self.dirty.push(target.clone());
        }
    }

    /// Makes a task pending, but not before `at`.
    fn make_pending_later(&mut self, id: TaskId, at: Instant, at_unix_ms: u64) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        entry.state = TaskState::Pending;
        entry.worker = None;
        entry.extra().not_before = Some((at, at_unix_ms));
        entry.generation = entry.generation.wrapping_add(1);
        let slot = (id, entry.generation);
        target_state(&mut self.targets, &entry.target).depth += 1;
        self.pending_count += 1;
        self.timers.add(at, Timer::Ready(slot));
    }

    /// Takes a pending task out of the pending count; its line slot or timer
    /// goes stale.
    fn leave_pending(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        entry.generation = entry.generation.wrapping_add(1);
        // A pending task without a delay is in its line.
        let in_line = entry.take_not_before().is_none();
        if let Some(state) = self.targets.get_mut(&entry.target) {
            if in_line {
                state.ready = state.ready.saturating_sub(1);
            }
            state.depth = state.depth.saturating_sub(1);
        }
        self.pending_count = self.pending_count.saturating_sub(1);
    }

    fn is_ready(&self, (id, generation): (TaskId, u32)) -> bool {
        self.tasks.get(&id).is_some_and(|e| {
            e.state == TaskState::Pending && e.generation == generation && e.not_before().is_none()
        })
    }

    // === Timers ===

    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Ready((id, generation)) => {
                    let due = self.tasks.get(&id).is_some_and(|e| {
                        e.state == TaskState::Pending && e.generation == generation
                    });
                    if due {
                        // Counted as pending while it waited; count it again
                        // as it enters its line.
                        self.leave_pending(id);
                        self.make_pending(id, Placement::Back(now));
                    }
                }
                Timer::Expire(id) => {
                    // Only a task no worker has started expires.
                    let unstarted = self
                        .tasks
                        .get(&id)
                        .is_some_and(|e| e.state == TaskState::Pending && e.attempts == 0);
                    if unstarted {
                        self.leave_pending(id);
                        self.dead_letter(id, DeadLetterReason::Expired);
                    }
                }
                Timer::TargetTtl(id) => {
                    let Some(entry) = self.tasks.get(&id) else {
                        continue;
                    };
                    let Target::Client(client) = &entry.target else {
                        continue;
                    };
                    if entry.state.is_final() {
                        continue;
                    }
                    if entry.state == TaskState::Pending && !self.online.contains(client) {
                        let client = client.clone();
                        self.leave_pending(id);
                        self.dead_letter(id, DeadLetterReason::Undeliverable);
                        self.forget_if_done(&client);
                    } else {
                        // Delivered, or waiting for a busy worker: not
                        // undeliverable; look again later.
                        self.timers
                            .add(now + self.policy.target_ttl, Timer::TargetTtl(id));
                    }
                }
                Timer::ForgetKey(key) => {
                    self.idempotency.remove(&key);
                }
            }
        }
    }

    // === Leasing ===

    fn handle_lease(&mut self, mut request: LeaseRequest) {
        if request.respond_to.is_closed() || request.max == 0 {
            return;
        }
        // Park even when tasks are ready: dispatch serves waiting sessions in
        // arrival order, so a late asker never jumps the line.
        self.mark_dirty(&Target::Client(request.client.clone()));
        for queue in request.queues.iter() {
            self.mark_dirty(&Target::Queue(queue.clone()));
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
    pub(super) fn dispatch(&mut self) {
        // Serving a session that has gone puts its tasks back in line, which
        // marks them dirty again; go round until nothing is left to offer.
        while !self.dirty.is_empty() {
            for target in std::mem::take(&mut self.dirty) {
                if let Some(state) = self.targets.get_mut(&target) {
                    state.dirty = false;
                }
                match target {
                    Target::Client(client) => self.dispatch_client(client),
                    Target::Queue(queue) => self.dispatch_queue(queue),
                }
            }
        }
    }

    fn dispatch_client(&mut self, client: ClientId) {
        if let Some(session) = self.waiting_client.get(&client).copied()
            && let Some(request) = self.parked.remove(&session)
        {
            let max = request.max as usize;
            self.serve(request, max);
        }
    }

    fn dispatch_queue(&mut self, queue: QueueName) {
        let target = Target::Queue(queue.clone());
        let mut waiters = self.waiting.get(&queue).map_or(0, |line| {
            line.iter().filter(|entry| self.is_current(**entry)).count()
        });
        while waiters > 0 {
            let ready = self
                .targets
                .get(&target)
                .filter(|s| !s.line.is_empty())
                .map_or(0, |s| s.ready);
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

    /// Takes up to `max` ready tasks from a line, skipping stale slots.
    fn take_from(&mut self, target: &Target, max: usize, into: &mut Vec<TaskId>) {
        let Some(TargetState { line, .. }) = self.targets.get_mut(target) else {
            return;
        };
        while into.len() < max {
            let Some((id, generation)) = line.pop() else {
                break;
            };
            // `is_ready`, inlined to borrow the line and the tasks apart.
            let ready = self.tasks.get(&id).is_some_and(|e| {
                e.state == TaskState::Pending
                    && e.generation == generation
                    && e.not_before().is_none()
            });
            if ready {
                into.push(id);
            }
        }
    }

    /// Drops the states of targets with nothing pending, once there are
    /// many: a line is kept while in use, so a busy queue does not give up
    /// and reallocate it each time it runs empty. With nothing pending every
    /// slot left in a line is stale, so the line goes too. The threshold
    /// moves with the number kept, so a server with many live targets does
    /// not rescan them every turn.
    fn sweep_targets(&mut self) {
        if self.targets.len() > self.sweep_at {
            self.targets.retain(|_, s| s.depth > 0 || s.dirty);
            self.sweep_at = (2 * self.targets.len()).max(TARGET_SWEEP_THRESHOLD);
        }
    }

    /// Answers a lease request with up to `limit` tasks (never more than it
    /// asked for): the worker's own tasks first, then its queues in order.
    /// With nothing to give (every slot was stale) the request waits again.
    fn serve(&mut self, request: LeaseRequest, limit: usize) {
        if self.waiting_client.get(&request.client) == Some(&request.session) {
            self.waiting_client.remove(&request.client);
        }
        let max = limit.min(request.max as usize);
        let mut ids = Vec::with_capacity(max.min(64));
        self.take_from(&Target::Client(request.client.clone()), max, &mut ids);
        for queue in request.queues.iter() {
            if ids.len() >= max {
                break;
            }
            self.take_from(&Target::Queue(queue.clone()), max, &mut ids);
        }
        if ids.is_empty() {
            self.handle_lease(request);
            return;
        }
        let mut deliveries = Vec::with_capacity(ids.len());
        let now_ms = self.clock_ms(Instant::now());
        // Recorded once the deliveries are on their way, and once per task.
        let mut first_waits = Vec::new();
        for id in ids {
            self.leave_pending(id);
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            if !entry.wait_recorded {
                first_waits.push((id, now_ms.saturating_sub(entry.due_ms())));
            }
            task_event!(entry, attempt = entry.attempts + 1, client.id = %request.client, "dispatched");
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
                lease: entry.lease(),
                priority: entry.priority,
                broadcast: entry.broadcast(),
            });
        }
        let count = deliveries.len();
        self.in_flight_count += count;
        match request.respond_to.send(deliveries) {
            Ok(()) => {
                self.metrics.dispatched.increment(count as u64);
                for (id, waited_ms) in first_waits {
                    SUBMIT_TO_DISPATCH_SECONDS.record(Duration::from_millis(waited_ms));
                    if let Some(entry) = self.tasks.get_mut(&id) {
                        entry.wait_recorded = true;
                    }
                }
            }
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
            if self.state(*id) != Some(TaskState::Delivered) {
                continue;
            }
            if let Some(entry) = self.tasks.get_mut(id) {
                entry.attempts = entry.attempts.saturating_sub(1);
            }
            self.in_flight_count = self.in_flight_count.saturating_sub(1);
            self.make_pending(*id, Placement::Front);
        }
    }

    // === Acknowledgements and releases ===

    /// True when `worker` holds attempt `attempt` of the task.
    fn holds(&self, id: TaskId, worker: &ClientId, attempt: u32) -> bool {
        self.tasks.get(&id).is_some_and(|e| {
            e.state == TaskState::Delivered
                && e.worker.as_ref() == Some(worker)
                && e.attempts == attempt
        })
    }

    fn handle_complete(&mut self, worker: &ClientId, ack: Completion) {
        // The session checked the ack against what it holds, so a mismatch
        // here means the task moved on meanwhile; the ack is stale.
        if !self.holds(ack.task, worker, ack.attempt) {
            debug!(task.id = %ack.task, client.id = %worker, "stale acknowledgement ignored");
            return;
        }
        let id = ack.task;
        self.in_flight_count = self.in_flight_count.saturating_sub(1);
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        // Most acks carry no result; storing none allocates nothing.
        if !ack.result.is_empty() || entry.extra.is_some() {
            entry.extra().result = ack.result;
        }
        task_event!(entry, attempt = ack.attempt, outcome = ?ack.outcome, "acknowledged");
        match ack.outcome {
            Outcome::Done => {
                self.metrics.acked_done.increment(1);
                entry.state = TaskState::Done;
                // Payload and text are not needed once the task is done.
                entry.payload = Bytes::new();
                entry.text = None;
                entry.end_span();
                self.finish(id);
            }
            Outcome::FailedPermanently => {
                self.metrics.acked_failed.increment(1);
                self.dead_letter(id, DeadLetterReason::FailedPermanently);
            }
            Outcome::Failed | Outcome::Retry => {
                let (acked, redelivered) = if ack.outcome == Outcome::Failed {
                    (&self.metrics.acked_failed, &self.metrics.redelivered_failed)
                } else {
                    (&self.metrics.acked_retry, &self.metrics.redelivered_retry)
                };
                acked.increment(1);
                let limits = *self.policy.limits(&entry.target);
                if entry.attempts >= limits.max_attempts {
                    self.dead_letter(id, DeadLetterReason::MaxAttempts);
                    return;
                }
                redelivered.increment(1);
                let delay = match (ack.outcome, ack.retry_after) {
                    (Outcome::Retry, Some(delay)) => delay.min(limits.retry.max),
                    _ => limits.retry.delay(entry.attempts),
                };
                self.retry_later(id, delay);
            }
        }
    }

    fn retry_later(&mut self, id: TaskId, delay: Duration) {
        if delay.is_zero() {
            self.make_pending(id, Placement::Back(Instant::now()));
            return;
        }
        let at_unix_ms = unix_ms(SystemTime::now() + delay);
        self.make_pending_later(id, Instant::now() + delay, at_unix_ms);
    }

    fn handle_release(&mut self, release: Release) {
        let Release {
            session,
            worker,
            delivered,
            reason,
            undelivered,
            session_ended,
        } = release;
        self.undo_deliveries(&undelivered);
        for (id, attempt) in delivered.into_iter().rev() {
            if !self.holds(id, &worker, attempt) {
                continue;
            }
            self.in_flight_count = self.in_flight_count.saturating_sub(1);
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            let max_attempts = self.policy.limits(&entry.target).max_attempts;
            if entry.attempts >= max_attempts {
                entry.extra().result.error = format!(
                    "{} on attempt {attempt}, the last of max_attempts ({max_attempts})",
                    match reason {
                        ReleaseReason::WorkerLost => "worker went away before acknowledging",
                        ReleaseReason::LeaseExpired => "lease expired",
                        ReleaseReason::ReceiptMissed => "receipt not confirmed in time",
                    }
                );
                self.dead_letter(id, DeadLetterReason::MaxAttempts);
            } else {
                match reason {
                    ReleaseReason::WorkerLost => &self.metrics.redelivered_worker_lost,
                    ReleaseReason::LeaseExpired => &self.metrics.redelivered_lease_expired,
                    ReleaseReason::ReceiptMissed => &self.metrics.redelivered_receipt_missed,
                }
                .increment(1);
                task_event!(entry, attempt, ?reason, "taken back");
                self.make_pending(id, Placement::Front);
            }
        }
        if let Some(forget) = session_ended {
            self.worker_offline(session, &worker, forget);
        }
    }

    /// A worker's session has ended (after its tasks were put back). A
    /// worker whose id the server made up can never come back under it:
    /// tasks that still wait for it are undeliverable, and it is forgotten.
    fn worker_offline(&mut self, session: SessionId, worker: &ClientId, forget: bool) {
        self.online.remove(worker);
        if let Some(request) = self.parked.remove(&session)
            && self.waiting_client.get(&request.client) == Some(&session)
        {
            self.waiting_client.remove(&request.client);
        }
        if !forget {
            return;
        }
        let own = Target::Client(worker.clone());
        let line = self
            .targets
            .get_mut(&own)
            .map(|s| std::mem::take(&mut s.line));
        if let Some(mut line) = line {
            while let Some(slot) = line.pop() {
                if self.is_ready(slot) {
                    self.leave_pending(slot.0);
                    self.dead_letter(slot.0, DeadLetterReason::Undeliverable);
                }
            }
        }
        // Delayed tasks for it (a retry backoff) meet their target TTL; it is
        // forgotten when the last of them is gone.
        self.to_forget.insert(worker.clone());
        self.forget_if_done(worker);
    }

    fn forget_if_done(&mut self, worker: &ClientId) {
        let own = Target::Client(worker.clone());
        if self.to_forget.contains(worker) && self.depth(&own) == 0 {
            self.to_forget.remove(worker);
            self.known_clients.remove(worker);
            self.targets.remove(&own);
        }
    }

    // === Endings ===

    fn dead_letter(&mut self, id: TaskId, reason: DeadLetterReason) {
        let seq = self.next_dead_seq;
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        self.next_dead_seq += 1;
        task_event!(entry, ?reason, "dead-lettered");
        entry.end_span();
        entry.state = TaskState::DeadLettered;
        entry.extra().dead_letter = Some((reason, seq));
        self.dead.insert(seq, id);
        self.metrics.dead_lettered(reason).increment(1);
        self.notify_watchers(id);
    }

    /// Records a done or cancelled task and forgets the oldest ones past the
    /// retention limit.
    fn finish(&mut self, id: TaskId) {
        self.notify_watchers(id);
        self.finished.push_back(id);
        while self.finished.len() > self.policy.max_finished_tasks {
            if let Some(old) = self.finished.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }

    fn handle_cancel(&mut self, id: TaskId) -> Result<Cancelled, Error> {
        let state = self.state(id).ok_or(Error::NotFound {
            what: "task",
            id: id.to_string(),
        })?;
        let holder = match state {
            TaskState::Pending => {
                self.leave_pending(id);
                None
            }
            TaskState::Delivered => {
                self.in_flight_count = self.in_flight_count.saturating_sub(1);
                self.tasks
                    .get(&id)
                    .and_then(|e| Some((e.worker.clone()?, e.attempts)))
            }
            TaskState::DeadLettered => {
                if let Some((_, seq)) = self.tasks.get(&id).and_then(TaskEntry::dead_letter) {
                    self.dead.remove(&seq);
                }
                None
            }
            TaskState::Done | TaskState::Cancelled => {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} is already {}",
                    if state == TaskState::Done {
                        "done"
                    } else {
                        "cancelled"
                    }
                )));
            }
        };
        if let Some(entry) = self.tasks.get_mut(&id) {
            task_event!(entry, "cancelled");
            entry.end_span();
            entry.state = TaskState::Cancelled;
            entry.payload = Bytes::new();
        }
        self.metrics.cancelled.increment(1);
        self.finish(id);
        Ok(Cancelled {
            info: self.info(id)?,
            holder,
        })
    }

    fn handle_requeue(&mut self, id: TaskId) -> Result<TaskInfo, Error> {
        let entry = self.tasks.get(&id).ok_or(Error::NotFound {
            what: "task",
            id: id.to_string(),
        })?;
        let Some((_, seq)) = entry
            .dead_letter()
            .filter(|_| entry.state == TaskState::DeadLettered)
        else {
            return Err(Error::FailedPrecondition(format!(
                "task {id} is not dead-lettered"
            )));
        };
        let max_depth = self.policy.limits(&entry.target).max_depth;
        if self.depth(&entry.target) >= max_depth {
            return Err(Error::ResourceExhausted(format!(
                "{} is full ({max_depth} pending tasks)",
                describe(&entry.target)
            )));
        }
        self.dead.remove(&seq);
        if let Some(entry) = self.tasks.get_mut(&id) {
            entry.extra().dead_letter = None;
            entry.attempts = 0;
            // A requeued task waits anew, and its wait is counted anew.
            entry.wait_recorded = false;
        }
        if let Some(Target::Client(_)) = self.tasks.get(&id).map(|e| &e.target) {
            self.timers.add(
                Instant::now() + self.policy.target_ttl,
                Timer::TargetTtl(id),
            );
        }
        if let Some(entry) = self.tasks.get_mut(&id) {
            let span = task_span(id, &entry.target);
            if !span.is_disabled() {
                entry.extra().span = Some(Box::new(span));
                task_event!(entry, "requeued");
            }
        }
        self.make_pending(id, Placement::Back(Instant::now()));
        self.info(id)
    }

    fn dead_letters(&self, queue: Option<&QueueName>, limit: usize) -> Vec<TaskInfo> {
        self.dead
            .values()
            .filter_map(|id| Some((*id, self.tasks.get(id)?)))
            .filter(|(_, entry)| match queue {
                None => true,
                Some(queue) => entry.target == Target::Queue(queue.clone()),
            })
            .take(limit)
            .map(|(id, entry)| entry.info(id))
            .collect()
    }

    fn queue_stats(&self) -> Vec<QueueStats> {
        let mut names: Vec<&QueueName> = self
            .targets
            .iter()
            .filter(|(_, s)| s.depth > 0)
            .filter_map(|(target, _)| match target {
                Target::Queue(name) => Some(name),
                Target::Client(_) => None,
            })
            .chain(self.waiting.keys())
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let state = self.targets.get(&Target::Queue(name.clone()));
                let waiting_workers = self.waiting.get(name).map_or(0, |line| {
                    line.iter().filter(|entry| self.is_current(**entry)).count()
                });
                QueueStats {
                    name: name.clone(),
                    pending: state.map_or(0, |s| s.depth),
                    ready: state.map_or(0, |s| s.ready),
                    waiting_workers,
                }
            })
            .filter(|q| q.pending > 0 || q.waiting_workers > 0)
            .collect()
    }

    fn open_broadcast(&mut self) -> Result<BroadcastId, Error> {
        if self.draining {
            return Err(Error::ShuttingDown);
        }
        let id = BroadcastId::generate();
        self.broadcasts.insert(id, Vec::new());
        self.broadcast_order.push_back(id);
        while self.broadcast_order.len() > MAX_BROADCASTS {
            if let Some(old) = self.broadcast_order.pop_front() {
                self.broadcasts.remove(&old);
            }
        }
        Ok(id)
    }

    fn broadcast_copies(&self, broadcast: BroadcastId) -> Result<Vec<TaskInfo>, Error> {
        let copies = self.broadcasts.get(&broadcast).ok_or(Error::NotFound {
            what: "broadcast",
            id: broadcast.to_string(),
        })?;
        Ok(copies.iter().filter_map(|id| self.info(*id).ok()).collect())
    }

    // === Reads ===

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

    fn state(&self, id: TaskId) -> Option<TaskState> {
        self.tasks.get(&id).map(|e| e.state)
    }

    pub(super) fn info(&self, id: TaskId) -> Result<TaskInfo, Error> {
        self.tasks
            .get(&id)
            .map(|entry| entry.info(id))
            .ok_or(Error::NotFound {
                what: "task",
                id: id.to_string(),
            })
    }
}

/// The state of `target`, created on first use.
fn target_state<'a>(
    targets: &'a mut HashMap<Target, TargetState>,
    target: &Target,
) -> &'a mut TargetState {
    targets.entry(target.clone()).or_default()
}

fn describe(target: &Target) -> String {
    match target {
        Target::Queue(queue) => format!("queue {queue}"),
        Target::Client(client) => format!("the line of tasks for worker {client}"),
    }
}

#[cfg(test)]
mod size_tests {
    /// A deep queue holds a million entries: growing one is a decision.
    #[test]
    fn task_entry_stays_small() {
        let size = std::mem::size_of::<super::TaskEntry>();
        eprintln!("TaskEntry is {size} bytes");
        assert!(size <= 120, "TaskEntry grew to {size} bytes");
    }
}
