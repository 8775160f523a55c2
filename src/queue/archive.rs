//! What the queue remembers about tasks beside their live state, for the
//! reads and lookups that come after: finished tasks kept for Get and Wait
//! (the newest `max_finished_tasks`, within `max_finished_bytes`), callers
//! waiting for a task to end, dead letters in the order they died (within
//! their retention: count, bytes, age), idempotency keys, and broadcast
//! records with the copies made of each.
//!
//! It holds task ids only; the entries stay in the actor's task table, and
//! the actor forgets an entry when this says it is no longer kept. Nothing
//! here is touched on the path that hands tasks out.

use std::collections::{BTreeMap, HashMap, VecDeque, hash_map::Entry};

// Server-made random ids only: keys a client chooses keep std's SipHash.
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::policy::Retention;
use crate::{
    domain::{BroadcastId, TaskId, TaskInfo},
    error::Error,
};

/// Why a dead letter was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dropped {
    /// There were more than the count kept.
    Count,
    /// They took more than the bytes kept.
    Bytes,
    /// It was older than the age kept.
    Age,
}

/// One dead letter's place in the retention.
#[derive(Clone, Copy, Debug)]
struct DeadLetter {
    id: TaskId,
    /// When it died (wall ms).
    at_ms: u64,
    bytes: u64,
}

/// Broadcast records kept for `GetBroadcast`; the oldest go first.
const MAX_BROADCASTS: usize = 10_000;

/// Where a watcher's answer goes.
pub(super) type Watcher = oneshot::Sender<Result<TaskInfo, Error>>;

/// The queue's records; see the module docs.
#[derive(Debug)]
pub(super) struct Archive {
    max_finished: usize,
    retention: Retention,
    /// Done and cancelled tasks with their sizes, oldest first, forgotten
    /// past the limits.
    finished: VecDeque<(TaskId, u64)>,
    finished_bytes: u64,
    /// Dead letters in the order they died.
    dead: BTreeMap<u64, DeadLetter>,
    dead_bytes: u64,
    next_dead_seq: u64,
    /// Idempotency keys within their window: the task each made, and that
    /// task's fingerprint, to tell a retry from a different task.
    keys: HashMap<String, (TaskId, u64)>,
    /// Callers waiting for a task to reach an end.
    watchers: FxHashMap<TaskId, Vec<Watcher>>,
    /// Broadcasts and their copies so far.
    broadcasts: FxHashMap<BroadcastId, Vec<TaskId>>,
    /// Broadcasts, oldest first, forgotten past [`MAX_BROADCASTS`].
    broadcast_order: VecDeque<BroadcastId>,
}

impl Archive {
    /// An archive keeping the newest `max_finished` finished tasks, and
    /// finished tasks and dead letters within `retention`.
    pub(super) fn new(max_finished: usize, retention: Retention) -> Self {
        Self {
            max_finished,
            retention,
            finished: VecDeque::new(),
            finished_bytes: 0,
            dead: BTreeMap::new(),
            dead_bytes: 0,
            next_dead_seq: 1,
            keys: HashMap::new(),
            watchers: FxHashMap::default(),
            broadcasts: FxHashMap::default(),
            broadcast_order: VecDeque::new(),
        }
    }

    // === Finished tasks ===

    /// Keeps a task that is done or cancelled, of `bytes`; returns the
    /// oldest ones kept before that fall past the limits and are to be
    /// forgotten (the newest is always kept).
    pub(super) fn add_finished(&mut self, id: TaskId, bytes: u64) -> Vec<TaskId> {
        self.finished.push_back((id, bytes));
        self.finished_bytes += bytes;
        let mut forgotten = Vec::new();
        while self.finished.len() > 1
            && (self.finished.len() > self.max_finished
                || self.finished_bytes > self.retention.finished_bytes)
        {
            let Some((old, old_bytes)) = self.finished.pop_front() else {
                break;
            };
            self.finished_bytes = self.finished_bytes.saturating_sub(old_bytes);
            forgotten.push(old);
        }
        forgotten
    }

    // === Watchers ===

    /// Keeps `watcher` until the task ends. Watchers that gave up (dropped
    /// their receiver) are dropped on the way.
    pub(super) fn watch(&mut self, id: TaskId, watcher: Watcher) {
        match self.watchers.entry(id) {
            Entry::Occupied(mut watchers) => {
                watchers.get_mut().retain(|w| !w.is_closed());
                watchers.get_mut().push(watcher);
            }
            Entry::Vacant(slot) => {
                slot.insert(vec![watcher]);
            }
        }
    }

    /// The task has ended: its watchers, to be told once that is recorded.
    pub(super) fn take_watchers(&mut self, id: TaskId) -> Option<Vec<Watcher>> {
        self.watchers.remove(&id)
    }

    // === Dead letters ===

    /// Lists a dead letter of `bytes` that died at `at_ms` (wall ms),
    /// after every earlier one; returns its place.
    pub(super) fn add_dead(&mut self, id: TaskId, at_ms: u64, bytes: u64) -> u64 {
        let seq = self.next_dead_seq;
        self.next_dead_seq += 1;
        self.dead.insert(seq, DeadLetter { id, at_ms, bytes });
        self.dead_bytes += bytes;
        seq
    }

    /// Unlists the dead letter at `seq` (requeued, cancelled or purged).
    pub(super) fn remove_dead(&mut self, seq: u64) {
        if let Some(dead) = self.dead.remove(&seq) {
            self.dead_bytes = self.dead_bytes.saturating_sub(dead.bytes);
        }
    }

    /// Dead letters, oldest first.
    pub(super) fn dead(&self) -> impl Iterator<Item = TaskId> {
        self.dead.values().map(|dead| dead.id)
    }

    /// When the dead letter at `seq` died (wall ms).
    pub(super) fn dead_at(&self, seq: u64) -> Option<u64> {
        self.dead.get(&seq).map(|dead| dead.at_ms)
    }

    /// Finished tasks, oldest first.
    pub(super) fn finished(&self) -> impl Iterator<Item = TaskId> {
        self.finished.iter().map(|(id, _)| *id)
    }

    /// Broadcasts whose records are kept, oldest first.
    pub(super) fn broadcasts(&self) -> impl DoubleEndedIterator<Item = BroadcastId> {
        self.broadcast_order.iter().copied()
    }

    /// Dead letters with their places, oldest first.
    pub(super) fn dead_with_seq(&self) -> impl Iterator<Item = (u64, TaskId)> {
        self.dead.iter().map(|(seq, dead)| (*seq, dead.id))
    }

    /// Unlists the oldest dead letters past the retention at `now_ms`: the
    /// ids to forget, and why each went.
    pub(super) fn trim_dead(&mut self, now_ms: u64) -> Vec<(TaskId, Dropped)> {
        let mut dropped = Vec::new();
        let max_age_ms = u64::try_from(self.retention.dead_age.as_millis()).unwrap_or(u64::MAX);
        while let Some((&seq, oldest)) = self.dead.first_key_value() {
            let why = if self.dead.len() > self.retention.dead_count {
                Dropped::Count
            } else if self.dead_bytes > self.retention.dead_bytes {
                Dropped::Bytes
            } else if now_ms.saturating_sub(oldest.at_ms) > max_age_ms {
                Dropped::Age
            } else {
                break;
            };
            dropped.push((oldest.id, why));
            self.remove_dead(seq);
        }
        dropped
    }

    // === Idempotency keys ===

    /// The task a key made and its fingerprint, while the key is remembered.
    pub(super) fn task_for_key(&self, key: &str) -> Option<(TaskId, u64)> {
        self.keys.get(key).copied()
    }

    /// Remembers that `key` made `id`, whose fingerprint is `fingerprint`
    /// (until [`Self::forget_key`]).
    pub(super) fn remember_key(&mut self, key: String, id: TaskId, fingerprint: u64) {
        self.keys.insert(key, (id, fingerprint));
    }

    /// The key's window is over: it may make a new task.
    pub(super) fn forget_key(&mut self, key: &str) {
        self.keys.remove(key);
    }

    // === Broadcasts ===

    /// Starts a broadcast record, forgetting the oldest past the limit.
    pub(super) fn open_broadcast(&mut self) -> BroadcastId {
        let id = BroadcastId::generate();
        self.keep_broadcast(id);
        id
    }

    /// Keeps the record of broadcast `id` (a new one, or one recovered).
    pub(super) fn keep_broadcast(&mut self, id: BroadcastId) {
        self.broadcasts.insert(id, Vec::new());
        self.broadcast_order.push_back(id);
        while self.broadcast_order.len() > MAX_BROADCASTS {
            if let Some(old) = self.broadcast_order.pop_front() {
                self.broadcasts.remove(&old);
            }
        }
    }

    /// True while the broadcast's record is kept.
    pub(super) fn has_broadcast(&self, broadcast: BroadcastId) -> bool {
        self.broadcasts.contains_key(&broadcast)
    }

    /// Records a copy of a broadcast.
    pub(super) fn add_copy(&mut self, broadcast: BroadcastId, id: TaskId) {
        if let Some(copies) = self.broadcasts.get_mut(&broadcast) {
            copies.push(id);
        }
    }

    /// The copies made of a broadcast, in order; `None` if it is unknown.
    pub(super) fn copies(&self, broadcast: BroadcastId) -> Option<&[TaskId]> {
        self.broadcasts.get(&broadcast).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ids(n: usize) -> Vec<TaskId> {
        (0..n).map(|_| TaskId::generate()).collect()
    }

    /// Only the newest finished tasks are kept; each one added past the
    /// limit lets the oldest go.
    #[test]
    fn finished_tasks_are_bounded() {
        let mut archive = Archive::new(2, Retention::unbounded());
        let tasks = ids(4);
        assert_eq!(archive.add_finished(tasks[0], 1), vec![]);
        assert_eq!(archive.add_finished(tasks[1], 1), vec![]);
        assert_eq!(archive.add_finished(tasks[2], 1), vec![tasks[0]]);
        assert_eq!(archive.add_finished(tasks[3], 1), vec![tasks[1]]);
    }

    /// Dead letters list oldest first; an unlisted one is gone from the list.
    #[test]
    fn dead_letters_keep_their_order() {
        let mut archive = Archive::new(2, Retention::unbounded());
        let tasks = ids(3);
        let seqs: Vec<u64> = tasks.iter().map(|id| archive.add_dead(*id, 0, 1)).collect();
        archive.remove_dead(seqs[1]);
        assert_eq!(archive.dead().collect::<Vec<_>>(), vec![tasks[0], tasks[2]]);
        let again = archive.add_dead(tasks[1], 0, 1);
        assert!(again > seqs[2], "a requeued task that dies again goes last");
        assert_eq!(archive.dead().last(), Some(tasks[1]));
    }

    /// Every watcher of a task hears its end once; the info is not read
    /// when nobody waits.
    #[test]
    fn watchers_hear_the_end_once() {
        let mut archive = Archive::new(2, Retention::unbounded());
        let id = TaskId::generate();
        let (first, mut first_rx) = oneshot::channel();
        let (gone, gone_rx) = oneshot::channel();
        let (second, mut second_rx) = oneshot::channel();
        archive.watch(id, first);
        archive.watch(id, gone);
        drop(gone_rx);
        archive.watch(id, second);
        assert_eq!(archive.watchers.get(&id).map(Vec::len), Some(2));
        for watcher in archive.take_watchers(id).unwrap() {
            let _ = watcher.send(Err(Error::NotFound {
                what: "task",
                id: "x".into(),
            }));
        }
        assert!(first_rx.try_recv().unwrap().is_err());
        assert!(second_rx.try_recv().unwrap().is_err());
        assert!(archive.take_watchers(id).is_none(), "no one waits any more");
    }

    /// Finished tasks are also kept within their bytes (the newest always).
    #[test]
    fn finished_tasks_are_bounded_by_bytes() {
        let retention = Retention {
            finished_bytes: 100,
            ..Retention::unbounded()
        };
        let mut archive = Archive::new(10, retention);
        let tasks: Vec<TaskId> = (0..3).map(|_| TaskId::generate()).collect();
        assert_eq!(archive.add_finished(tasks[0], 60), vec![]);
        assert_eq!(archive.add_finished(tasks[1], 60), vec![tasks[0]]);
        assert_eq!(archive.add_finished(tasks[2], 500), vec![tasks[1]]);
    }

    /// Dead letters past the count, the bytes or the age go, oldest first,
    /// each with why.
    #[test]
    fn dead_letters_are_trimmed_by_count_bytes_and_age() {
        let retention = Retention {
            dead_count: 3,
            dead_bytes: 100,
            dead_age: std::time::Duration::from_secs(10),
            ..Retention::unbounded()
        };
        let mut archive = Archive::new(10, retention);
        let ids: Vec<TaskId> = (0..5).map(|_| TaskId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            archive.add_dead(*id, 1_000 * i as u64, 10);
        }
        assert_eq!(
            archive.trim_dead(4_000),
            vec![(ids[0], Dropped::Count), (ids[1], Dropped::Count)]
        );
        let big = TaskId::generate();
        archive.add_dead(big, 4_000, 95);
        assert_eq!(
            archive.trim_dead(4_000),
            vec![
                (ids[2], Dropped::Count),
                (ids[3], Dropped::Bytes),
                (ids[4], Dropped::Bytes)
            ]
        );
        assert_eq!(archive.trim_dead(14_000), vec![]);
        assert_eq!(archive.trim_dead(14_001), vec![(big, Dropped::Age)]);
        assert_eq!(archive.dead().count(), 0);
    }

    /// A key finds its task until it is forgotten.
    #[test]
    fn keys_are_remembered_until_forgotten() {
        let mut archive = Archive::new(2, Retention::unbounded());
        let id = TaskId::generate();
        archive.remember_key("k".into(), id, 7);
        assert_eq!(archive.task_for_key("k"), Some((id, 7)));
        archive.forget_key("k");
        assert_eq!(archive.task_for_key("k"), None);
    }

    /// Broadcasts record their copies; the oldest records are forgotten.
    #[test]
    fn broadcasts_record_copies_and_are_bounded() {
        let mut archive = Archive::new(2, Retention::unbounded());
        let first = archive.open_broadcast();
        let copy = TaskId::generate();
        archive.add_copy(first, copy);
        assert_eq!(archive.copies(first), Some(&[copy][..]));
        for _ in 0..MAX_BROADCASTS {
            archive.open_broadcast();
        }
        assert!(!archive.has_broadcast(first));
        assert_eq!(archive.copies(first), None);
        assert_eq!(archive.broadcasts.len(), MAX_BROADCASTS);
    }
}
