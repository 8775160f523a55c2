//! Recovery: reads every segment of a journal directory in order and
//! replays its records into [`Recovered`], the state the queue rebuilds
//! itself from. Replay is plain: a task's full record anchors it, later
//! records change it, the last word wins, and records for a task that is
//! not (or no longer) anchored are skipped.
//!
//! A torn tail on the newest segment (a crash in the middle of a write) is
//! cut off, so new segments follow whole frames. Damage anywhere else stops
//! recovery with [`JournalError::Damaged`], naming the file and offset.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
};

use prost::Message as _;
use rustc_hash::FxHashMap;
use tracing::warn;

use super::{
    JournalError,
    record::{Event, Record, State, TaskRecord},
    segment::{self, Damage},
};

/// A task as the journal last described it, and the segment holding its
/// full record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecoveredTask {
    /// Its state, with every later record applied.
    pub(crate) record: TaskRecord,
    /// The segment of its full record.
    pub(crate) anchor: u64,
    /// The order it finished in, for the archive (0 while unfinished).
    pub(crate) finished_order: u64,
}

/// Everything the journal holds.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Live tasks, in the order their full records were written.
    pub(crate) tasks: Vec<RecoveredTask>,
    /// Worker ids tasks may target.
    pub(crate) clients: Vec<String>,
    /// Broadcasts opened, oldest first.
    pub(crate) broadcasts: Vec<Vec<u8>>,
    /// Segments found, oldest first, with their sizes.
    pub(crate) segments: Vec<(u64, u64)>,
    /// Records replayed.
    pub(crate) records: u64,
}

/// The segment files of `dir`, oldest first.
pub(crate) fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let read = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment::seq_of) {
            files.push((seq, entry.path()));
        }
    }
    files.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(files)
}

/// Replays every segment of `dir`; cuts a torn tail off the newest.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    let files = segment_files(dir)?;
    let mut replay = Replay::default();
    let newest = files.last().map(|(seq, _)| *seq);
    for (seq, path) in &files {
        let bytes = std::fs::read(path).map_err(|e| JournalError::io(path, e))?;
        let (records, end) = segment::read_frames(&bytes);
        for record in records {
            let record = Record::decode(record).map_err(|e| JournalError::Damaged {
                path: path.clone(),
                offset: 0,
                what: format!("a record that checks out does not decode: {e}"),
            })?;
            replay.apply(record, *seq);
        }
        let size = match end {
            Ok(end) => end,
            Err((offset, Damage::Torn)) if Some(*seq) == newest => {
                warn!(path = %path.display(), offset, "journal: cutting off a torn tail");
                cut(path, offset)?;
                offset
            }
            Err((offset, damage)) => {
                let what = match damage {
                    Damage::Torn => "the file ends inside a record".to_owned(),
                    Damage::Header(why) | Damage::Corrupt(why) => why,
                };
                return Err(JournalError::Damaged {
                    path: path.clone(),
                    offset: offset as u64,
                    what,
                });
            }
        };
        replay.recovered.segments.push((*seq, size as u64));
    }
    Ok(replay.finish())
}

fn cut(path: &Path, offset: usize) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| JournalError::io(path, e))?;
    file.set_len(offset as u64)
        .and_then(|()| file.sync_all())
        .map_err(|e| JournalError::io(path, e))
}

/// A recorded id as a map key; `None` for one that is not 16 bytes.
fn key(id: &[u8]) -> Option<[u8; 16]> {
    id.try_into().ok()
}

#[derive(Default)]
struct Replay {
    recovered: Recovered,
    /// Task id → its place in `slots`. Ids are random 16 bytes, so the
    /// fast hash is safe, and a million of them replay noticeably faster.
    index: FxHashMap<[u8; 16], usize>,
    slots: Vec<Option<RecoveredTask>>,
    clients: Vec<String>,
    broadcasts_seen: std::collections::HashSet<Vec<u8>>,
    finished: u64,
}

impl Replay {
    fn task(&mut self, id: &[u8]) -> Option<&mut RecoveredTask> {
        let slot = *self.index.get(&key(id)?)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    fn apply(&mut self, record: Record, seq: u64) {
        self.recovered.records += 1;
        let Some(event) = record.event else {
            // A kind of record a newer build wrote: nothing this one knows.
            return;
        };
        match event {
            Event::Task(task) => {
                let finished_order = match State::try_from(task.state) {
                    Ok(State::Done | State::DeadLettered | State::Cancelled) => {
                        self.finished += 1;
                        self.finished
                    }
                    _ => 0,
                };
                let entry = RecoveredTask {
                    anchor: seq,
                    finished_order,
                    record: task,
                };
                // A task carried forward is anchored anew, in the order of
                // its new record.
                let Some(id) = key(&entry.record.id) else {
                    return;
                };
                if let Some(old) = self.index.insert(id, self.slots.len()) {
                    self.slots[old] = None;
                }
                self.slots.push(Some(entry));
            }
            Event::Delivered(delivered) => {
                if let Some(task) = self.task(&delivered.id) {
                    let record = &mut task.record;
                    record.state = State::Delivered as i32;
                    record.attempts = delivered.attempt;
                    record.worker = delivered.worker;
                    record.session = delivered.session;
                    record.not_before_unix_ms = 0;
                }
            }
            Event::Pending(pending) => {
                if let Some(task) = self.task(&pending.id) {
                    let record = &mut task.record;
                    record.state = State::Pending as i32;
                    record.attempts = pending.attempts;
                    record.due_unix_ms = pending.due_unix_ms;
                    record.not_before_unix_ms = pending.not_before_unix_ms;
                    record.session.clear();
                    task.finished_order = 0;
                }
            }
            Event::Finished(finished) => {
                self.finished += 1;
                let order = self.finished;
                if let Some(task) = self.task(&finished.id) {
                    task.record.state = finished.state;
                    task.record.result = finished.result;
                    task.record.session.clear();
                    task.finished_order = order;
                }
            }
            Event::Forgotten(forgotten) => {
                if let Some(slot) = key(&forgotten.id).and_then(|id| self.index.remove(&id)) {
                    self.slots[slot] = None;
                }
            }
            Event::ClientKnown(client) => {
                if !self.clients.contains(&client.id) {
                    self.clients.push(client.id);
                }
            }
            Event::ClientForgotten(client) => self.clients.retain(|c| *c != client.id),
            // Compaction writes a kept broadcast again: keep its first place.
            Event::BroadcastOpened(broadcast) => {
                if self.broadcasts_seen.insert(broadcast.id.clone()) {
                    self.recovered.broadcasts.push(broadcast.id);
                }
            }
        }
    }

    fn finish(mut self) -> Recovered {
        self.recovered.tasks = self.slots.into_iter().flatten().collect();
        self.recovered.clients = self.clients;
        self.recovered
    }
}

#[cfg(test)]
mod tests;
