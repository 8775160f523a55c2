//! The queue rebuilt from its journal at start: every recovered task goes
//! back through the same moves live traffic uses (into a line, a timer,
//! the archive), so there is one way state changes. Nothing is recorded
//! while this runs: the state is the journal's own.
//!
//! A task that was delivered when the server stopped is handed back as if
//! its worker were lost: its attempt stays counted, and it goes to the
//! front of its line (or to the dead letters, past its max attempts).

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;
use tracing::warn;

use super::Queue;
use crate::queue::{
    ReleaseReason,
    entry::{Placement, TaskEntry},
    lines::Timer,
    policy::Verdict,
};
use crate::{
    domain::{BroadcastId, ClientId, DeadLetterReason, QueueName, Target, TaskId, TaskResult},
    journal::{Recovered, RecoveredTask, record::State},
};

/// A recorded task's id and target, if they read back as valid. Targets
/// are read once per name (`names`): a million tasks share a few queues,
/// and each name read anew would be an allocation.
fn identify(task: &RecoveredTask, names: &mut Names) -> Option<(TaskId, Target)> {
    let id = TaskId::from_bytes(&task.record.id)?;
    let record = &task.record;
    if !record.target_client.is_empty() {
        let name = record.target_client.as_str();
        if let Some(client) = names.clients.get(name) {
            return Some((id, Target::Client(client.clone())));
        }
        let client = ClientId::parse(name).ok()?;
        names.clients.insert(name.to_owned(), client.clone());
        return Some((id, Target::Client(client)));
    }
    let name = record.queue.as_str();
    if let Some(queue) = names.queues.get(name) {
        return Some((id, Target::Queue(queue.clone())));
    }
    let queue = match name {
        "" => QueueName::default_queue(),
        name => QueueName::parse(name).ok()?,
    };
    names.queues.insert(name.to_owned(), queue.clone());
    Some((id, Target::Queue(queue)))
}

/// Queue names and client ids read so far during a restore.
#[derive(Default)]
struct Names {
    queues: HashMap<String, QueueName>,
    clients: HashMap<String, ClientId>,
}

impl Queue {
    /// Rebuilds the queue from what its journal recovered.
    pub(in crate::queue) fn restore(&mut self, recovered: Recovered) {
        self.restoring = true;
        let now = Instant::now();
        let now_ms = crate::clock::unix_ms_now();
        let after = |wall_ms: u64| now + Duration::from_millis(wall_ms.saturating_sub(now_ms));
        for client in &recovered.clients {
            if let Ok(client) = ClientId::parse(client) {
                self.known_clients.insert(client);
            }
        }
        for broadcast in &recovered.broadcasts {
            if let Some(id) = BroadcastId::from_bytes(broadcast) {
                self.archive.keep_broadcast(id);
            }
        }
        let mut finished = Vec::new();
        let mut pending = Vec::new();
        let mut delivered = Vec::new();
        let mut skipped = 0;
        let mut names = Names::default();
        for task in &recovered.tasks {
            let Some((id, target)) = identify(task, &mut names) else {
                skipped += 1;
                continue;
            };
            let record = &task.record;
            let broadcast = BroadcastId::from_bytes(&record.broadcast);
            let mut entry = TaskEntry::new(
                id,
                target,
                record.text.clone(),
                record.payload.clone(),
                record.priority,
                Duration::from_millis(u64::from(record.lease_ms)),
                broadcast,
            );
            entry.anchor = u32::try_from(task.anchor).unwrap_or(u32::MAX);
            let result = record.result.clone().unwrap_or_default();
            entry.restore(
                record.attempts,
                ClientId::parse(&record.worker).ok(),
                TaskResult {
                    ret: result.ret,
                    output: result.output,
                    error: result.error,
                },
            );
            let key = (!record.idempotency_key.is_empty() && record.key_expires_unix_ms > now_ms)
                .then(|| {
                    (
                        record.idempotency_key.clone(),
                        record.key_expires_unix_ms,
                        record.fingerprint,
                    )
                });
            if let Some((key, expires, fingerprint)) = &key {
                self.archive.remember_key(key.clone(), id, *fingerprint);
                self.timers
                    .add(after(*expires), Timer::ForgetKey(key.clone()));
            }
            entry.set_journal_extras(key, record.ttl_deadline_unix_ms);
            if let Some(broadcast) = broadcast {
                self.archive.add_copy(broadcast, id);
            }
            let state = State::try_from(record.state).unwrap_or(State::Pending);
            let reason = DeadLetterReason::parse(
                record
                    .result
                    .as_ref()
                    .map_or("", |r| r.dead_letter_reason.as_str()),
            );
            match state {
                State::Done => entry.complete(),
                State::Cancelled => entry.cancel(),
                State::DeadLettered | State::Pending | State::Delivered => {}
            }
            let live = matches!(state, State::Pending | State::Delivered);
            if live && record.ttl_deadline_unix_ms != 0 {
                self.timers
                    .add(after(record.ttl_deadline_unix_ms), Timer::Expire(id));
            }
            if live && let Target::Client(_) = entry.target {
                self.timers
                    .add(now + self.policy.target_ttl, Timer::TargetTtl(id));
            }
            if live {
                self.unfinished_bytes += entry.content_bytes();
            }
            self.tasks.insert(id, entry);
            match state {
                State::Done | State::Cancelled | State::DeadLettered => {
                    let dead_at = record.result.as_ref().map_or(0, |r| r.dead_unix_ms);
                    finished.push((
                        task.finished_order,
                        id,
                        (state == State::DeadLettered).then_some((reason, dead_at)),
                    ));
                }
                State::Pending => pending.push((record.due_unix_ms, id, record.not_before_unix_ms)),
                State::Delivered => delivered.push((record.due_unix_ms, id)),
            }
        }
        finished.sort_by_key(|(order, ..)| *order);
        for (_, id, dead) in finished {
            match dead {
                Some((reason, at_ms)) => {
                    let bytes = self.tasks.get(&id).map_or(0, TaskEntry::bytes);
                    let at_ms = if at_ms == 0 { now_ms } else { at_ms };
                    let seq = self.archive.add_dead(id, at_ms, bytes);
                    if let Some(entry) = self.tasks.get_mut(&id) {
                        entry.kill(reason.unwrap_or(DeadLetterReason::MaxAttempts), seq);
                    }
                }
                None => {
                    let bytes = self.tasks.get(&id).map_or(0, TaskEntry::bytes);
                    for old in self.archive.add_finished(id, bytes) {
                        if let Some(entry) = self.tasks.remove(&old) {
                            self.journal.unanchor(u64::from(entry.anchor));
                        }
                    }
                }
            }
        }
        pending.sort_by_key(|(due, ..)| *due);
        for (_, id, not_before) in pending {
            if not_before > now_ms {
                self.make_pending_later(id, after(not_before), not_before);
            } else {
                self.make_pending(id, Placement::Back(now));
            }
        }
        // From here on the queue's moves are new decisions (a hand-back, a
        // dead letter past max attempts): journaled, so a second crash does
        // not replay the task as still delivered.
        self.restoring = false;
        // Delivered tasks stay with their worker for the resume grace, so a
        // worker that comes back and resumes keeps them (attempt unchanged,
        // no second execution); without a grace they go back to the front
        // of their lines. They wait by worker, not by the session the
        // journal names: a worker has one session at a time, the session
        // may have been resumed into a newer one since the delivery was
        // recorded, and a record carried forward by compaction has none.
        // A worker proves it holds a task by naming it and its attempt.
        delivered.sort_by_key(|(due, ..)| *due);
        let mut handed_back = 0;
        let mut orphaned = 0;
        let mut lost: Vec<(ClientId, TaskId, u32)> = Vec::new();
        for (_, id) in delivered {
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            entry.state = crate::domain::TaskState::Delivered;
            let attempt = entry.attempts;
            let Some(worker) = entry.worker.clone() else {
                // A delivery with no worker recorded: back in line.
                self.carry_out(id, Verdict::Redeliver);
                continue;
            };
            if self.policy.resume_grace.is_zero() {
                lost.push((worker, id, attempt));
                continue;
            }
            self.in_flight_count += 1;
            orphaned += 1;
            let grace = now + self.policy.resume_grace;
            let timers = &mut self.timers;
            self.orphans
                .entry(worker)
                .or_insert_with_key(|worker| {
                    timers.add(grace, Timer::OrphanGrace(worker.clone()));
                    Vec::new()
                })
                .push((id, attempt));
        }
        for (worker, id, attempt) in lost.into_iter().rev() {
            handed_back += 1;
            // Counted in flight for the hand-back to count it out again.
            self.in_flight_count += 1;
            self.hand_back_orphaned(&worker, vec![(id, attempt)]);
        }
        if skipped > 0 {
            warn!(
                skipped,
                "journal: tasks whose ids or targets did not read back were skipped"
            );
        }
        tracing::info!(
            tasks = self.backlog.pending(),
            handed_back,
            waiting_for_resume = orphaned,
            "queue restored from the journal"
        );
    }

    /// Tasks of a recovered session that its worker did not take back: they
    /// go back in line as after a lost worker (the attempt stays counted).
    pub(super) fn hand_back_orphaned(&mut self, worker: &ClientId, held: Vec<(TaskId, u32)>) {
        for (id, attempt) in held.into_iter().rev() {
            let Some(entry) = self
                .tasks
                .get(&id)
                .filter(|e| e.is_held_by(worker, attempt))
            else {
                continue;
            };
            self.in_flight_count = self.in_flight_count.saturating_sub(1);
            let verdict =
                self.policy
                    .after_release(&entry.target, entry.attempts, ReleaseReason::WorkerLost);
            if verdict == Verdict::Redeliver {
                self.metrics.redelivered_worker_lost.increment(1);
            }
            self.carry_out(id, verdict);
        }
    }

    /// A worker resumes after a restart: the tasks it names, still
    /// delivered to it at those attempts, move to its new session; the rest
    /// of what the journal had delivered to it go back in line. The
    /// deliveries it keeps.
    pub(super) fn adopt(
        &mut self,
        worker: &ClientId,
        session: crate::domain::SessionId,
        claimed: &[(TaskId, u32)],
    ) -> Vec<crate::domain::Delivery> {
        let Some(held) = self.orphans.remove(worker) else {
            return Vec::new();
        };
        let claimed: std::collections::HashSet<&(TaskId, u32)> = claimed.iter().collect();
        let mut kept = Vec::new();
        let mut rest = Vec::new();
        for (id, attempt) in held {
            match self.tasks.get(&id) {
                Some(entry)
                    if claimed.contains(&(id, attempt)) && entry.is_held_by(worker, attempt) =>
                {
                    kept.push(entry.current_delivery(id));
                }
                _ => rest.push((id, attempt)),
            }
        }
        for delivery in &kept {
            self.record_delivered(delivery.task_id, delivery.attempt, worker, session);
        }
        self.hand_back_orphaned(worker, rest);
        kept
    }
}
