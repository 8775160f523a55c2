//! One accepted task as the queue keeps it, from submission until it is
//! forgotten: what it carries, where it is in its life, and the generation
//! that tells a live line slot or timer from a stale one.
//!
//! A deep queue holds a million of these, so the entry is kept small and
//! the rarely used fields live in a box allocated on first use. The actor
//! owns the entries (in a [`TaskTable`]) and changes them only through the
//! methods here, which keep the generation rule: every move into or out of
//! a line or a timer bumps it. [`is_ready`] is the one check of whether a
//! line slot may be handed out.
//!
//! Per-task tracing (the `contact_server::task` target at debug level)
//! lives here too: a span per task, and [`task_event!`] to log inside it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{Span, debug_span};

use super::{Detail, lines::Slot, table::TaskTable};
use crate::domain::{
    BroadcastId, ClientId, DeadLetterReason, Delivery, Target, TaskId, TaskInfo, TaskResult,
    TaskState, prefix,
};

/// The tracing target of per-task spans and events.
pub(super) const TASK_TARGET: &str = "contact_server::task";

/// Logs a task event inside the task's span, when task tracing is on.
macro_rules! task_event {
    ($entry:expr, $($event:tt)+) => {
        if let Some(span) = $entry.span() {
            span.in_scope(|| {
                ::tracing::debug!(target: $crate::queue::entry::TASK_TARGET, $($event)+)
            });
        }
    };
}
pub(super) use task_event;

/// A task's span; disabled (and free) unless task tracing is on.
fn task_span(id: TaskId, target: &Target) -> Span {
    match target {
        Target::Queue(queue) => debug_span!(target: TASK_TARGET, "task", task.id = %id, %queue),
        Target::Client(client) => {
            debug_span!(target: TASK_TARGET, "task", task.id = %id, for_client = %client)
        }
    }
}

/// True when the task behind a line slot may be handed out now: it is
/// still pending, has not moved since the slot was made, and waits for no
/// delay. Every path that takes from a line asks this, and only this.
pub(super) fn is_ready(tasks: &TaskTable<TaskEntry>, (id, generation): Slot) -> bool {
    tasks.get(&id).is_some_and(|e| e.is_ready(generation))
}

/// Where a task goes in its line.
#[derive(Clone, Copy, Debug)]
pub(super) enum Placement {
    /// At the back of its priority: it became due at this instant.
    Back(Instant),
    /// At the front, keeping when it became due: it was first in line
    /// before a delivery that did not happen or did not finish.
    Front,
}

/// What the queue keeps per task. Kept small (a deep queue holds a million
/// of these): fields most tasks never use live in `extra`, allocated on
/// first use.
#[derive(Debug)]
pub(super) struct TaskEntry {
    pub(super) target: Target,
    /// `None` for a task without text (most tasks with a payload).
    text: Option<Arc<str>>,
    payload: Bytes,
    pub(super) priority: i32,
    lease_ms: u32,
    pub(super) state: TaskState,
    pub(super) attempts: u32,
    /// Bumped whenever the task leaves or re-enters a line or timer, which
    /// makes older line slots and timers stale.
    generation: u32,
    /// When it last became due (in line, ready to go), in ms of the queue's
    /// clock: a 48-bit stamp split in two, so the entry keeps its size (a
    /// `u64` would add 8 bytes of padding).
    due_low: u32,
    due_high: u16,
    /// Its wait to a first delivery was recorded (not again on redelivery).
    pub(super) wait_recorded: bool,
    pub(super) worker: Option<ClientId>,
    /// The journal segment holding its full record (0 in memory mode).
    pub(super) anchor: u32,
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
    /// What the journal keeps besides the entry: the idempotency key (with
    /// when its window ends and the task's fingerprint) and the TTL's end,
    /// both in wall ms.
    key: Option<(String, u64, u64)>,
    ttl_deadline_unix_ms: u64,
}

impl TaskEntry {
    /// A task just accepted, not yet in a line: pending, never delivered.
    /// Logs its submission when task tracing is on.
    pub(super) fn new(
        id: TaskId,
        target: Target,
        text: String,
        payload: Bytes,
        priority: i32,
        lease: Duration,
        broadcast: Option<BroadcastId>,
    ) -> Self {
        let span = task_span(id, &target);
        let tracing_tasks = !span.is_disabled();
        let extra = (broadcast.is_some() || tracing_tasks).then(|| {
            Box::new(Extra {
                broadcast,
                span: tracing_tasks.then(|| Box::new(span)),
                ..Default::default()
            })
        });
        let entry = Self {
            target,
            text: (!text.is_empty()).then(|| text.into()),
            payload,
            priority,
            // The max lease is validated to fit (at most u32::MAX ms).
            lease_ms: u32::try_from(lease.as_millis()).unwrap_or(u32::MAX),
            state: TaskState::Pending,
            attempts: 0,
            generation: 0,
            due_low: 0,
            due_high: 0,
            wait_recorded: false,
            anchor: 0,
            worker: None,
            extra,
        };
        task_event!(entry, priority = entry.priority, "submitted");
        entry
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn not_before(&self) -> Option<(Instant, u64)> {
        self.extra.as_ref().and_then(|e| e.not_before)
    }

    /// When it was dead-lettered: the reason and its place among the dead.
    pub(super) fn dead_letter(&self) -> Option<(DeadLetterReason, u64)> {
        self.extra.as_ref().and_then(|e| e.dead_letter)
    }

    fn broadcast(&self) -> Option<BroadcastId> {
        self.extra.as_ref().and_then(|e| e.broadcast)
    }

    /// Its span, while task tracing is on and the task has not ended.
    pub(super) fn span(&self) -> Option<&Span> {
        self.extra.as_ref().and_then(|e| e.span.as_deref())
    }

    /// Opens a new span for a task that starts over (a requeued dead
    /// letter), when task tracing is on.
    pub(super) fn restart_span(&mut self, id: TaskId) {
        let span = task_span(id, &self.target);
        if !span.is_disabled() {
            self.extra().span = Some(Box::new(span));
        }
    }

    /// Closes the task's span: it has reached an end.
    pub(super) fn end_span(&mut self) {
        if let Some(extra) = self.extra.as_mut() {
            extra.span = None;
        }
    }

    /// Keeps what only the journal needs: the idempotency key (with when
    /// its window ends and the task's fingerprint) and when its TTL ends.
    pub(super) fn set_journal_extras(
        &mut self,
        key: Option<(String, u64, u64)>,
        ttl_deadline_unix_ms: u64,
    ) {
        if key.is_some() || ttl_deadline_unix_ms != 0 {
            let extra = self.extra();
            extra.key = key;
            extra.ttl_deadline_unix_ms = ttl_deadline_unix_ms;
        }
    }

    /// The idempotency key, its window's end and the fingerprint; the TTL's end.
    pub(super) fn journal_extras(&self) -> (Option<&(String, u64, u64)>, u64) {
        self.extra
            .as_ref()
            .map_or((None, 0), |e| (e.key.as_ref(), e.ttl_deadline_unix_ms))
    }

    /// Bytes it keeps beyond the entry: text, payload and result, which the
    /// retention of finished tasks and dead letters counts.
    /// Bytes of its text and payload: what an unfinished task holds.
    pub(super) fn content_bytes(&self) -> u64 {
        (self.text.as_deref().map_or(0, str::len) + self.payload.len()) as u64
    }

    pub(super) fn bytes(&self) -> u64 {
        let result = self
            .result()
            .map_or(0, |r| r.ret.len() + r.output.len() + r.error.len());
        (self.text.as_deref().map_or(0, str::len) + self.payload.len() + result) as u64
    }

    /// While delayed: when it may go (wall ms); 0 otherwise.
    pub(super) fn not_before_unix_ms(&self) -> u64 {
        self.not_before().map_or(0, |(_, ms)| ms)
    }

    /// Its text, payload and lease, for the journal's full record.
    pub(super) fn content(&self) -> (Option<&str>, &Bytes, u32) {
        (self.text.as_deref(), &self.payload, self.lease_ms)
    }

    /// The broadcast it is a copy of.
    pub(super) fn broadcast_id(&self) -> Option<BroadcastId> {
        self.broadcast()
    }

    /// Its result so far.
    pub(super) fn result(&self) -> Option<&TaskResult> {
        self.extra.as_ref().map(|e| &e.result)
    }

    /// Where a recovered task stands: `attempts` deliveries, last to `worker`.
    pub(super) fn restore(&mut self, attempts: u32, worker: Option<ClientId>, result: TaskResult) {
        self.attempts = attempts;
        self.worker = worker;
        self.wait_recorded = attempts > 0;
        self.set_result(result);
    }

    /// When it last became due, in ms of the queue's clock.
    pub(super) fn due_ms(&self) -> u64 {
        u64::from(self.due_high) << 32 | u64::from(self.due_low)
    }

    fn set_due_ms(&mut self, ms: u64) {
        self.due_low = ms as u32;
        self.due_high = (ms >> 32) as u16;
    }

    /// True while a line slot or timer made at `generation` stands for this
    /// task: it is pending and has not moved since.
    pub(super) fn is_pending_at(&self, generation: u32) -> bool {
        self.state == TaskState::Pending && self.generation == generation
    }

    /// True when `worker` holds attempt `attempt` of it.
    pub(super) fn is_held_by(&self, worker: &ClientId, attempt: u32) -> bool {
        self.state == TaskState::Delivered
            && self.worker.as_ref() == Some(worker)
            && self.attempts == attempt
    }

    /// True while a line slot made at `generation` may be handed out.
    fn is_ready(&self, generation: u32) -> bool {
        self.is_pending_at(generation) && self.not_before().is_none()
    }

    /// Makes it pending and ready, due since `due_ms` (`None`: keeping when
    /// it became due before); returns the generation of its new line slot.
    pub(super) fn enter_line(&mut self, due_ms: Option<u64>) -> u32 {
        if let Some(due_ms) = due_ms {
            self.set_due_ms(due_ms);
        }
        self.state = TaskState::Pending;
        self.worker = None;
        self.take_not_before();
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    /// Makes it pending, but not before `at` (`at_unix_ms` in wall time);
    /// returns the generation of its timer.
    pub(super) fn wait_until(&mut self, at: Instant, at_unix_ms: u64) -> u32 {
        self.state = TaskState::Pending;
        self.worker = None;
        self.extra().not_before = Some((at, at_unix_ms));
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    /// It stops being pending here: its line slot or timer goes stale.
    /// True when it was in its line (rather than waiting for a delay).
    pub(super) fn leave_pending(&mut self) -> bool {
        self.generation = self.generation.wrapping_add(1);
        // A pending task without a delay is in its line.
        self.take_not_before().is_none()
    }

    fn take_not_before(&mut self) -> Option<(Instant, u64)> {
        self.extra.as_mut().and_then(|e| e.not_before.take())
    }

    /// Hands it to `client` as its next attempt (it has left its line).
    pub(super) fn deliver(&mut self, id: TaskId, client: &ClientId) -> Delivery {
        task_event!(self, attempt = self.attempts + 1, client.id = %client, "dispatched");
        self.state = TaskState::Delivered;
        self.attempts += 1;
        self.worker = Some(client.clone());
        self.current_delivery(id)
    }

    /// The delivery it is now: the one just made, or a recovered one taken
    /// over by a resuming worker (the same attempt, nothing counted again).
    pub(super) fn current_delivery(&self, id: TaskId) -> Delivery {
        Delivery {
            task_id: id,
            text: self.text.clone(),
            payload: self.payload.clone(),
            queue: match &self.target {
                Target::Queue(q) => Some(q.clone()),
                Target::Client(_) => None,
            },
            attempt: self.attempts,
            lease: Duration::from_millis(u64::from(self.lease_ms)),
            priority: self.priority,
            broadcast: self.broadcast(),
        }
    }

    /// Keeps what a worker's acknowledgement produced.
    pub(super) fn set_result(&mut self, result: TaskResult) {
        // Most acks carry no result; storing none allocates nothing.
        if !result.is_empty() || self.extra.is_some() {
            self.extra().result = result;
        }
    }

    /// Explains in its result why it failed.
    pub(super) fn set_error(&mut self, error: String) {
        self.extra().result.error = error;
    }

    /// It is done: neither text nor payload is needed again.
    pub(super) fn complete(&mut self) {
        self.end_span();
        self.state = TaskState::Done;
        self.payload = Bytes::new();
        self.text = None;
    }

    /// It is cancelled: the payload is not needed again.
    pub(super) fn cancel(&mut self) {
        task_event!(self, "cancelled");
        self.end_span();
        self.state = TaskState::Cancelled;
        self.payload = Bytes::new();
    }

    /// Marks it dead-lettered for `reason`, `seq`-th among the dead.
    pub(super) fn kill(&mut self, reason: DeadLetterReason, seq: u64) {
        task_event!(self, ?reason, "dead-lettered");
        self.end_span();
        self.state = TaskState::DeadLettered;
        self.extra().dead_letter = Some((reason, seq));
    }

    /// A dead letter starts over: no attempts, and its wait is counted anew.
    pub(super) fn revive(&mut self) {
        if let Some(extra) = self.extra.as_mut() {
            extra.dead_letter = None;
            // Its TTL was spent on the life that ended; the new one has none.
            extra.ttl_deadline_unix_ms = 0;
        }
        self.attempts = 0;
        self.wait_recorded = false;
    }

    /// The task as clients see it.
    pub(super) fn info(&self, id: TaskId) -> TaskInfo {
        self.info_with(id, Detail::Full)
    }

    /// Its info, with the result text and error cut as `detail` says.
    pub(super) fn info_with(&self, id: TaskId, detail: Detail) -> TaskInfo {
        let result = self
            .extra
            .as_ref()
            .map(|e| match detail {
                Detail::Full => e.result.clone(),
                Detail::Cut(max) => TaskResult {
                    ret: prefix(&e.result.ret, max).to_owned(),
                    output: e.result.output.clone(),
                    error: prefix(&e.result.error, max).to_owned(),
                },
            })
            .unwrap_or_default();
        TaskInfo {
            id,
            state: self.state,
            target: self.target.clone(),
            attempts: self.attempts,
            worker: self.worker.clone(),
            result,
            priority: self.priority,
            not_before_unix_ms: self.not_before().map_or(0, |(_, ms)| ms),
            dead_letter_reason: self.dead_letter().map(|(reason, _)| reason),
            broadcast: self.broadcast(),
            text: self.text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::QueueName;

    fn entry() -> TaskEntry {
        TaskEntry::new(
            TaskId::generate(),
            Target::Queue(QueueName::default_queue()),
            "t".into(),
            Bytes::new(),
            0,
            Duration::from_secs(1),
            None,
        )
    }

    /// A deep queue holds a million entries: growing one is a decision.
    #[test]
    fn task_entry_stays_small() {
        let size = std::mem::size_of::<TaskEntry>();
        eprintln!("TaskEntry is {size} bytes");
        // 120 bytes until the journal's anchor took the last 8 (with padding).
        assert!(size <= 128, "TaskEntry grew to {size} bytes");
    }

    /// A line slot is ready only while its task has not moved since; a
    /// delayed task's timer stands for it, but it is not ready.
    #[test]
    fn slots_go_stale_when_the_task_moves() {
        let mut table = TaskTable::default();
        let id = TaskId::generate();
        table.insert(id, entry());
        let slot = table.get_mut(&id).unwrap().enter_line(Some(5));
        assert!(is_ready(&table, (id, slot)));
        assert!(
            table.get_mut(&id).unwrap().leave_pending(),
            "it was in line"
        );
        assert!(!is_ready(&table, (id, slot)));
        let e = table.get_mut(&id).unwrap();
        let timer = e.wait_until(Instant::now(), 1);
        assert!(e.is_pending_at(timer) && !e.is_ready(timer));
        assert!(!e.leave_pending(), "it waited for a delay");
        assert!(!e.is_pending_at(timer));
        assert_eq!(e.due_ms(), 5, "leaving the line keeps when it became due");
    }

    /// A delivery counts an attempt and names its holder.
    #[test]
    fn delivery_counts_an_attempt() {
        let mut e = entry();
        let client = ClientId::generate();
        let delivery = e.deliver(TaskId::generate(), &client);
        assert_eq!((delivery.attempt, delivery.text.as_deref()), (1, Some("t")));
        assert_eq!(
            (e.state, e.worker.as_ref()),
            (TaskState::Delivered, Some(&client))
        );
    }
}
