//! The queue's pending tasks, per target (each queue, and each worker with
//! tasks sent to it by id): the line of ready tasks, the counts that limits
//! and operators read, and which targets gained tasks since the actor last
//! offered them to waiting sessions.
//!
//! The entries themselves stay in the actor's task table; a line holds only
//! slots (id and generation), and [`entry::is_ready`] decides which of them
//! still stand for a task that may go. One map holds everything about a
//! target, so a task entering or leaving its line costs one lookup.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use super::{
    entry::{self, TaskEntry},
    lines::{Line, Slot},
    table::TaskTable,
};
use crate::{
    domain::{QueueName, Target, TaskId},
    metrics::QueueSample,
};

/// Empty target states are swept when there are more than this many, so
/// queue names that producers stop using do not pile up.
const TARGET_SWEEP_THRESHOLD: usize = 1024;

/// One queue's (or one targeted worker's) pending tasks.
#[derive(Debug, Default)]
struct TargetState {
    /// Tasks ready to go (slots may be stale).
    line: Line,
    /// Pending tasks, ready or delayed, against the maximum depth.
    depth: usize,
    /// Pending tasks in the line now (not delayed), to split bursts evenly.
    ready: usize,
    /// Listed in `Backlog::dirty`.
    dirty: bool,
}

/// Every target's pending tasks; see the module docs.
#[derive(Debug)]
pub(super) struct Backlog {
    targets: HashMap<Target, TargetState>,
    /// Targets that gained tasks (or waiters) since they were last offered,
    /// oldest first; each is listed once, guarded by its `dirty` flag.
    dirty: VecDeque<Target>,
    /// `targets` is swept of idle states when it grows past this.
    sweep_at: usize,
    /// Pending tasks of all targets.
    pending: usize,
}

impl Default for Backlog {
    fn default() -> Self {
        Self {
            targets: HashMap::new(),
            dirty: VecDeque::new(),
            sweep_at: TARGET_SWEEP_THRESHOLD,
            pending: 0,
        }
    }
}

impl Backlog {
    /// Pending tasks in the whole server, ready or delayed.
    pub(super) fn pending(&self) -> usize {
        self.pending
    }

    /// Pending tasks of `target`, ready or delayed.
    pub(super) fn depth(&self, target: &Target) -> usize {
        self.targets.get(target).map_or(0, |s| s.depth)
    }

    /// Pending tasks of `target` and, of those, the ones in its line.
    pub(super) fn counts(&self, target: &Target) -> (usize, usize) {
        self.targets
            .get(target)
            .map_or((0, 0), |s| (s.depth, s.ready))
    }

    /// Tasks that may be taken from `target`'s line now.
    pub(super) fn ready(&self, target: &Target) -> usize {
        self.targets
            .get(target)
            .filter(|s| !s.line.is_empty())
            .map_or(0, |s| s.ready)
    }

    /// Queues with pending tasks, in no order.
    pub(super) fn queues(&self) -> impl Iterator<Item = &QueueName> {
        self.targets
            .iter()
            .filter(|(_, s)| s.depth > 0)
            .filter_map(|(target, _)| match target {
                Target::Queue(name) => Some(name),
                Target::Client(_) => None,
            })
    }

    /// A pending task enters `target`'s line (at the `front` or the back of
    /// its priority); the target is listed to be offered.
    pub(super) fn push_ready(&mut self, target: &Target, priority: i32, slot: Slot, front: bool) {
        let state = self.targets.entry(target.clone()).or_default();
        state.line.push(priority, slot, front);
        state.depth += 1;
        state.ready += 1;
        if !state.dirty {
            state.dirty = true;
            self.dirty.push_back(target.clone());
        }
        self.pending += 1;
    }

    /// A pending task of `target` waits for a timer before its line.
    pub(super) fn push_delayed(&mut self, target: &Target) {
        self.targets.entry(target.clone()).or_default().depth += 1;
        self.pending += 1;
    }

    /// A pending task of `target` stops being pending; `in_line` when it
    /// was in the line rather than waiting for a timer. Its slot goes stale.
    pub(super) fn remove(&mut self, target: &Target, in_line: bool) {
        if let Some(state) = self.targets.get_mut(target) {
            if in_line {
                state.ready = state.ready.saturating_sub(1);
            }
            state.depth = state.depth.saturating_sub(1);
        }
        self.pending = self.pending.saturating_sub(1);
    }

    /// Lists `target` to be offered when its line has slots.
    pub(super) fn mark_dirty(&mut self, target: &Target) {
        if let Some(state) = self.targets.get_mut(target)
            && !state.dirty
            && !state.line.is_empty()
        {
            state.dirty = true;
            self.dirty.push_back(target.clone());
        }
    }

    /// The target listed longest ago, unlisted: it may be listed again
    /// while it is offered.
    pub(super) fn pop_dirty(&mut self) -> Option<Target> {
        let target = self.dirty.pop_front()?;
        if let Some(state) = self.targets.get_mut(&target) {
            state.dirty = false;
        }
        Some(target)
    }

    /// Takes ready tasks from `target`'s line until `into` holds `max`,
    /// dropping stale slots on the way. They are still counted as pending.
    pub(super) fn take_ready(
        &mut self,
        target: &Target,
        max: usize,
        tasks: &TaskTable<TaskEntry>,
        into: &mut Vec<TaskId>,
    ) {
        let Some(TargetState { line, .. }) = self.targets.get_mut(target) else {
            return;
        };
        while into.len() < max {
            let Some(slot) = line.pop() else {
                break;
            };
            if entry::is_ready(tasks, slot) {
                into.push(slot.0);
            }
        }
    }

    /// Empties `target`'s line and hands its slots over (stale ones too);
    /// the tasks are still counted as pending.
    pub(super) fn take_line(&mut self, target: &Target) -> Option<Line> {
        self.targets
            .get_mut(target)
            .map(|s| std::mem::take(&mut s.line))
    }

    /// Forgets `target`'s state (a worker that can never come back).
    pub(super) fn forget(&mut self, target: &Target) {
        self.targets.remove(target);
    }

    /// One gauge sample per target with pending tasks: its depth and how
    /// long its oldest ready task has been due at `now_ms`. Stale slots at
    /// the heads of lines are dropped on the way, so each head read is of a
    /// live task.
    pub(super) fn samples<'a>(
        &'a mut self,
        tasks: &'a TaskTable<TaskEntry>,
        now_ms: u64,
    ) -> impl Iterator<Item = QueueSample<'a>> {
        self.targets
            .iter_mut()
            .filter(|(_, s)| s.depth > 0)
            .map(move |(target, state)| {
                let oldest_due = state
                    .line
                    .heads(|slot| entry::is_ready(tasks, slot))
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
            })
    }

    /// Drops the states of targets with nothing pending, once there are
    /// many: a line is kept while in use, so a busy queue does not give up
    /// and reallocate it each time it runs empty. With nothing pending every
    /// slot left in a line is stale, so the line goes too. The threshold
    /// moves with the number kept, so a server with many live targets does
    /// not rescan them every turn.
    pub(super) fn sweep(&mut self) {
        if self.targets.len() > self.sweep_at {
            self.targets.retain(|_, s| s.depth > 0 || s.dirty);
            self.sweep_at = (2 * self.targets.len()).max(TARGET_SWEEP_THRESHOLD);
        }
    }

    /// Targets with a state kept.
    #[cfg(test)]
    pub(super) fn target_count(&self) -> usize {
        self.targets.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;

    fn queue(name: &str) -> Target {
        Target::Queue(QueueName::parse(name).unwrap())
    }

    /// Adds a task to `tasks` and to `target`'s line, as the actor does.
    fn push(backlog: &mut Backlog, tasks: &mut TaskTable<TaskEntry>, target: &Target) -> TaskId {
        let id = TaskId::generate();
        let mut entry = TaskEntry::new(
            id,
            target.clone(),
            String::new(),
            Bytes::new(),
            0,
            Duration::from_secs(1),
            None,
        );
        let generation = entry.enter_line(Some(0));
        tasks.insert(id, entry);
        backlog.push_ready(target, 0, (id, generation), false);
        id
    }

    /// A target that gains tasks is listed once until it is offered, in the
    /// order targets gained them; offering it lets it be listed again.
    #[test]
    fn targets_are_listed_once_in_order() {
        let (mut backlog, mut tasks) = (Backlog::default(), TaskTable::default());
        let (a, b) = (queue("a"), queue("b"));
        push(&mut backlog, &mut tasks, &a);
        push(&mut backlog, &mut tasks, &b);
        push(&mut backlog, &mut tasks, &a);
        assert_eq!(backlog.pop_dirty(), Some(a.clone()));
        backlog.mark_dirty(&a);
        assert_eq!(backlog.pop_dirty(), Some(b));
        assert_eq!(backlog.pop_dirty(), Some(a));
        assert_eq!(backlog.pop_dirty(), None);
        backlog.mark_dirty(&queue("never-used"));
        assert_eq!(
            backlog.pop_dirty(),
            None,
            "a target without a line is not listed"
        );
    }

    /// Taking skips tasks that left their line; counts follow every move.
    #[test]
    fn take_ready_skips_stale_slots() {
        let (mut backlog, mut tasks) = (Backlog::default(), TaskTable::default());
        let a = queue("a");
        let ids: Vec<TaskId> = (0..3).map(|_| push(&mut backlog, &mut tasks, &a)).collect();
        let in_line = tasks.get_mut(&ids[0]).unwrap().leave_pending();
        backlog.remove(&a, in_line);
        backlog.push_delayed(&a);
        assert_eq!((backlog.counts(&a), backlog.pending()), ((3, 2), 3));
        let mut taken = Vec::new();
        backlog.take_ready(&a, 5, &tasks, &mut taken);
        assert_eq!(taken, ids[1..]);
        assert_eq!(backlog.ready(&a), 0, "the line is empty");
        assert_eq!(backlog.queues().count(), 1);
    }

    /// States of targets with nothing pending go once there are many.
    #[test]
    fn idle_targets_are_swept() {
        let mut backlog = Backlog::default();
        let targets: Vec<Target> = (0..=TARGET_SWEEP_THRESHOLD)
            .map(|i| queue(&format!("q{i}")))
            .collect();
        for target in &targets {
            backlog.push_delayed(target);
            backlog.remove(target, false);
        }
        backlog.push_delayed(&targets[0]);
        backlog.sweep();
        assert_eq!(backlog.target_count(), 1);
        assert_eq!(backlog.depth(&targets[0]), 1);
    }
}
