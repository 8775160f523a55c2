//! What the queue remembers about tasks beside their live state, for the
//! reads and lookups that come after: finished tasks kept for Get and Wait
//! (the newest `max_finished_tasks`), callers waiting for a task to end,
//! dead letters in the order they died, idempotency keys, and broadcast
//! records with the copies made of each.
//!
//! It holds task ids only; the entries stay in the actor's task table, and
//! the actor forgets an entry when this says it is no longer kept. Nothing
//! here is touched on the path that hands tasks out.

use std::collections::{BTreeMap, HashMap, VecDeque, hash_map::Entry};

// Server-made random ids only: keys a client chooses keep std's SipHash.
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use crate::{
    domain::{BroadcastId, TaskId, TaskInfo},
    error::Error,
};

/// Broadcast records kept for `GetBroadcast`; the oldest go first.
const MAX_BROADCASTS: usize = 10_000;

/// Where a watcher's answer goes.
pub(super) type Watcher = oneshot::Sender<Result<TaskInfo, Error>>;

/// The queue's records; see the module docs.
#[derive(Debug)]
pub(super) struct Archive {
    max_finished: usize,
    /// Done and cancelled tasks, oldest first, forgotten past the limit.
    finished: VecDeque<TaskId>,
    /// Dead letters in the order they died.
    dead: BTreeMap<u64, TaskId>,
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
    /// An archive keeping the newest `max_finished` finished tasks.
    pub(super) fn new(max_finished: usize) -> Self {
        Self {
            max_finished,
            finished: VecDeque::new(),
            dead: BTreeMap::new(),
            next_dead_seq: 1,
            keys: HashMap::new(),
            watchers: FxHashMap::default(),
            broadcasts: FxHashMap::default(),
            broadcast_order: VecDeque::new(),
        }
    }

    // === Finished tasks ===

    /// Keeps a task that is done or cancelled; returns the oldest one kept
    /// before, when it falls past the limit and is to be forgotten.
    pub(super) fn add_finished(&mut self, id: TaskId) -> Option<TaskId> {
        self.finished.push_back(id);
        // One in, at most one out: the length never passes the limit + 1.
        if self.finished.len() > self.max_finished {
            return self.finished.pop_front();
        }
        None
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

    /// Lists a dead letter, after every earlier one; returns its place.
    pub(super) fn add_dead(&mut self, id: TaskId) -> u64 {
        let seq = self.next_dead_seq;
        self.next_dead_seq += 1;
        self.dead.insert(seq, id);
        seq
    }

    /// Unlists the dead letter at `seq` (requeued or cancelled).
    pub(super) fn remove_dead(&mut self, seq: u64) {
        self.dead.remove(&seq);
    }

    /// Dead letters, oldest first.
    pub(super) fn dead(&self) -> impl Iterator<Item = TaskId> {
        self.dead.values().copied()
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
        let mut archive = Archive::new(2);
        let tasks = ids(4);
        assert_eq!(archive.add_finished(tasks[0]), None);
        assert_eq!(archive.add_finished(tasks[1]), None);
        assert_eq!(archive.add_finished(tasks[2]), Some(tasks[0]));
        assert_eq!(archive.add_finished(tasks[3]), Some(tasks[1]));
    }

    /// Dead letters list oldest first; an unlisted one is gone from the list.
    #[test]
    fn dead_letters_keep_their_order() {
        let mut archive = Archive::new(2);
        let tasks = ids(3);
        let seqs: Vec<u64> = tasks.iter().map(|id| archive.add_dead(*id)).collect();
        archive.remove_dead(seqs[1]);
        assert_eq!(archive.dead().collect::<Vec<_>>(), vec![tasks[0], tasks[2]]);
        let again = archive.add_dead(tasks[1]);
        assert!(again > seqs[2], "a requeued task that dies again goes last");
        assert_eq!(archive.dead().last(), Some(tasks[1]));
    }

    /// Every watcher of a task hears its end once; the info is not read
    /// when nobody waits.
    #[test]
    fn watchers_hear_the_end_once() {
        let mut archive = Archive::new(2);
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

    /// A key finds its task until it is forgotten.
    #[test]
    fn keys_are_remembered_until_forgotten() {
        let mut archive = Archive::new(2);
        let id = TaskId::generate();
        archive.remember_key("k".into(), id, 7);
        assert_eq!(archive.task_for_key("k"), Some((id, 7)));
        archive.forget_key("k");
        assert_eq!(archive.task_for_key("k"), None);
    }

    /// Broadcasts record their copies; the oldest records are forgotten.
    #[test]
    fn broadcasts_record_copies_and_are_bounded() {
        let mut archive = Archive::new(2);
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
