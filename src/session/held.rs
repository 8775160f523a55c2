//! The tasks a session's worker holds: pushed down its stream and not yet
//! acknowledged, each with its execution lease and (for workers that confirm
//! receipt) its receipt deadline.
//!
//! It exists apart from the actor because it is the session's most intricate
//! bookkeeping: acks are matched by task id and attempt, or, for seed clients
//! that name no task, by position (the oldest unacknowledged task); a task
//! taken back (lease expired, receipt missed, cancelled) stays as a tombstone
//! so those positional acks stay aligned with the tasks the worker saw, and
//! so a late ack can be told why its task is gone.
//!
//! A plain synchronous type owned by the session actor: it answers what
//! happened and leaves the acting (metrics, cancel messages, handing tasks
//! back to the queue) to the actor.

use std::{
    collections::{BTreeSet, VecDeque},
    time::Duration,
};

use tokio::time::Instant;

use super::{GoneReason, Rejection};
use crate::domain::TaskId;

/// Tombstones kept however little credit the worker has: they only serve
/// positional acks, and a worker may ack a few tasks behind.
const MIN_TOMBSTONES: usize = 16;

/// One task this session's worker holds (or held: a tombstone).
#[derive(Debug, Clone)]
pub(super) struct Held {
    task: TaskId,
    attempt: u32,
    /// The task's lease length, for extensions that name none.
    lease: Duration,
    /// When it was pushed down the stream, for the latency histograms.
    pushed_at: Instant,
    lease_until: Instant,
    receipt_until: Option<Instant>,
    /// Set when the task was taken back.
    gone: Option<GoneReason>,
}

impl Held {
    /// A task pushed at `now`, leased for `lease`; with `receipt_timeout`
    /// the worker must confirm receipt within it.
    pub(super) fn pushed(
        task: TaskId,
        attempt: u32,
        lease: Duration,
        now: Instant,
        receipt_timeout: Option<Duration>,
    ) -> Self {
        Self {
            task,
            attempt,
            lease,
            pushed_at: now,
            lease_until: now + lease,
            receipt_until: receipt_timeout.map(|timeout| now + timeout),
            gone: None,
        }
    }

    /// The task.
    pub(super) fn task(&self) -> TaskId {
        self.task
    }

    /// The attempt the worker holds.
    pub(super) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// What an operator sees of it, with its instants as Unix times.
    pub(super) fn view(&self, now: Instant, now_unix_ms: u64) -> HeldView {
        let unix_ms = |at: Instant| {
            if at >= now {
                now_unix_ms.saturating_add(millis(at - now))
            } else {
                now_unix_ms.saturating_sub(millis(now - at))
            }
        };
        HeldView {
            task: self.task,
            attempt: self.attempt,
            pushed_unix_ms: unix_ms(self.pushed_at),
            lease_deadline_unix_ms: unix_ms(self.lease_until),
            awaiting_receipt: self.receipt_until.is_some(),
        }
    }

    /// The worker proved it has the task: no receipt is awaited any more.
    pub(super) fn mark_received(&mut self) {
        self.receipt_until = None;
    }
}

fn millis(span: Duration) -> u64 {
    u64::try_from(span.as_millis()).unwrap_or(u64::MAX)
}

/// A task a worker holds, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldView {
    /// The task.
    pub(crate) task: TaskId,
    /// The attempt the worker holds.
    pub(crate) attempt: u32,
    /// When it was pushed (ms since the Unix epoch).
    pub(crate) pushed_unix_ms: u64,
    /// When its lease runs out unless extended (ms since the Unix epoch).
    pub(crate) lease_deadline_unix_ms: u64,
    /// Its receipt has not been confirmed yet.
    pub(crate) awaiting_receipt: bool,
}

/// Which deadline of a held task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Deadline {
    /// The execution lease.
    Lease,
    /// The receipt confirmation.
    Receipt,
}

impl Deadline {
    /// Why a task whose deadline of this kind passed is gone.
    fn gone_reason(self) -> GoneReason {
        match self {
            Deadline::Lease => GoneReason::LeaseExpired,
            Deadline::Receipt => GoneReason::ReceiptMissed,
        }
    }
}

/// A held task whose deadline passed; it is a tombstone now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expired {
    /// The task.
    pub(super) task: TaskId,
    /// The attempt the worker held.
    pub(super) attempt: u32,
    /// The deadline that passed.
    pub(super) deadline: Deadline,
}

/// A task the worker finished with, no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Acked {
    /// The task.
    pub(super) task: TaskId,
    /// The attempt the ack was for.
    pub(super) attempt: u32,
    /// From the push to the ack.
    pub(super) latency: Duration,
}

/// What a producer's cancel did to the held list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancel {
    /// The task was held and is a tombstone now.
    Taken,
    /// It had been taken back already.
    AlreadyGone,
    /// This attempt of the task is not here (it may not have arrived yet).
    NotHeld,
}

/// The held tasks, oldest first, and their deadlines.
#[derive(Debug, Default)]
pub(super) struct HeldTasks {
    /// Delivered tasks in push order: id-less acks take the front.
    entries: VecDeque<Held>,
    /// Entries that are not tombstones.
    live: usize,
    /// Exactly the lease and receipt deadlines of the live entries, earliest
    /// first (a lease before a receipt due at the same instant).
    deadlines: BTreeSet<(Instant, Deadline, TaskId, u32)>,
}

impl HeldTasks {
    /// How many tasks the worker holds (tombstones not counted).
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// The live tasks, oldest first, as operators see them.
    pub(super) fn views(&self, now: Instant, now_unix_ms: u64) -> Vec<HeldView> {
        self.entries
            .iter()
            .filter(|entry| entry.gone.is_none())
            .map(|entry| entry.view(now, now_unix_ms))
            .collect()
    }

    /// The earliest lease or receipt deadline of a held task.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, ..)| *at)
    }

    /// Starts tracking a delivered (or taken-over) task.
    pub(super) fn track(&mut self, entry: Held) {
        self.deadlines.insert((
            entry.lease_until,
            Deadline::Lease,
            entry.task,
            entry.attempt,
        ));
        if let Some(at) = entry.receipt_until {
            self.deadlines
                .insert((at, Deadline::Receipt, entry.task, entry.attempt));
        }
        self.entries.push_back(entry);
        self.live += 1;
    }

    /// The worker confirms it received a task (`None`: its oldest). Returns
    /// how long the receipt took, the first time it comes.
    pub(super) fn confirm_receipt(
        &mut self,
        task: Option<TaskId>,
        attempt: Option<u32>,
        now: Instant,
    ) -> Result<Option<Duration>, Rejection> {
        let i = self.find(task, attempt)?;
        let entry = &mut self.entries[i];
        let Some(at) = entry.receipt_until.take() else {
            return Ok(None);
        };
        self.deadlines
            .remove(&(at, Deadline::Receipt, entry.task, entry.attempt));
        Ok(Some(now - entry.pushed_at))
    }

    /// The worker finished a task (`None`: its oldest), which is no longer
    /// held. An id-less ack that lines up with a tombstone is refused and
    /// consumes it, so the worker's next positional ack meets its next task.
    pub(super) fn complete(
        &mut self,
        task: Option<TaskId>,
        attempt: Option<u32>,
        now: Instant,
    ) -> Result<Acked, Rejection> {
        let i = match self.find(task, attempt) {
            Err(gone @ Rejection::Gone { .. }) if task.is_none() => {
                self.entries.pop_front();
                return Err(gone);
            }
            found => found?,
        };
        let Some(entry) = self.entries.remove(i) else {
            // `find` only answers indices inside the list.
            return Err(Rejection::NothingHeld);
        };
        Self::unschedule(&mut self.deadlines, &entry);
        self.live -= 1;
        Ok(Acked {
            task: entry.task,
            attempt: entry.attempt,
            latency: now - entry.pushed_at,
        })
    }

    /// Moves a held task's lease end to `now` plus `lease` (or the task's
    /// own lease length), at most `max_lease`. Returns the new lease end.
    pub(super) fn extend(
        &mut self,
        task: TaskId,
        attempt: Option<u32>,
        lease: Option<Duration>,
        max_lease: Duration,
        now: Instant,
    ) -> Result<Instant, Rejection> {
        let i = self.find(Some(task), attempt)?;
        let entry = &mut self.entries[i];
        let until = now + lease.unwrap_or(entry.lease).min(max_lease);
        self.deadlines.remove(&(
            entry.lease_until,
            Deadline::Lease,
            entry.task,
            entry.attempt,
        ));
        entry.lease_until = until;
        self.deadlines
            .insert((until, Deadline::Lease, entry.task, entry.attempt));
        Ok(until)
    }

    /// A producer cancelled this attempt of a task. `credit` is the
    /// worker's, which bounds the tombstones kept.
    pub(super) fn cancel(&mut self, task: TaskId, attempt: u32, credit: u32) -> Cancel {
        match self.position_of(task, attempt) {
            Some(i) if self.entries[i].gone.is_none() => {
                self.bury(i, GoneReason::Cancelled, credit);
                Cancel::Taken
            }
            Some(_) => Cancel::AlreadyGone,
            None => Cancel::NotHeld,
        }
    }

    /// Takes back the next held task whose deadline is at or before `now`,
    /// earliest first, leaving a tombstone; `None` once nothing is due.
    /// `credit` is the worker's, which bounds the tombstones kept.
    pub(super) fn pop_expired(&mut self, now: Instant, credit: u32) -> Option<Expired> {
        while let Some(&(at, deadline, task, attempt)) = self.deadlines.first() {
            if at > now {
                return None;
            }
            self.deadlines.pop_first();
            // Defensive: the set holds only live entries' current deadlines,
            // but a deadline that matches nothing is simply dropped.
            let Some(i) = self.position_of(task, attempt) else {
                continue;
            };
            let entry = &self.entries[i];
            let current = entry.gone.is_none()
                && match deadline {
                    Deadline::Lease => entry.lease_until == at,
                    Deadline::Receipt => entry.receipt_until == Some(at),
                };
            if !current {
                continue;
            }
            self.bury(i, deadline.gone_reason(), credit);
            return Some(Expired {
                task,
                attempt,
                deadline,
            });
        }
        None
    }

    /// Empties the list, yielding the tasks still held (oldest first) and
    /// forgetting tombstones and deadlines.
    pub(super) fn drain_live(&mut self) -> impl Iterator<Item = Held> + '_ {
        self.deadlines.clear();
        self.live = 0;
        self.entries.drain(..).filter(|entry| entry.gone.is_none())
    }

    /// Finds the entry an op names (`None`: the oldest) and checks that it
    /// is still held, at the attempt named (`None`: whichever it is).
    fn find(&self, task: Option<TaskId>, attempt: Option<u32>) -> Result<usize, Rejection> {
        let i = match task {
            None => {
                if self.entries.is_empty() {
                    return Err(Rejection::NothingHeld);
                }
                0
            }
            Some(task) => self.position(task).ok_or(Rejection::NotHeld(task))?,
        };
        let entry = &self.entries[i];
        if let Some(why) = entry.gone {
            return Err(Rejection::Gone {
                task: entry.task,
                why,
            });
        }
        match attempt {
            Some(given) if given != entry.attempt => Err(Rejection::Stale {
                task: entry.task,
                given,
                held: entry.attempt,
            }),
            _ => Ok(i),
        }
    }

    /// The entry for `task`: the live one if any, else its latest
    /// tombstone. The same task can be here twice, dead and alive, when it
    /// came back to this worker after its lease ran out.
    fn position(&self, task: TaskId) -> Option<usize> {
        self.entries
            .iter()
            .position(|h| h.task == task && h.gone.is_none())
            .or_else(|| self.entries.iter().rposition(|h| h.task == task))
    }

    fn position_of(&self, task: TaskId, attempt: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|h| h.task == task && h.attempt == attempt)
    }

    fn unschedule(deadlines: &mut BTreeSet<(Instant, Deadline, TaskId, u32)>, entry: &Held) {
        let (task, attempt) = (entry.task, entry.attempt);
        deadlines.remove(&(entry.lease_until, Deadline::Lease, task, attempt));
        if let Some(at) = entry.receipt_until {
            deadlines.remove(&(at, Deadline::Receipt, task, attempt));
        }
    }

    /// Turns a held task into a tombstone. Tombstones beyond the worker's
    /// credit (and `MIN_TOMBSTONES`) are dropped oldest first.
    fn bury(&mut self, i: usize, why: GoneReason, credit: u32) {
        Self::unschedule(&mut self.deadlines, &self.entries[i]);
        self.entries[i].gone = Some(why);
        self.live -= 1;
        let limit = (credit as usize).max(MIN_TOMBSTONES);
        if self.entries.len() - self.live > limit
            && let Some(oldest) = self.entries.iter().position(|h| h.gone.is_some())
        {
            self.entries.remove(oldest);
        }
    }
}

#[cfg(test)]
mod tests;
