//! The queue actor: its loop, the dispatch of its messages, and the
//! handlers that carry a task through its life. Each part of the state has
//! its own owner, and the handlers tie them together:
//!
//! - the task table of [`TaskEntry`]s (one per task, by id);
//! - [`Backlog`]: pending tasks per queue or targeted worker, in lines;
//! - [`Waiting`]: sessions waiting for tasks, first come first served;
//! - [`Timers`]: delays, TTLs and idempotency windows;
//! - [`Archive`]: finished tasks, watchers, dead letters, keys, broadcasts;
//! - [`QueuePolicy`]: the limits, and the verdict when something goes wrong.
//!
//! This file has the loop, submission, the moves in and out of a line, the
//! timers and the reads; `actor/leasing.rs` hands tasks to waiting
//! sessions, and `actor/endings.rs` handles how deliveries and tasks end.
//! Handlers are synchronous: nothing here awaits except the inbox and the
//! next timer.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, error, warn};

use super::{
    Detail, QueueMsg, QueueStats,
    archive::{Archive, Watcher},
    backlog::Backlog,
    entry::{Placement, TaskEntry},
    lines::{Timer, Timers},
    policy::{QueuePolicy, Verdict},
    table::TaskTable,
    waiting::Waiting,
};
use crate::{
    alarm::Alarm,
    domain::{BroadcastId, ClientId, NewTask, QueueName, Target, TaskId, TaskInfo},
    error::Error,
    journal::{
        Journal,
        record::{self, Event},
    },
    metrics::{QueueGauges, QueueMetrics},
};

mod endings;
mod journaling;
mod leasing;
mod restore;

/// Messages handled per turn before dispatching, so a burst of submits is
/// handed to workers in batches rather than one by one.
const MAX_MESSAGES_PER_TURN: usize = 256;

/// The queue actor's state; see the module docs for who owns which part.
#[derive(Debug)]
pub(super) struct Queue {
    rx: mpsc::Receiver<QueueMsg>,
    policy: QueuePolicy,
    tasks: TaskTable<TaskEntry>,
    backlog: Backlog,
    waiting: Waiting,
    timers: Timers,
    archive: Archive,
    /// Every worker id that has registered and may still be targeted.
    known_clients: HashSet<ClientId>,
    /// Workers with a session now.
    online: HashSet<ClientId>,
    /// Workers with a made-up id that went away while tasks for them were
    /// still delayed: forgotten once those tasks are gone.
    to_forget: HashSet<ClientId>,
    in_flight_count: usize,
    /// Bytes (text and payload) of the tasks not yet finished: pending,
    /// delayed or delivered. Bounded by `max_pending_bytes`.
    pub(super) unfinished_bytes: u64,
    draining: bool,
    /// The zero of the per-task millisecond clock.
    epoch: Instant,
    /// The wall time (Unix ms) at `epoch`, to record due times as wall time.
    pub(super) epoch_unix_ms: u64,
    /// Where decisions are recorded, and answers wait for them.
    pub(super) journal: Journal,
    /// True while the queue rebuilds itself from the journal: nothing is
    /// recorded then.
    pub(super) restoring: bool,
    /// Sessions recovered from the journal with tasks delivered to them:
    /// their worker may resume them (and keep those tasks) within the
    /// resume grace; after it, the tasks go back in line.
    pub(super) orphans: HashMap<ClientId, Vec<(TaskId, u32)>>,
    metrics: QueueMetrics,
    /// What the overview's rates are made of.
    totals: super::Totals,
    gauges: QueueGauges,
}

impl Queue {
    /// An empty queue that will serve `rx` under `policy`, recording its
    /// decisions in `journal`.
    pub(super) fn new(rx: mpsc::Receiver<QueueMsg>, policy: QueuePolicy, journal: Journal) -> Self {
        let default_queue = QueueName::default_queue();
        let mut configured: Vec<&QueueName> = policy.per_queue.keys().collect();
        configured.sort();
        let gauges = QueueGauges::new(
            policy.metrics_queue_labels,
            std::iter::once(&default_queue).chain(configured),
        );
        Self {
            rx,
            archive: Archive::new(policy.max_finished_tasks, policy.retention),
            policy,
            tasks: TaskTable::default(),
            backlog: Backlog::default(),
            waiting: Waiting::default(),
            timers: Timers::default(),
            known_clients: HashSet::new(),
            online: HashSet::new(),
            to_forget: HashSet::new(),
            in_flight_count: 0,
            unfinished_bytes: 0,
            draining: false,
            epoch: Instant::now(),
            epoch_unix_ms: crate::clock::unix_ms_now(),
            journal,
            restoring: false,
            orphans: HashMap::new(),
            metrics: QueueMetrics::new(),
            totals: super::Totals::default(),
            gauges,
        }
    }

    /// Serves the inbox until every handle is gone, firing timers and
    /// dispatching after each batch of messages.
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
            self.backlog.sweep();
            self.trim_dead_letters();
            self.flush_journal();
        }
        if !self.journal.is_durable() {
            let dropped = self.backlog.pending() + self.in_flight_count;
            if dropped > 0 {
                warn!(
                    dropped,
                    "storage.mode is memory: dropping the tasks still queued or in flight"
                );
            }
        }
        // Everything decided is written before the queue is gone.
        let journal = std::mem::replace(&mut self.journal, Journal::memory());
        match tokio::task::spawn_blocking(move || journal.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => error!(%failure, "journal closed with an error"),
            Err(error) => error!(%error, "journal close did not finish"),
        }
        debug!(
            pending = self.backlog.pending(),
            in_flight = self.in_flight_count,
            "queue stopped"
        );
    }

    /// Milliseconds since `epoch` (48 bits: 8,900 years).
    fn clock_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Applies one message; answers go back on its own `oneshot`.
    pub(super) fn handle(&mut self, msg: QueueMsg) {
        match msg {
            QueueMsg::Submit { tasks, respond_to } => {
                let now = Instant::now();
                let ids: Vec<Result<TaskId, Error>> = tasks
                    .into_iter()
                    .map(|t| self.handle_submit(t, now))
                    .collect();
                // A full disk's refusals need no record and must not wait for
                // the write stuck on it; other refusals (a key already used)
                // may describe a task accepted this turn, so they wait.
                let refused_all = ids
                    .iter()
                    .all(|id| matches!(id, Err(Error::ResourceExhausted(_))));
                // The producer may have gone; the tasks are accepted all the same.
                let answer = move || {
                    let _ = respond_to.send(ids);
                };
                // Refusals record nothing, so they need not wait for the
                // journal: a full disk is said at once, not when it clears.
                if refused_all {
                    answer();
                } else {
                    self.journal.reply(answer);
                }
            }
            QueueMsg::Attach { client } => {
                if self.known_clients.insert(client.clone()) {
                    self.record_client(&client, true);
                }
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
                let info = self.info(task);
                self.journal.reply(move || {
                    let _ = respond_to.send(info);
                });
            }
            QueueMsg::Watch { task, respond_to } => self.handle_watch(task, respond_to),
            QueueMsg::Cancel { task, respond_to } => {
                let answer = self.handle_cancel(task);
                self.journal.reply(move || {
                    let _ = respond_to.send(answer);
                });
            }
            QueueMsg::DeadLetters {
                queue,
                limit,
                detail,
                respond_to,
            } => {
                let answer = self.dead_letters(queue.as_ref(), limit, detail);
                self.journal.reply(move || {
                    let _ = respond_to.send(answer);
                });
            }
            QueueMsg::Requeue { task, respond_to } => {
                let answer = self.handle_requeue(task);
                self.journal.reply(move || {
                    let _ = respond_to.send(answer);
                });
            }
            QueueMsg::OpenBroadcast { respond_to } => {
                let answer = if self.draining {
                    Err(Error::ShuttingDown)
                } else {
                    let id = self.archive.open_broadcast();
                    if !self.restoring {
                        self.journal
                            .record(Event::BroadcastOpened(record::Broadcast {
                                id: id.as_bytes().to_vec(),
                            }));
                    }
                    Ok(id)
                };
                self.journal.reply(move || {
                    let _ = respond_to.send(answer);
                });
            }
            QueueMsg::BroadcastCopies {
                broadcast,
                detail,
                respond_to,
            } => {
                let answer = self.broadcast_copies(broadcast, detail);
                self.journal.reply(move || {
                    let _ = respond_to.send(answer);
                });
            }
            QueueMsg::QueueStats { respond_to } => {
                let _ = respond_to.send(self.queue_stats());
            }
            QueueMsg::Tasks {
                ids,
                detail,
                respond_to,
            } => {
                let infos = ids
                    .into_iter()
                    .map(|id| self.tasks.get(&id).map(|e| e.info_with(id, detail)))
                    .collect();
                let _ = respond_to.send(infos);
            }
            QueueMsg::Totals { respond_to } => {
                let _ = respond_to.send(self.totals);
            }
            QueueMsg::Broadcasts { limit, respond_to } => {
                let newest = self.archive.broadcasts().rev().take(limit).collect();
                let _ = respond_to.send(newest);
            }
            QueueMsg::PublishGauges { respond_to } => {
                self.publish_gauges();
                let _ = respond_to.send(());
            }
            QueueMsg::Drain => self.draining = true,
            QueueMsg::PurgeDeadLetters { queue, respond_to } => {
                let purged = self.purge_dead_letters(queue.as_ref());
                self.journal.reply(move || {
                    let _ = respond_to.send(purged);
                });
            }
            QueueMsg::Adopt {
                worker,
                session,
                held,
                respond_to,
            } => {
                let adopted = self.adopt(&worker, session, &held);
                // Once the tasks are recorded as the new session's.
                self.journal.reply(move || {
                    let _ = respond_to.send(adopted);
                });
            }
        }
    }

    // === Submission ===

    fn handle_submit(&mut self, task: NewTask, now: Instant) -> Result<TaskId, Error> {
        if self.draining {
            return Err(Error::ShuttingDown);
        }
        if self.journal.refusing_work() {
            return Err(Error::ResourceExhausted(
                "the journal's disk is full: no new work until space returns".into(),
            ));
        }
        if let Some(key) = &task.idempotency_key
            && let Some((id, fingerprint)) = self.archive.task_for_key(key)
        {
            // A retry of the same submission gets the first task; another
            // task under the same key is a producer's mistake, not a retry.
            if fingerprint == task.key_fingerprint() {
                return Ok(id);
            }
            // The other task's id is not named: it may be in a queue the
            // caller may not see.
            return Err(Error::AlreadyExists(format!(
                "idempotency_key {} was already used for a different task within \
                 tasks.idempotency_window_secs",
                crate::domain::quote(key)
            )));
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
            && !self.archive.has_broadcast(broadcast)
        {
            return Err(Error::NotFound {
                what: "broadcast",
                id: broadcast.to_string(),
            });
        }
        self.policy
            .check_depth(&target, self.backlog.depth(&target))?;
        self.policy.check_total(self.backlog.pending())?;
        let bytes = (task.text.len() + task.payload.len()) as u64;
        self.policy.check_bytes(self.unfinished_bytes, bytes)?;
        let id = TaskId::generate();
        match &target {
            Target::Queue(_) => self.metrics.submitted_queue.increment(1),
            Target::Client(_) => self.metrics.submitted_client.increment(1),
        }
        self.totals.submitted += 1;
        let now_unix_ms = crate::clock::unix_ms_now();
        let mut journal_key = None;
        if let Some(key) = task.idempotency_key.clone() {
            let fingerprint = task.key_fingerprint();
            self.archive.remember_key(key.clone(), id, fingerprint);
            let window = self.policy.idempotency_window;
            if self.journal.is_durable() {
                let expires = now_unix_ms.saturating_add(window.as_millis() as u64);
                journal_key = Some((key.clone(), expires, fingerprint));
            }
            self.timers.add(now + window, Timer::ForgetKey(key));
        }
        let mut ttl_deadline_unix_ms = 0;
        if let Some(ttl) = task.ttl {
            self.timers.add(now + ttl, Timer::Expire(id));
            ttl_deadline_unix_ms = now_unix_ms.saturating_add(ttl.as_millis() as u64);
        }
        if let Target::Client(_) = target {
            self.timers
                .add(now + self.policy.target_ttl, Timer::TargetTtl(id));
        }
        if let Some(broadcast) = task.broadcast {
            self.archive.add_copy(broadcast, id);
        }
        let lease = self.policy.lease(task.lease);
        let entry = TaskEntry::new(
            id,
            target,
            task.text,
            task.payload,
            task.priority,
            lease,
            task.broadcast,
        );
        self.tasks.insert(id, entry);
        self.unfinished_bytes += bytes;
        if self.journal.is_durable()
            && let Some(entry) = self.tasks.get_mut(&id)
        {
            entry.set_journal_extras(journal_key, ttl_deadline_unix_ms);
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
        // After it is in line, so its full record says when it became due.
        self.record_task(id);
        Ok(id)
    }

    // === Pending ===

    /// Puts a task in line.
    fn make_pending(&mut self, id: TaskId, placement: Placement) {
        let due_ms = match placement {
            Placement::Back(at) => Some(self.clock_ms(at)),
            Placement::Front => None,
        };
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let generation = entry.enter_line(due_ms);
        let front = due_ms.is_none();
        self.backlog
            .push_ready(&entry.target, entry.priority, (id, generation), front);
        self.record_pending(id);
    }

    /// Makes a task pending, but not before `at`.
    fn make_pending_later(&mut self, id: TaskId, at: Instant, at_unix_ms: u64) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let generation = entry.wait_until(at, at_unix_ms);
        self.backlog.push_delayed(&entry.target);
        self.timers.add(at, Timer::Ready((id, generation)));
        self.record_pending(id);
    }

    /// Takes a pending task out of the pending count; its line slot or timer
    /// goes stale.
    fn leave_pending(&mut self, id: TaskId) {
        if let Some(entry) = self.tasks.get_mut(&id) {
            let in_line = entry.leave_pending();
            self.backlog.remove(&entry.target, in_line);
        }
    }

    // === Timers ===

    /// Fires every timer due at `now`; timers whose task moved on since do
    /// nothing.
    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Ready((id, generation)) => {
                    if self
                        .tasks
                        .get(&id)
                        .is_some_and(|e| e.is_pending_at(generation))
                    {
                        // Counted as pending while it waited; count it again
                        // as it enters its line.
                        self.leave_pending(id);
                        self.make_pending(id, Placement::Back(now));
                    }
                }
                Timer::Expire(id) => {
                    let Some(entry) = self.tasks.get(&id) else {
                        continue;
                    };
                    let verdict = self.policy.after_ttl(entry.state, entry.attempts);
                    if let Verdict::DeadLetter { .. } = verdict {
                        self.leave_pending(id);
                        self.carry_out(id, verdict);
                    }
                }
                Timer::TargetTtl(id) => {
                    let Some(entry) = self.tasks.get(&id) else {
                        continue;
                    };
                    let Target::Client(client) = &entry.target else {
                        continue;
                    };
                    let online = self.online.contains(client);
                    match self.policy.after_target_ttl(entry.state, online) {
                        verdict @ Verdict::DeadLetter { .. } => {
                            let client = client.clone();
                            self.leave_pending(id);
                            self.carry_out(id, verdict);
                            self.forget_if_done(&client);
                        }
                        Verdict::CheckAgainAfter(after) => {
                            self.timers.add(now + after, Timer::TargetTtl(id));
                        }
                        // It has ended: the timer is done with it.
                        _ => {}
                    }
                }
                Timer::ForgetKey(key) => self.archive.forget_key(&key),
                Timer::OrphanGrace(worker) => {
                    if let Some(held) = self.orphans.remove(&worker) {
                        self.hand_back_orphaned(&worker, held);
                    }
                }
            }
        }
    }

    // === Reads ===

    fn dead_letters(
        &self,
        queue: Option<&QueueName>,
        limit: usize,
        detail: Detail,
    ) -> Vec<TaskInfo> {
        self.archive
            .dead()
            .filter_map(|id| Some((id, self.tasks.get(&id)?)))
            .filter(|(_, entry)| match queue {
                None => true,
                Some(queue) => entry.target == Target::Queue(queue.clone()),
            })
            .take(limit)
            .map(|(id, entry)| entry.info_with(id, detail))
            .collect()
    }

    fn queue_stats(&mut self) -> Vec<QueueStats> {
        let now_ms = self.clock_ms(Instant::now());
        let oldest: rustc_hash::FxHashMap<QueueName, Duration> = self
            .backlog
            .samples(&self.tasks, now_ms)
            .filter_map(|sample| Some((sample.queue?.clone(), sample.oldest_age?)))
            .collect();
        let mut dead: rustc_hash::FxHashMap<&QueueName, usize> = rustc_hash::FxHashMap::default();
        for id in self.archive.dead() {
            if let Some(TaskEntry {
                target: Target::Queue(queue),
                ..
            }) = self.tasks.get(&id)
            {
                *dead.entry(queue).or_default() += 1;
            }
        }
        let mut names: Vec<&QueueName> = self
            .backlog
            .queues()
            .chain(self.waiting.queues())
            .chain(dead.keys().copied())
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let (pending, ready) = self.backlog.counts(&Target::Queue(name.clone()));
                QueueStats {
                    name: name.clone(),
                    pending,
                    ready,
                    waiting_workers: self.waiting.count(name),
                    oldest_ready_age: oldest.get(name).copied(),
                    dead_letters: dead.get(name).copied().unwrap_or(0),
                }
            })
            .filter(|q| q.pending > 0 || q.waiting_workers > 0 || q.dead_letters > 0)
            .collect()
    }

    fn broadcast_copies(
        &self,
        broadcast: BroadcastId,
        detail: Detail,
    ) -> Result<Vec<TaskInfo>, Error> {
        let copies = self.archive.copies(broadcast).ok_or(Error::NotFound {
            what: "broadcast",
            id: broadcast.to_string(),
        })?;
        Ok(copies
            .iter()
            .filter_map(|id| Some(self.tasks.get(id)?.info_with(*id, detail)))
            .collect())
    }

    /// Sets the gauges: depth and oldest ready task per queue, tasks in
    /// flight.
    fn publish_gauges(&mut self) {
        let now_ms = self.clock_ms(Instant::now());
        self.gauges
            .publish(self.backlog.samples(&self.tasks, now_ms));
        self.metrics.in_flight.set(self.in_flight_count as f64);
        self.metrics
            .unfinished_bytes
            .set(self.unfinished_bytes as f64);
        let (bytes, segments) = self.journal.disk_usage();
        self.metrics.journal_bytes.set(bytes as f64);
        self.metrics.journal_segments.set(segments as f64);
    }

    /// Tells the task's watchers it ended, once that is recorded.
    pub(super) fn notify_watchers(&mut self, id: TaskId) {
        if let Some(watchers) = self.archive.take_watchers(id) {
            let answer = self.info(id);
            self.journal.reply(move || {
                for watcher in watchers {
                    // A watcher that timed out has dropped its receiver; fine.
                    let _ = watcher.send(answer.clone());
                }
            });
        }
    }

    fn handle_watch(&mut self, id: TaskId, respond_to: Watcher) {
        match self.info(id) {
            Ok(info) if !info.state.is_final() => self.archive.watch(id, respond_to),
            answer => self.journal.reply(move || {
                let _ = respond_to.send(answer);
            }),
        }
    }

    /// A task as clients see it.
    pub(super) fn info(&self, id: TaskId) -> Result<TaskInfo, Error> {
        info(&self.tasks, id)
    }

    /// Whether the task's first wait was recorded.
    #[cfg(test)]
    pub(super) fn wait_recorded(&self, id: TaskId) -> bool {
        self.tasks.get(&id).is_some_and(|e| e.wait_recorded)
    }

    /// Target states kept.
    #[cfg(test)]
    pub(super) fn target_count(&self) -> usize {
        self.backlog.target_count()
    }

    /// Sweeps idle target states now.
    #[cfg(test)]
    pub(super) fn sweep(&mut self) {
        self.backlog.sweep();
    }
}

fn info(tasks: &TaskTable<TaskEntry>, id: TaskId) -> Result<TaskInfo, Error> {
    tasks
        .get(&id)
        .map(|entry| entry.info(id))
        .ok_or(Error::NotFound {
            what: "task",
            id: id.to_string(),
        })
}
