//! What the queue enforces, and the decisions that follow from it: how
//! deep a line may grow, how many deliveries a task gets, how long it waits
//! between them, and what becomes of it when a delivery fails, a worker
//! hands it back or one of its timers runs out.
//!
//! The server builds a [`QueuePolicy`] from its config; the actor asks it
//! for a [`Verdict`] and carries it out. Nothing here holds state or reads a
//! clock, so every rule can be read (and changed) in one place.

use std::{collections::HashMap, time::Duration};

use super::ReleaseReason;
use crate::{
    config::Config,
    domain::{DeadLetterReason, QueueName, Target, TaskState},
    error::Error,
};

/// Retry backoff: `initial * factor^(attempt-1)`, at most `max`, with jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Delay after the first failure.
    pub(crate) initial: Duration,
    /// Growth per attempt.
    pub(crate) factor: f64,
    /// Longest delay.
    pub(crate) max: Duration,
}

impl RetryPolicy {
    /// The delay before the next delivery after `attempts` deliveries, drawn
    /// at random from the upper half of the exponential delay, so that tasks
    /// failed together do not come back together.
    pub(crate) fn delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let full = self.initial.as_secs_f64() * self.factor.powi(exponent);
        let capped = full.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * (0.5 + fastrand::f64() / 2.0))
    }
}

/// One queue's limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct QueueLimits {
    /// Deliveries before a task is dead-lettered.
    pub(crate) max_attempts: u32,
    /// Most pending tasks.
    pub(crate) max_depth: usize,
    /// Backoff after failures.
    pub(crate) retry: RetryPolicy,
}

/// Everything the queue enforces.
#[derive(Clone, Debug)]
pub(crate) struct QueuePolicy {
    /// Done and cancelled tasks kept for `get`/`watch`.
    pub(crate) max_finished_tasks: usize,
    /// What finished tasks and dead letters are kept.
    pub(crate) retention: Retention,
    /// Most pending tasks in the whole server.
    pub(crate) max_pending_tasks: usize,
    /// Bytes (text and payload) of unfinished tasks, server-wide.
    pub(crate) max_pending_bytes: u64,
    /// A delivery's lease when the task names none.
    pub(crate) default_lease: Duration,
    /// The longest lease a task may name.
    pub(crate) max_lease: Duration,
    /// How long a task waits for its offline target worker.
    pub(crate) target_ttl: Duration,
    /// How long an idempotency key is remembered.
    pub(crate) idempotency_window: Duration,
    /// Limits of queues without overrides, and of targeted tasks.
    pub(crate) default_limits: QueueLimits,
    /// Per-queue overrides.
    pub(crate) per_queue: HashMap<QueueName, QueueLimits>,
    /// Queues labelled by name on the per-queue gauges.
    pub(crate) metrics_queue_labels: usize,
    /// How long tasks recovered as delivered wait for their worker to resume.
    pub(crate) resume_grace: Duration,
}

/// What the archive keeps: past these, the oldest go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Bytes of finished tasks kept for `Get`/`Wait`.
    pub(crate) finished_bytes: u64,
    /// Dead letters kept.
    pub(crate) dead_count: usize,
    /// Bytes of dead letters kept.
    pub(crate) dead_bytes: u64,
    /// How long a dead letter is kept.
    pub(crate) dead_age: Duration,
}

impl Retention {
    /// Keeps everything (tests of other things).
    #[cfg(test)]
    pub(crate) fn unbounded() -> Self {
        Self {
            finished_bytes: u64::MAX,
            dead_count: usize::MAX,
            dead_bytes: u64::MAX,
            dead_age: Duration::from_secs(u32::MAX.into()),
        }
    }
}

/// What becomes of a task when a delivery of it ends without success, or
/// when one of its timers runs out.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Verdict {
    /// Back to the front of its line now, keeping its place: the delivery
    /// did not finish, through no fault of the task.
    Redeliver,
    /// Back in line after this delay (zero: now, at the back).
    RetryAfter(Duration),
    /// Give up on it; `error`, when set, explains why in its result.
    DeadLetter {
        reason: DeadLetterReason,
        error: Option<String>,
    },
    /// Leave it as it is.
    Keep,
    /// Leave it as it is, and look again after this long.
    CheckAgainAfter(Duration),
}

impl QueuePolicy {
    /// The policy a config describes (the config is validated already).
    pub(crate) fn from_config(config: &Config) -> Self {
        let t = &config.tasks;
        let default_limits = QueueLimits {
            max_attempts: t.max_attempts,
            max_depth: t.max_queue_depth,
            retry: RetryPolicy {
                initial: Duration::from_millis(t.retry_initial_delay_ms),
                factor: t.retry_factor,
                max: Duration::from_millis(t.retry_max_delay_ms),
            },
        };
        let per_queue = config
            .queues
            .iter()
            .filter_map(|(name, q)| {
                let name = QueueName::parse(name).ok()?;
                let limits = QueueLimits {
                    max_attempts: q.max_attempts.unwrap_or(default_limits.max_attempts),
                    max_depth: q.max_queue_depth.unwrap_or(default_limits.max_depth),
                    retry: RetryPolicy {
                        initial: q
                            .retry_initial_delay_ms
                            .map_or(default_limits.retry.initial, Duration::from_millis),
                        factor: q.retry_factor.unwrap_or(default_limits.retry.factor),
                        max: q
                            .retry_max_delay_ms
                            .map_or(default_limits.retry.max, Duration::from_millis),
                    },
                };
                Some((name, limits))
            })
            .collect();
        Self {
            max_finished_tasks: t.max_finished_tasks,
            retention: Retention {
                finished_bytes: t.max_finished_bytes,
                dead_count: t.dead_letter_max_count,
                dead_bytes: t.dead_letter_max_bytes,
                dead_age: Duration::from_secs(t.dead_letter_max_age_secs),
            },
            max_pending_tasks: t.max_pending_tasks,
            max_pending_bytes: t.max_pending_bytes,
            default_lease: Duration::from_secs(t.lease_secs),
            max_lease: Duration::from_secs(t.max_lease_secs),
            target_ttl: Duration::from_secs(t.target_ttl_secs),
            idempotency_window: Duration::from_secs(t.idempotency_window_secs),
            default_limits,
            per_queue,
            metrics_queue_labels: config.server.metrics_queue_labels,
            resume_grace: Duration::from_secs(config.workers.resume_grace_secs),
        }
    }

    /// A small policy for unit tests: tight limits, short timers, nothing
    /// kept past a restart; tests change what they are about.
    #[cfg(test)]
    pub(crate) fn for_tests(max_attempts: u32) -> Self {
        Self {
            max_finished_tasks: 100,
            retention: Retention::unbounded(),
            max_pending_tasks: 10,
            max_pending_bytes: 1024 * 1024,
            default_lease: Duration::from_secs(60),
            max_lease: Duration::from_secs(600),
            target_ttl: Duration::from_secs(30),
            idempotency_window: Duration::from_secs(10),
            resume_grace: Duration::ZERO,
            default_limits: QueueLimits {
                max_attempts,
                max_depth: 2,
                retry: RetryPolicy {
                    initial: Duration::from_secs(1),
                    factor: 2.0,
                    max: Duration::from_secs(5),
                },
            },
            per_queue: HashMap::new(),
            metrics_queue_labels: 8,
        }
    }

    fn limits(&self, target: &Target) -> &QueueLimits {
        match target {
            Target::Queue(queue) => self.per_queue.get(queue).unwrap_or(&self.default_limits),
            Target::Client(_) => &self.default_limits,
        }
    }

    /// The lease of a delivery of a task that asked for `asked`.
    pub(super) fn lease(&self, asked: Option<Duration>) -> Duration {
        asked.unwrap_or(self.default_lease).min(self.max_lease)
    }

    /// Refuses one more pending task for `target`, which holds `depth`.
    pub(super) fn check_depth(&self, target: &Target, depth: usize) -> Result<(), Error> {
        let max_depth = self.limits(target).max_depth;
        if depth >= max_depth {
            return Err(Error::ResourceExhausted(format!(
                "{} is full ({max_depth} pending tasks)",
                describe(target)
            )));
        }
        Ok(())
    }

    /// Refuses one more pending task when the server holds `pending`.
    pub(super) fn check_total(&self, pending: usize) -> Result<(), Error> {
        if pending >= self.max_pending_tasks {
            return Err(Error::ResourceExhausted(format!(
                "the server holds its maximum of {} pending tasks",
                self.max_pending_tasks
            )));
        }
        Ok(())
    }

    /// Refuses a task of `bytes` when unfinished tasks hold `held` bytes.
    pub(super) fn check_bytes(&self, held: u64, bytes: u64) -> Result<(), Error> {
        if held.saturating_add(bytes) > self.max_pending_bytes {
            return Err(Error::ResourceExhausted(format!(
                "the server holds {held} bytes of unfinished tasks; this one's {bytes} would pass \
                 its limit of {} (tasks.max_pending_bytes)",
                self.max_pending_bytes
            )));
        }
        Ok(())
    }

    /// A worker said delivery number `attempts` failed (`Failed`, or
    /// `Retry` with `worker_delay` when it named its own delay): retry after
    /// the backoff, or dead-letter once the attempts are used up.
    pub(super) fn after_failure(
        &self,
        target: &Target,
        attempts: u32,
        worker_delay: Option<Duration>,
    ) -> Verdict {
        let limits = self.limits(target);
        if attempts >= limits.max_attempts {
            return Verdict::DeadLetter {
                reason: DeadLetterReason::MaxAttempts,
                error: None,
            };
        }
        Verdict::RetryAfter(match worker_delay {
            Some(delay) => delay.min(limits.retry.max),
            None => limits.retry.delay(attempts),
        })
    }

    /// A session handed back delivery number `attempts` unfinished, for
    /// `reason`: redeliver it, or dead-letter it once the attempts are used
    /// up, saying what happened to the last one.
    pub(super) fn after_release(
        &self,
        target: &Target,
        attempts: u32,
        reason: ReleaseReason,
    ) -> Verdict {
        let max_attempts = self.limits(target).max_attempts;
        if attempts < max_attempts {
            return Verdict::Redeliver;
        }
        let what = match reason {
            ReleaseReason::WorkerLost => "worker went away before acknowledging",
            ReleaseReason::LeaseExpired => "lease expired",
            ReleaseReason::ReceiptMissed => "receipt not confirmed in time",
        };
        Verdict::DeadLetter {
            reason: DeadLetterReason::MaxAttempts,
            error: Some(format!(
                "{what} on attempt {attempts}, the last of max_attempts ({max_attempts})"
            )),
        }
    }

    /// A task's own TTL ran out: only a task no worker has started expires.
    pub(super) fn after_ttl(&self, state: TaskState, attempts: u32) -> Verdict {
        if state == TaskState::Pending && attempts == 0 {
            Verdict::DeadLetter {
                reason: DeadLetterReason::Expired,
                error: None,
            }
        } else {
            Verdict::Keep
        }
    }

    /// A targeted task has waited its target TTL: it is undeliverable if
    /// its worker is offline. Delivered, or waiting for a busy worker, it
    /// is not; look again later.
    pub(super) fn after_target_ttl(&self, state: TaskState, worker_online: bool) -> Verdict {
        if state.is_final() {
            Verdict::Keep
        } else if state == TaskState::Pending && !worker_online {
            Verdict::DeadLetter {
                reason: DeadLetterReason::Undeliverable,
                error: None,
            }
        } else {
            Verdict::CheckAgainAfter(self.target_ttl)
        }
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Queue(queue) => format!("queue {queue}"),
        Target::Client(client) => format!("the line of tasks for worker {client}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::ClientId;

    fn policy(max_attempts: u32) -> QueuePolicy {
        QueuePolicy::for_tests(max_attempts)
    }

    fn queue() -> Target {
        Target::Queue(QueueName::default_queue())
    }

    /// RetryPolicy grows by its factor, stays under its maximum, and jitters
    /// within the upper half.
    #[test]
    fn retry_delays_grow_with_jitter() {
        let retry = RetryPolicy {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(5),
        };
        for _ in 0..100 {
            let first = retry.delay(1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let third = retry.delay(3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            assert!(retry.delay(30) <= Duration::from_secs(5));
        }
    }

    /// A failure retries until the attempts are used up; a worker's own
    /// delay is honoured up to the maximum backoff.
    #[test]
    fn failures_retry_then_dead_letter() {
        let p = policy(3);
        assert!(matches!(
            p.after_failure(&queue(), 1, None),
            Verdict::RetryAfter(d) if d >= Duration::from_millis(500) && d <= Duration::from_secs(1)
        ));
        assert_eq!(
            p.after_failure(&queue(), 2, Some(Duration::from_secs(60))),
            Verdict::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            p.after_failure(&queue(), 3, Some(Duration::ZERO)),
            Verdict::DeadLetter {
                reason: DeadLetterReason::MaxAttempts,
                error: None
            }
        );
    }

    /// A task handed back is redelivered, and dead-lettered on its last
    /// attempt with what happened to it.
    #[test]
    fn releases_redeliver_then_dead_letter() {
        let p = policy(2);
        let lost = ReleaseReason::LeaseExpired;
        assert_eq!(p.after_release(&queue(), 1, lost), Verdict::Redeliver);
        let Verdict::DeadLetter { reason, error } = p.after_release(&queue(), 2, lost) else {
            panic!("the last attempt is dead-lettered");
        };
        assert_eq!(reason, DeadLetterReason::MaxAttempts);
        assert_eq!(
            error.unwrap(),
            "lease expired on attempt 2, the last of max_attempts (2)"
        );
    }

    /// TTLs expire only unstarted tasks; a target TTL only pending tasks of
    /// an offline worker, and looks again at the rest until they finish.
    #[test]
    fn timers_expire_only_what_they_should() {
        let p = policy(2);
        assert!(matches!(
            p.after_ttl(TaskState::Pending, 0),
            Verdict::DeadLetter {
                reason: DeadLetterReason::Expired,
                ..
            }
        ));
        assert_eq!(p.after_ttl(TaskState::Pending, 1), Verdict::Keep);
        assert_eq!(p.after_ttl(TaskState::Delivered, 0), Verdict::Keep);
        assert!(matches!(
            p.after_target_ttl(TaskState::Pending, false),
            Verdict::DeadLetter {
                reason: DeadLetterReason::Undeliverable,
                ..
            }
        ));
        for (state, online) in [(TaskState::Pending, true), (TaskState::Delivered, false)] {
            assert_eq!(
                p.after_target_ttl(state, online),
                Verdict::CheckAgainAfter(Duration::from_secs(30))
            );
        }
        assert_eq!(p.after_target_ttl(TaskState::Done, false), Verdict::Keep);
    }

    /// Depth and server-wide limits refuse with a message naming the line.
    #[test]
    fn limits_refuse_when_full() {
        let p = policy(2);
        assert!(p.check_depth(&queue(), 1).is_ok());
        let worker = Target::Client(ClientId::parse("w").unwrap());
        let Err(Error::ResourceExhausted(message)) = p.check_depth(&worker, 2) else {
            panic!("a full line refuses");
        };
        assert_eq!(
            message,
            "the line of tasks for worker w is full (2 pending tasks)"
        );
        assert!(p.check_total(9).is_ok());
        assert!(matches!(
            p.check_total(10),
            Err(Error::ResourceExhausted(_))
        ));
        assert_eq!(
            p.lease(Some(Duration::from_secs(6000))),
            Duration::from_secs(600)
        );
        assert_eq!(p.lease(None), Duration::from_secs(60));
    }
}
