//! What the queue tells its journal: one record per decision, written by
//! the handlers at the point they change a task (submitted, delivered, back
//! in line, finished, forgotten), and the carrying forward of tasks that
//! compaction asks for. The records are built from the task entries here,
//! so the handlers only say which task changed.
//!
//! While the queue restores itself from the journal nothing is recorded:
//! the state being rebuilt is the journal's own.

use tracing::debug;

use super::Queue;
use crate::queue::entry::TaskEntry;
use crate::{
    domain::{ClientId, SessionId, Target, TaskId, TaskResult, TaskState},
    journal::record::{self, Event, State},
};

/// The journal's word for a task's state.
fn state(state: TaskState) -> State {
    match state {
        TaskState::Pending => State::Pending,
        TaskState::Delivered => State::Delivered,
        TaskState::Done => State::Done,
        TaskState::DeadLettered => State::DeadLettered,
        TaskState::Cancelled => State::Cancelled,
    }
}

fn id_bytes(id: TaskId) -> Vec<u8> {
    id.as_bytes().to_vec()
}

impl Queue {
    /// Wall-clock ms of a stamp of the queue's clock.
    fn wall_ms(&self, clock_ms: u64) -> u64 {
        self.epoch_unix_ms.saturating_add(clock_ms)
    }

    /// The full record of a task, as it stands.
    fn full_record(
        &self,
        id: TaskId,
        entry: &TaskEntry,
        session: Option<SessionId>,
    ) -> record::TaskRecord {
        let (queue, target_client) = match &entry.target {
            Target::Queue(queue) => (queue.as_str().to_owned(), String::new()),
            Target::Client(client) => (String::new(), client.as_str().to_owned()),
        };
        let (text, payload, lease_ms) = entry.content();
        let (key, ttl_deadline_unix_ms) = entry.journal_extras();
        let (idempotency_key, key_expires_unix_ms, fingerprint) = key
            .map(|(key, expires, fingerprint)| (key.clone(), *expires, *fingerprint))
            .unwrap_or_default();
        let info = entry.info(id);
        record::TaskRecord {
            id: id_bytes(id),
            queue,
            target_client,
            text: text.unwrap_or_default().to_owned(),
            payload: payload.clone(),
            priority: entry.priority,
            lease_ms,
            due_unix_ms: self.wall_ms(entry.due_ms()),
            not_before_unix_ms: info.not_before_unix_ms,
            ttl_deadline_unix_ms,
            idempotency_key,
            key_expires_unix_ms,
            fingerprint,
            broadcast: entry
                .broadcast_id()
                .map(|b| b.as_bytes().to_vec())
                .unwrap_or_default(),
            state: state(entry.state) as i32,
            attempts: entry.attempts,
            worker: entry
                .worker
                .as_ref()
                .map(|w| w.as_str().to_owned())
                .unwrap_or_default(),
            session: session.map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
            result: entry.result().map(|result| record::Outcome {
                ret: result.ret.clone(),
                output: result.output.clone(),
                error: result.error.clone(),
                dead_letter_reason: info
                    .dead_letter_reason
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default(),
                dead_unix_ms: entry
                    .dead_letter()
                    .and_then(|(_, seq)| self.archive.dead_at(seq))
                    .unwrap_or(0),
            }),
        }
    }

    /// A task was accepted, or is carried forward: its full record anchors
    /// it in the newest segment.
    pub(super) fn record_task(&mut self, id: TaskId) {
        if self.restoring || !self.journal.is_durable() {
            return;
        }
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let record = self.full_record(id, entry, None);
        let old = entry.anchor;
        let anchor = self.journal.record(Event::Task(record));
        if old != 0 {
            self.journal.unanchor(u64::from(old));
        }
        if let Some(entry) = self.tasks.get_mut(&id) {
            // Segment numbers stay far below 2^32 (one per 64 MiB written).
            entry.anchor = u32::try_from(anchor).unwrap_or(u32::MAX);
        }
    }

    /// A task was pushed to `worker`'s session as its next attempt.
    pub(super) fn record_delivered(
        &mut self,
        id: TaskId,
        attempt: u32,
        worker: &ClientId,
        session: SessionId,
    ) {
        if self.restoring || !self.journal.is_durable() {
            return;
        }
        self.journal.record_encoded(|out| {
            record::encode_delivered(
                id.as_bytes(),
                attempt,
                worker.as_str(),
                session.as_bytes(),
                out,
            );
        });
    }

    /// A task is in line again (maybe delayed).
    pub(super) fn record_pending(&mut self, id: TaskId) {
        if self.restoring || !self.journal.is_durable() {
            return;
        }
        // A task not yet anchored (being submitted) has no record to amend.
        let Some(entry) = self.tasks.get(&id).filter(|e| e.anchor != 0) else {
            return;
        };
        let (attempts, due) = (entry.attempts, self.wall_ms(entry.due_ms()));
        let not_before = entry.not_before_unix_ms();
        self.journal.record_encoded(|out| {
            record::encode_pending(id.as_bytes(), attempts, due, not_before, out);
        });
    }

    /// A task finished: done, dead-lettered or cancelled.
    pub(super) fn record_finished(&mut self, id: TaskId) {
        if self.restoring || !self.journal.is_durable() {
            return;
        }
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        if entry.state == TaskState::Done && entry.result().is_none_or(TaskResult::is_empty) {
            // Most tasks end so: done, with nothing to keep.
            self.journal.record_encoded(|out| {
                record::encode_finished_plain(id.as_bytes(), State::Done, out);
            });
            return;
        }
        let info = entry.info(id);
        let dead = info.dead_letter_reason.is_some();
        let result = (!info.result.is_empty() || dead).then(|| record::Outcome {
            ret: info.result.ret,
            output: info.result.output,
            error: info.result.error,
            dead_letter_reason: info
                .dead_letter_reason
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            // The retention's clock for it; restored with it.
            dead_unix_ms: if dead { crate::clock::unix_ms_now() } else { 0 },
        });
        self.journal.record(Event::Finished(record::Finished {
            id: id_bytes(id),
            state: state(info.state) as i32,
            result,
        }));
    }

    /// A task is forgotten; the entry is gone already, `anchor` was its.
    pub(super) fn record_forgotten(&mut self, id: TaskId, anchor: u32) {
        if self.restoring || !self.journal.is_durable() {
            return;
        }
        self.journal
            .record_encoded(|out| record::encode_forgotten(id.as_bytes(), out));
        self.journal.unanchor(u64::from(anchor));
    }

    /// A worker id tasks may now target, or no longer.
    pub(super) fn record_client(&mut self, client: &ClientId, known: bool) {
        if self.restoring || !self.journal.is_durable() {
            return;
        }
        let client = record::Client {
            id: client.as_str().to_owned(),
        };
        self.journal.record(if known {
            Event::ClientKnown(client)
        } else {
            Event::ClientForgotten(client)
        });
    }

    /// Ends the turn's journal batch; carries forward the tasks of the
    /// oldest segment when compaction asks for it.
    pub(super) fn flush_journal(&mut self) {
        if let Some(oldest) = self.journal.flush() {
            // Finished tasks and dead letters first, in the archive's order,
            // so a replay lists them (and drops the oldest) as now; then the
            // rest, whose order in line comes from their due times.
            let is_anchored = |entry: &TaskEntry| u64::from(entry.anchor) == oldest;
            let mut anchored: Vec<TaskId> = self
                .archive
                .finished()
                .chain(self.archive.dead())
                .filter(|id| self.tasks.get(id).is_some_and(is_anchored))
                .collect();
            let archived: std::collections::HashSet<TaskId> = anchored.iter().copied().collect();
            anchored.extend(
                self.tasks
                    .iter()
                    .filter(|(id, entry)| is_anchored(entry) && !archived.contains(id))
                    .map(|(id, _)| id),
            );
            debug!(
                segment = oldest,
                tasks = anchored.len(),
                "journal: carrying tasks forward"
            );
            self.metrics.compactions.increment(1);
            for id in anchored {
                let session = None;
                if let Some(entry) = self.tasks.get(&id) {
                    let record = self.full_record(id, entry, session);
                    let anchor = self.journal.record(Event::Task(record));
                    self.journal.unanchor(oldest);
                    if let Some(entry) = self.tasks.get_mut(&id) {
                        entry.anchor = u32::try_from(anchor).unwrap_or(u32::MAX);
                    }
                }
            }
            // Worker ids tasks may target are recorded once, when first seen:
            // carry them forward too, or a restart after this segment goes
            // would forget them.
            let known: Vec<ClientId> = self.known_clients.iter().cloned().collect();
            for client in &known {
                self.record_client(client, true);
            }
            // Broadcast records likewise, oldest first.
            let broadcasts: Vec<_> = self.archive.broadcasts().collect();
            for broadcast in broadcasts {
                self.journal
                    .record(Event::BroadcastOpened(record::Broadcast {
                        id: broadcast.as_bytes().to_vec(),
                    }));
            }
            // The oldest segment anchors nothing now: this flush sends the
            // carried records, then deletes it.
            self.journal.carried_forward(oldest);
            let _ = self.journal.flush();
        }
    }
}
