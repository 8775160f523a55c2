//! The table of tasks: an index from task id to a slot in one vector.
//!
//! A hash map of whole task entries is the largest part of a deep queue's
//! memory (hashbrown keeps up to twice the buckets it needs, each the size of
//! a key and an entry). Here the hash map holds only a 4-byte slot number per
//! task, and the entries sit densely in a vector whose freed slots are
//! reused.

use rustc_hash::FxHashMap;

use crate::domain::TaskId;

#[derive(Debug)]
pub(super) struct TaskTable<V> {
    index: FxHashMap<TaskId, u32>,
    slots: Vec<Option<V>>,
    free: Vec<u32>,
}

impl<V> Default for TaskTable<V> {
    fn default() -> Self {
        Self {
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<V> TaskTable<V> {
    pub(super) fn get(&self, id: &TaskId) -> Option<&V> {
        let slot = *self.index.get(id)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: &TaskId) -> Option<&mut V> {
        let slot = *self.index.get(id)?;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Adds a task; an id already present has its entry replaced.
    pub(super) fn insert(&mut self, id: TaskId, value: V) {
        if let Some(existing) = self.get_mut(&id) {
            *existing = value;
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(place) = self.slots.get_mut(slot as usize) {
                    *place = Some(value);
                }
                slot
            }
            None => {
                self.slots.push(Some(value));
                // More than u32::MAX live tasks would exhaust memory long before.
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
    }

    pub(super) fn remove(&mut self, id: &TaskId) -> Option<V> {
        let slot = self.index.remove(id)?;
        let value = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        value
    }

    /// Every task with its entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (TaskId, &V)> {
        self.index
            .iter()
            .filter_map(|(id, slot)| Some((*id, self.slots.get(*slot as usize)?.as_ref()?)))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Entries are found by id, removed slots are reused, replacing works.
    #[test]
    fn insert_get_remove_reuse() {
        let mut table = TaskTable::default();
        let (a, b, c) = (TaskId::generate(), TaskId::generate(), TaskId::generate());
        table.insert(a, "a");
        table.insert(b, "b");
        assert_eq!(table.get(&a), Some(&"a"));
        assert_eq!(table.remove(&a), Some("a"));
        assert_eq!(table.get(&a), None);
        table.insert(c, "c");
        assert_eq!(table.slots.len(), 2, "the freed slot was reused");
        table.insert(b, "b2");
        assert_eq!(table.get(&b), Some(&"b2"));
        *table.get_mut(&c).unwrap() = "c2";
        assert_eq!((table.get(&c), table.len()), (Some(&"c2"), 2));
        assert_eq!(table.remove(&a), None);
    }
}
