//! The queue rebuilt from its journal at start: every recovered task goes
//! back through the same moves live traffic uses (into a line, a timer,
//! the archive), so there is one way state changes. Nothing is recorded
//! while this runs: the state is the journal's own.
//!
//! A task that was delivered when the server stopped is handed back as if
//! its worker were lost: its attempt stays counted, and it goes to the
//! front of its line (or to the dead letters, past its max attempts).

use std::time::Duration;

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

/// A recorded task's id and target, if they read back as valid.
fn identify(task: &RecoveredTask) -> Option<(TaskId, Target)> {
    let id = TaskId::from_bytes(&task.record.id)?;
    let target = if task.record.target_client.is_empty() {
        let queue = match task.record.queue.as_str() {
            "" => QueueName::default_queue(),
            name => QueueName::parse(name).ok()?,
        };
        Target::Queue(queue)
    } else {
        Target::Client(ClientId::parse(&task.record.target_client).ok()?)
    };
    Some((id, target))
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
        for task in &recovered.tasks {
            let Some((id, target)) = identify(task) else {
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
            self.tasks.insert(id, entry);
            match state {
                State::Done | State::Cancelled | State::DeadLettered => {
                    finished.push((
                        task.finished_order,
                        id,
                        (state == State::DeadLettered).then_some(reason),
                    ));
                }
                State::Pending => pending.push((record.due_unix_ms, id, record.not_before_unix_ms)),
                State::Delivered => delivered.push((record.due_unix_ms, id)),
            }
        }
        finished.sort_by_key(|(order, ..)| *order);
        for (_, id, dead) in finished {
            match dead {
                Some(reason) => {
                    let seq = self.archive.add_dead(id);
                    if let Some(entry) = self.tasks.get_mut(&id) {
                        entry.kill(reason.unwrap_or(DeadLetterReason::MaxAttempts), seq);
                    }
                }
                None => {
                    if let Some(old) = self.archive.add_finished(id) {
                        self.tasks.remove(&old);
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
        // Back to the front of their lines, last first, so they keep their order.
        delivered.sort_by_key(|(due, _)| std::cmp::Reverse(*due));
        let handed_back = delivered.len();
        for (_, id) in delivered {
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            entry.state = crate::domain::TaskState::Delivered;
            let verdict =
                self.policy
                    .after_release(&entry.target, entry.attempts, ReleaseReason::WorkerLost);
            if verdict == Verdict::Redeliver {
                self.metrics.redelivered_worker_lost.increment(1);
            }
            self.carry_out(id, verdict);
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
            "queue restored from the journal"
        );
        self.restoring = false;
    }
}
