//! The queue's two orderings: lines of pending tasks (by priority, then
//! first in first out) and the timer heap.
//!
//! Both are lazy: an entry carries the task's generation when it was added,
//! and the actor skips entries whose task has moved on since (cancelled,
//! expired, delivered by another path). That keeps removal O(1) without
//! searching the lines.

use std::{
    cmp::{Ordering, Reverse},
    collections::{BTreeMap, BinaryHeap, VecDeque},
};

use tokio::time::Instant;

use crate::domain::{ClientId, TaskId};

/// A task's place in a line, valid while the task's generation is `gen`.
pub(super) type Slot = (TaskId, u32);

/// Pending tasks of one queue (or of one worker), highest priority first,
/// oldest first within a priority. Priority 0, which most tasks have, keeps
/// its own deque so a busy line that runs empty and refills allocates
/// nothing.
#[derive(Debug, Default)]
pub(super) struct Line {
    normal: VecDeque<Slot>,
    others: BTreeMap<Reverse<i32>, VecDeque<Slot>>,
}

impl Line {
    /// Adds a task at the back of its priority, or at the front (a task that
    /// was first in line before its delivery failed).
    pub(super) fn push(&mut self, priority: i32, slot: Slot, front: bool) {
        let bucket = if priority == 0 {
            &mut self.normal
        } else {
            self.others.entry(Reverse(priority)).or_default()
        };
        if front {
            bucket.push_front(slot);
        } else {
            bucket.push_back(slot);
        }
    }

    /// The next slot, highest priority first. It may be stale.
    pub(super) fn pop(&mut self) -> Option<Slot> {
        let higher = self
            .others
            .first_key_value()
            .is_some_and(|(Reverse(priority), _)| *priority > 0);
        if !higher && let Some(slot) = self.normal.pop_front() {
            return Some(slot);
        }
        let mut entry = self.others.first_entry()?;
        let slot = entry.get_mut().pop_front();
        if entry.get().is_empty() {
            entry.remove();
        }
        slot
    }

    /// The first live slot of each priority, dropping the stale slots in
    /// front of it. As each priority is first in first out (a slot put back
    /// at the front was first in line before), these are the oldest tasks.
    pub(super) fn heads(
        &mut self,
        mut live: impl FnMut(Slot) -> bool,
    ) -> impl Iterator<Item = Slot> {
        let mut drop_stale = |bucket: &mut VecDeque<Slot>| {
            while let Some(slot) = bucket.front().copied() {
                if live(slot) {
                    return;
                }
                bucket.pop_front();
            }
        };
        drop_stale(&mut self.normal);
        for bucket in self.others.values_mut() {
            drop_stale(bucket);
        }
        self.others.retain(|_, bucket| !bucket.is_empty());
        self.normal
            .front()
            .into_iter()
            .chain(self.others.values().filter_map(VecDeque::front))
            .copied()
    }

    /// True when no slot (stale or not) is left.
    pub(super) fn is_empty(&self) -> bool {
        self.normal.is_empty() && self.others.is_empty()
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Timer {
    /// A delayed task (not-before time or retry backoff) may go now.
    Ready(Slot),
    /// A task's TTL ran out: dead-letter it unless a worker started it.
    Expire(TaskId),
    /// A targeted task has waited its target TTL: dead-letter it if its
    /// worker is offline.
    TargetTtl(TaskId),
    /// An idempotency key's window is over.
    ForgetKey(String),
    /// The resume grace of a worker's tasks recovered from the journal is
    /// over: what it did not take back goes back in line.
    OrphanGrace(ClientId),
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    seq: u64,
    timer: Timer,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Timers, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Timers {
    pub(super) fn add(&mut self, at: Instant, timer: Timer) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            timer,
        }));
    }

    /// When the earliest timer fires.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// The earliest timer due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry.timer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    /// Higher priority first; FIFO within a priority; front pushes go first.
    #[test]
    fn line_orders_by_priority_then_age() {
        let ids: Vec<TaskId> = (0..4).map(|_| TaskId::generate()).collect();
        let mut line = Line::default();
        line.push(0, (ids[0], 1), false);
        line.push(5, (ids[1], 1), false);
        line.push(0, (ids[2], 1), false);
        line.push(0, (ids[3], 1), true);
        let low = TaskId::generate();
        line.push(-2, (low, 1), false);
        let order: Vec<TaskId> = std::iter::from_fn(|| line.pop()).map(|s| s.0).collect();
        assert_eq!(order, vec![ids[1], ids[3], ids[0], ids[2], low]);
        assert!(line.is_empty());
    }

    /// Heads are the first live slot of each priority; stale ones go.
    #[test]
    fn heads_skip_stale_slots() {
        let ids: Vec<TaskId> = (0..4).map(|_| TaskId::generate()).collect();
        let mut line = Line::default();
        line.push(0, (ids[0], 1), false);
        line.push(0, (ids[1], 1), false);
        line.push(3, (ids[2], 1), false);
        line.push(3, (ids[3], 1), false);
        let stale = [ids[0], ids[2], ids[3]];
        let heads: Vec<TaskId> = line
            .heads(|(id, _)| !stale.contains(&id))
            .map(|s| s.0)
            .collect();
        assert_eq!(heads, vec![ids[1]]);
        let order: Vec<TaskId> = std::iter::from_fn(|| line.pop()).map(|s| s.0).collect();
        assert_eq!(order, vec![ids[1]]);
    }

    /// Timers come out earliest first, and only once due.
    #[test]
    fn timers_fire_in_order() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.add(now + Duration::from_secs(2), Timer::ForgetKey("b".into()));
        timers.add(now + Duration::from_secs(1), Timer::ForgetKey("a".into()));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.next(), Some(now + Duration::from_secs(1)));
        let later = now + Duration::from_secs(3);
        assert_eq!(timers.pop_due(later), Some(Timer::ForgetKey("a".into())));
        assert_eq!(timers.pop_due(later), Some(Timer::ForgetKey("b".into())));
        assert_eq!(timers.pop_due(later), None);
    }
}
