//! The queue actor's handlers for how deliveries and tasks end: a
//! worker's acknowledgement, tasks a session hands back (and the end of a
//! worker's session), the policy's verdicts carried out (retry later,
//! redeliver, dead-letter), finishing, cancelling, and a dead letter's
//! requeue. Split from `actor.rs` to keep each file to one stage of a
//! task's life; the state they change is the actor's.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, warn};

use super::Queue;
use crate::{
    domain::{ClientId, DeadLetterReason, Outcome, SessionId, Target, TaskId, TaskInfo, TaskState},
    error::Error,
    queue::{
        Cancelled, Completion, Release, ReleaseReason,
        archive::Dropped,
        entry::{self, Placement, TaskEntry, task_event},
        lines::Timer,
        policy::Verdict,
    },
};

impl Queue {
    // === Acknowledgements and releases ===

    /// True when `worker` holds attempt `attempt` of the task.
    fn holds(&self, id: TaskId, worker: &ClientId, attempt: u32) -> bool {
        self.tasks
            .get(&id)
            .is_some_and(|e| e.is_held_by(worker, attempt))
    }

    /// Applies one checked acknowledgement of `worker`, unless the task
    /// has moved on.
    pub(super) fn handle_complete(&mut self, worker: &ClientId, ack: Completion) {
        // The session checked the ack against what it holds, so a mismatch
        // here means the task moved on meanwhile; the ack is stale.
        if !self.holds(ack.task, worker, ack.attempt) {
            debug!(task.id = %ack.task, client.id = %worker, "stale acknowledgement ignored");
            return;
        }
        let id = ack.task;
        self.in_flight_count = self.in_flight_count.saturating_sub(1);
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        entry.set_result(ack.result);
        task_event!(entry, attempt = ack.attempt, outcome = ?ack.outcome, "acknowledged");
        let verdict = match ack.outcome {
            Outcome::Done => {
                self.metrics.acked_done.increment(1);
                self.totals.done += 1;
                self.unfinished_bytes = self.unfinished_bytes.saturating_sub(entry.content_bytes());
                entry.complete();
                self.finish(id);
                return;
            }
            Outcome::FailedPermanently => {
                self.metrics.acked_failed.increment(1);
                self.totals.failed += 1;
                Verdict::DeadLetter {
                    reason: DeadLetterReason::FailedPermanently,
                    error: None,
                }
            }
            Outcome::Failed | Outcome::Retry => {
                let (acked, redelivered) = if ack.outcome == Outcome::Failed {
                    self.totals.failed += 1;
                    (&self.metrics.acked_failed, &self.metrics.redelivered_failed)
                } else {
                    (&self.metrics.acked_retry, &self.metrics.redelivered_retry)
                };
                acked.increment(1);
                let worker_delay = ack.retry_after.filter(|_| ack.outcome == Outcome::Retry);
                let verdict =
                    self.policy
                        .after_failure(&entry.target, entry.attempts, worker_delay);
                if let Verdict::RetryAfter(_) = verdict {
                    redelivered.increment(1);
                }
                verdict
            }
        };
        self.carry_out(id, verdict);
    }

    /// Takes back the tasks a session hands back. They go back to the front
    /// of their lines last first, so they keep their order there.
    pub(super) fn handle_release(&mut self, release: Release) {
        let Release {
            session,
            worker,
            delivered,
            reason,
            undelivered,
            session_ended,
        } = release;
        self.undo_deliveries(&undelivered);
        for (id, attempt) in delivered.into_iter().rev() {
            if !self.holds(id, &worker, attempt) {
                continue;
            }
            self.in_flight_count = self.in_flight_count.saturating_sub(1);
            let Some(entry) = self.tasks.get_mut(&id) else {
                continue;
            };
            let verdict = self
                .policy
                .after_release(&entry.target, entry.attempts, reason);
            if verdict == Verdict::Redeliver {
                match reason {
                    ReleaseReason::WorkerLost => &self.metrics.redelivered_worker_lost,
                    ReleaseReason::LeaseExpired => &self.metrics.redelivered_lease_expired,
                    ReleaseReason::ReceiptMissed => &self.metrics.redelivered_receipt_missed,
                }
                .increment(1);
                task_event!(entry, attempt, ?reason, "taken back");
            }
            self.carry_out(id, verdict);
        }
        if let Some(forget) = session_ended {
            self.worker_offline(session, &worker, forget);
        }
    }

    /// A worker's session has ended (after its tasks were put back). A
    /// worker whose id the server made up can never come back under it:
    /// tasks that still wait for it are undeliverable, and it is forgotten.
    fn worker_offline(&mut self, session: SessionId, worker: &ClientId, forget: bool) {
        self.online.remove(worker);
        self.waiting.remove_session(session);
        if !forget {
            return;
        }
        if let Some(mut line) = self.backlog.take_line(&Target::Client(worker.clone())) {
            while let Some(slot) = line.pop() {
                if entry::is_ready(&self.tasks, slot) {
                    self.leave_pending(slot.0);
                    self.dead_letter(slot.0, DeadLetterReason::Undeliverable);
                }
            }
        }
        // Delayed tasks for it (a retry backoff) meet their target TTL; it is
        // forgotten when the last of them is gone.
        self.to_forget.insert(worker.clone());
        self.forget_if_done(worker);
    }

    /// Forgets a worker that went for good, once no task waits for it.
    pub(super) fn forget_if_done(&mut self, worker: &ClientId) {
        let own = Target::Client(worker.clone());
        if self.to_forget.contains(worker) && self.backlog.depth(&own) == 0 {
            self.to_forget.remove(worker);
            self.known_clients.remove(worker);
            self.backlog.forget(&own);
            self.record_client(worker, false);
        }
    }

    // === Verdicts and endings ===

    /// Puts a task back in line after `delay`.
    fn retry_later(&mut self, id: TaskId, delay: Duration) {
        if delay.is_zero() {
            self.make_pending(id, Placement::Back(Instant::now()));
            return;
        }
        let at_unix_ms = crate::clock::unix_ms(SystemTime::now() + delay);
        self.make_pending_later(id, Instant::now() + delay, at_unix_ms);
    }

    /// Carries out the policy's verdict on a task that is out of its line
    /// (delivered, or just taken out of the pending count).
    pub(super) fn carry_out(&mut self, id: TaskId, verdict: Verdict) {
        match verdict {
            Verdict::Redeliver => self.make_pending(id, Placement::Front),
            Verdict::RetryAfter(delay) => self.retry_later(id, delay),
            Verdict::DeadLetter { reason, error } => {
                if let Some(error) = error
                    && let Some(entry) = self.tasks.get_mut(&id)
                {
                    entry.set_error(error);
                }
                self.dead_letter(id, reason);
            }
            Verdict::Keep | Verdict::CheckAgainAfter(_) => {}
        }
    }

    fn dead_letter(&mut self, id: TaskId, reason: DeadLetterReason) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let seq = self
            .archive
            .add_dead(id, crate::clock::unix_ms_now(), entry.bytes());
        self.unfinished_bytes = self.unfinished_bytes.saturating_sub(entry.content_bytes());
        entry.kill(reason, seq);
        self.metrics.dead_lettered(reason).increment(1);
        self.totals.dead_lettered += 1;
        self.record_finished(id);
        self.notify_watchers(id);
    }

    /// Records a done or cancelled task and forgets the oldest ones past the
    /// retention limit.
    fn finish(&mut self, id: TaskId) {
        self.record_finished(id);
        self.notify_watchers(id);
        let bytes = self.tasks.get(&id).map_or(0, TaskEntry::bytes);
        for old in self.archive.add_finished(id, bytes) {
            if let Some(entry) = self.tasks.remove(&old) {
                self.record_forgotten(old, entry.anchor);
            }
        }
    }

    /// Cancels a task that has not finished; says who held it, if anyone.
    pub(super) fn handle_cancel(&mut self, id: TaskId) -> Result<Cancelled, Error> {
        let entry = self.tasks.get(&id).ok_or(Error::NotFound {
            what: "task",
            id: id.to_string(),
        })?;
        if matches!(entry.state, TaskState::Pending | TaskState::Delivered) {
            self.unfinished_bytes = self.unfinished_bytes.saturating_sub(entry.content_bytes());
        }
        let holder = match entry.state {
            TaskState::Pending => {
                self.leave_pending(id);
                None
            }
            TaskState::Delivered => {
                self.in_flight_count = self.in_flight_count.saturating_sub(1);
                entry.worker.clone().map(|worker| (worker, entry.attempts))
            }
            TaskState::DeadLettered => {
                if let Some((_, seq)) = entry.dead_letter() {
                    self.archive.remove_dead(seq);
                }
                None
            }
            state @ (TaskState::Done | TaskState::Cancelled) => {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} is already {}",
                    if state == TaskState::Done {
                        "done"
                    } else {
                        "cancelled"
                    }
                )));
            }
        };
        if let Some(entry) = self.tasks.get_mut(&id) {
            entry.cancel();
        }
        self.metrics.cancelled.increment(1);
        self.finish(id);
        Ok(Cancelled {
            info: self.info(id)?,
            holder,
        })
    }

    /// Puts a dead letter back in line, as if new, if its line has room.
    pub(super) fn handle_requeue(&mut self, id: TaskId) -> Result<TaskInfo, Error> {
        let entry = self.tasks.get(&id).ok_or(Error::NotFound {
            what: "task",
            id: id.to_string(),
        })?;
        let Some((_, seq)) = entry
            .dead_letter()
            .filter(|_| entry.state == TaskState::DeadLettered)
        else {
            return Err(Error::FailedPrecondition(format!(
                "task {id} is not dead-lettered"
            )));
        };
        self.policy
            .check_depth(&entry.target, self.backlog.depth(&entry.target))?;
        let bytes = entry.content_bytes();
        self.policy.check_bytes(self.unfinished_bytes, bytes)?;
        self.unfinished_bytes += bytes;
        self.archive.remove_dead(seq);
        let now = Instant::now();
        if let Some(entry) = self.tasks.get_mut(&id) {
            entry.revive();
            if let Target::Client(_) = entry.target {
                self.timers
                    .add(now + self.policy.target_ttl, Timer::TargetTtl(id));
            }
            entry.restart_span(id);
            task_event!(entry, "requeued");
        }
        self.make_pending(id, Placement::Back(now));
        // A full record: the task starts over (no attempts, no TTL), and a
        // replay must not see its old life.
        self.record_task(id);
        self.info(id)
    }

    // === Retention ===

    /// Drops the oldest dead letters past their retention (count, bytes,
    /// age): forgotten, counted and logged.
    pub(super) fn trim_dead_letters(&mut self) {
        let dropped = self.archive.trim_dead(crate::clock::unix_ms_now());
        if dropped.is_empty() {
            return;
        }
        let (mut count, mut bytes, mut age) = (0, 0, 0);
        for (id, why) in dropped {
            match why {
                Dropped::Count => count += 1,
                Dropped::Bytes => bytes += 1,
                Dropped::Age => age += 1,
            }
            self.forget_dead(id);
        }
        self.metrics.dead_letters_dropped_count.increment(count);
        self.metrics.dead_letters_dropped_bytes.increment(bytes);
        self.metrics.dead_letters_dropped_age.increment(age);
        warn!(
            past_count = count,
            past_bytes = bytes,
            past_age = age,
            "dead letters past their retention dropped (tasks.dead_letter_max_*)"
        );
    }

    /// Removes every dead letter (of `queue`, when given); how many.
    pub(super) fn purge_dead_letters(&mut self, queue: Option<&crate::domain::QueueName>) -> u64 {
        let purged: Vec<(u64, TaskId)> = self
            .archive
            .dead_with_seq()
            .filter(|(_, id)| match queue {
                None => true,
                Some(queue) => self
                    .tasks
                    .get(id)
                    .is_some_and(|e| e.target == Target::Queue(queue.clone())),
            })
            .collect();
        for (seq, id) in &purged {
            self.archive.remove_dead(*seq);
            self.forget_dead(*id);
        }
        self.metrics
            .dead_letters_purged
            .increment(purged.len() as u64);
        purged.len() as u64
    }

    /// A dead letter no longer kept: its entry and its journal anchor go.
    fn forget_dead(&mut self, id: TaskId) {
        if let Some(entry) = self.tasks.remove(&id) {
            self.record_forgotten(id, entry.anchor);
        }
    }
}
