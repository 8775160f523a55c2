//! Unit tests of the held-task list: tracking, lookup by id and attempt,
//! oldest-first acks, tombstones, deadlines and their expiry.

use super::*;

const LEASE: Duration = Duration::from_secs(30);
const RECEIPT: Duration = Duration::from_secs(5);
const MAX_LEASE: Duration = Duration::from_secs(600);
const CREDIT: u32 = 8;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A list holding `n` fresh tasks (attempt 1) pushed at `t0`, one
/// second apart, with receipts awaited when `receipt` is set.
fn holding(n: usize, t0: Instant, receipt: bool) -> (HeldTasks, Vec<TaskId>) {
    let mut list = HeldTasks::default();
    let ids: Vec<TaskId> = (0..n).map(|_| TaskId::generate()).collect();
    for (k, id) in ids.iter().enumerate() {
        let at = t0 + secs(k as u64);
        list.track(Held::pushed(*id, 1, LEASE, at, receipt.then_some(RECEIPT)));
    }
    (list, ids)
}

fn tombstones(list: &HeldTasks) -> usize {
    list.entries.len() - list.live
}

/// Tracking counts the task as held and schedules its lease and receipt.
#[test]
fn tracking_counts_and_schedules() {
    let t0 = Instant::now();
    let (list, _) = holding(3, t0, true);
    assert_eq!(list.live(), 3);
    assert_eq!(list.deadlines.len(), 6);
    assert_eq!(list.next_deadline(), Some(t0 + RECEIPT));
    let (list, _) = holding(2, t0, false);
    assert_eq!(list.deadlines.len(), 2);
    assert_eq!(list.next_deadline(), Some(t0 + LEASE));
}

/// An empty list has nothing to time and nothing for an id-less ack.
#[test]
fn empty_list_refuses_positional_acks() {
    let mut list = HeldTasks::default();
    let now = Instant::now();
    assert_eq!(list.next_deadline(), None);
    assert_eq!(list.complete(None, None, now), Err(Rejection::NothingHeld));
    assert_eq!(
        list.confirm_receipt(None, None, now),
        Err(Rejection::NothingHeld)
    );
    assert_eq!(list.pop_expired(now + secs(3600), CREDIT), None);
}

/// Acks by id find their task wherever it is in the list, and the
/// attempt fences off acks for an earlier delivery.
#[test]
fn finds_by_id_and_attempt() {
    let t0 = Instant::now();
    let (list, ids) = holding(3, t0, false);
    assert_eq!(list.find(Some(ids[1]), None), Ok(1));
    assert_eq!(list.find(Some(ids[2]), Some(1)), Ok(2));
    assert_eq!(
        list.find(Some(ids[2]), Some(2)),
        Err(Rejection::Stale {
            task: ids[2],
            given: 2,
            held: 1
        })
    );
    let stranger = TaskId::generate();
    assert_eq!(
        list.find(Some(stranger), None),
        Err(Rejection::NotHeld(stranger))
    );
}

/// Completing by id removes that task only, and reports its latency.
#[test]
fn completes_by_id() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(3, t0, false);
    let acked = list.complete(Some(ids[1]), Some(1), t0 + secs(10));
    assert_eq!(
        acked,
        Ok(Acked {
            task: ids[1],
            attempt: 1,
            latency: secs(9)
        })
    );
    assert_eq!(list.live(), 2);
    assert_eq!(
        list.complete(Some(ids[1]), None, t0 + secs(11)),
        Err(Rejection::NotHeld(ids[1]))
    );
    assert_eq!(list.find(Some(ids[0]), None), Ok(0));
    assert_eq!(list.find(Some(ids[2]), None), Ok(1));
}

/// A stale ack changes nothing: the worker still holds the task.
#[test]
fn stale_ack_leaves_the_task_held() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(1, t0, true);
    let stale = Some(Rejection::Stale {
        task: ids[0],
        given: 7,
        held: 1,
    });
    assert_eq!(list.complete(Some(ids[0]), Some(7), t0).err(), stale);
    assert_eq!(list.confirm_receipt(None, Some(7), t0).err(), stale);
    assert_eq!(list.complete(None, Some(7), t0).err(), stale);
    assert_eq!(list.live(), 1);
    assert_eq!(list.deadlines.len(), 2);
}

/// Seed clients name no task: each ack takes the oldest one still held.
#[test]
fn idless_acks_take_the_oldest_first() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(3, t0, false);
    for id in &ids {
        let acked = list.complete(None, None, t0 + secs(20));
        assert_eq!(acked.map(|a| a.task), Ok(*id));
    }
    assert_eq!(list.live(), 0);
    assert_eq!(list.next_deadline(), None);
    assert_eq!(
        list.complete(None, None, t0 + secs(21)),
        Err(Rejection::NothingHeld)
    );
}

/// A receipt is counted once: it clears the receipt deadline, reports
/// how long it took, and a repeat is accepted but reports nothing.
#[test]
fn receipt_confirms_once() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(2, t0, true);
    assert_eq!(
        list.confirm_receipt(Some(ids[1]), Some(1), t0 + secs(3)),
        Ok(Some(secs(2)))
    );
    assert_eq!(
        list.confirm_receipt(Some(ids[1]), None, t0 + secs(4)),
        Ok(None)
    );
    // An id-less receipt confirms the oldest.
    assert_eq!(
        list.confirm_receipt(None, None, t0 + secs(4)),
        Ok(Some(secs(4)))
    );
    assert_eq!(list.live(), 2);
    assert_eq!(list.deadlines.len(), 2);
    assert_eq!(list.next_deadline(), Some(t0 + LEASE));
}

/// A cancelled task becomes a tombstone that explains itself to a late
/// ack, and a second cancel or an unknown one is told apart.
#[test]
fn cancel_leaves_a_tombstone() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(2, t0, true);
    assert_eq!(list.cancel(ids[0], 2, CREDIT), Cancel::NotHeld);
    assert_eq!(list.cancel(ids[0], 1, CREDIT), Cancel::Taken);
    assert_eq!(list.live(), 1);
    assert_eq!(list.cancel(ids[0], 1, CREDIT), Cancel::AlreadyGone);
    let gone = Some(Rejection::Gone {
        task: ids[0],
        why: GoneReason::Cancelled,
    });
    assert_eq!(list.complete(Some(ids[0]), None, t0).err(), gone);
    assert_eq!(list.confirm_receipt(Some(ids[0]), None, t0).err(), gone);
    assert_eq!(list.extend(ids[0], None, None, MAX_LEASE, t0).err(), gone);
    // Its deadlines went with it.
    assert_eq!(list.deadlines.len(), 2);
    assert_eq!(list.next_deadline(), Some(t0 + secs(1) + RECEIPT));
    assert_eq!(list.cancel(TaskId::generate(), 1, CREDIT), Cancel::NotHeld);
}

/// An id-less ack that lines up with a tombstone is refused with the
/// reason and consumes it, so the next one meets the next task; an
/// id-less receipt does not consume it.
#[test]
fn positional_ack_consumes_its_tombstone() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(2, t0, false);
    assert_eq!(list.cancel(ids[0], 1, CREDIT), Cancel::Taken);
    let gone = Some(Rejection::Gone {
        task: ids[0],
        why: GoneReason::Cancelled,
    });
    assert_eq!(list.confirm_receipt(None, None, t0).err(), gone);
    assert_eq!(list.entries.len(), 2);
    assert_eq!(list.complete(None, None, t0).err(), gone);
    assert_eq!(list.entries.len(), 1);
    assert_eq!(
        list.complete(None, None, t0 + secs(2)).map(|a| a.task),
        Ok(ids[1])
    );
    assert!(list.entries.is_empty());
}

/// An ack by id for a tombstone is refused but keeps it: positional
/// acks still need it to stay aligned.
#[test]
fn ack_by_id_keeps_the_tombstone() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(2, t0, false);
    list.cancel(ids[0], 1, CREDIT);
    assert!(list.complete(Some(ids[0]), None, t0).is_err());
    assert_eq!(list.entries.len(), 2);
    assert!(list.complete(None, None, t0).is_err());
    assert_eq!(list.complete(None, None, t0).map(|a| a.task), Ok(ids[1]));
}

/// A task redelivered to the same worker is here twice: the live entry
/// answers acks by id; once it too is gone, the latest tombstone does.
#[test]
fn live_entry_wins_over_its_tombstone() {
    let t0 = Instant::now();
    let mut list = HeldTasks::default();
    let id = TaskId::generate();
    list.track(Held::pushed(id, 1, secs(10), t0, None));
    assert_eq!(
        list.pop_expired(t0 + secs(10), CREDIT).map(|e| e.attempt),
        Some(1)
    );
    list.track(Held::pushed(id, 2, secs(10), t0 + secs(11), None));
    assert_eq!(list.find(Some(id), None), Ok(1));
    assert_eq!(
        list.find(Some(id), Some(1)),
        Err(Rejection::Stale {
            task: id,
            given: 1,
            held: 2
        })
    );
    assert_eq!(list.cancel(id, 2, CREDIT), Cancel::Taken);
    assert_eq!(
        list.find(Some(id), None),
        Err(Rejection::Gone {
            task: id,
            why: GoneReason::Cancelled
        })
    );
}

/// Deadlines come out earliest first across tasks and kinds, and a
/// lease ties before a receipt due at the same instant.
#[test]
fn next_deadline_is_the_earliest() {
    let t0 = Instant::now();
    let mut list = HeldTasks::default();
    let (a, b, c) = (TaskId::generate(), TaskId::generate(), TaskId::generate());
    list.track(Held::pushed(a, 1, secs(50), t0, None));
    assert_eq!(list.next_deadline(), Some(t0 + secs(50)));
    list.track(Held::pushed(b, 1, secs(20), t0, Some(secs(40))));
    assert_eq!(list.next_deadline(), Some(t0 + secs(20)));
    list.track(Held::pushed(c, 1, secs(60), t0, Some(secs(20))));
    assert_eq!(list.next_deadline(), Some(t0 + secs(20)));
    let now = t0 + secs(20);
    let first = list.pop_expired(now, CREDIT);
    assert_eq!(
        first,
        Some(Expired {
            task: b,
            attempt: 1,
            deadline: Deadline::Lease
        })
    );
    let second = list.pop_expired(now, CREDIT);
    assert_eq!(
        second,
        Some(Expired {
            task: c,
            attempt: 1,
            deadline: Deadline::Receipt
        })
    );
    assert_eq!(list.pop_expired(now, CREDIT), None);
    // b's receipt went with it; only a's lease is left.
    assert_eq!(list.next_deadline(), Some(t0 + secs(50)));
    assert_eq!(list.deadlines.len(), 1);
}

/// Only deadlines at or before `now` fire, each task once, and the
/// task is a tombstone saying which deadline it missed.
#[test]
fn expiry_returns_the_due_entries() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(4, t0, true);
    // Receipts fall due at t0+5..t0+8; confirm the second one.
    list.confirm_receipt(Some(ids[1]), None, t0 + secs(2)).ok();
    let now = t0 + secs(7);
    let mut fired = Vec::new();
    while let Some(expired) = list.pop_expired(now, CREDIT) {
        fired.push(expired);
    }
    let missed = |task| Expired {
        task,
        attempt: 1,
        deadline: Deadline::Receipt,
    };
    assert_eq!(fired, vec![missed(ids[0]), missed(ids[2])]);
    assert_eq!(list.live(), 2);
    assert_eq!(
        list.find(Some(ids[0]), None),
        Err(Rejection::Gone {
            task: ids[0],
            why: GoneReason::ReceiptMissed
        })
    );
    assert_eq!(list.find(Some(ids[1]), None), Ok(1));
    // Next up: ids[3]'s receipt, then the two live leases.
    assert_eq!(list.next_deadline(), Some(t0 + secs(3) + RECEIPT));
    assert_eq!(list.deadlines.len(), 3);
    let later = t0 + secs(1) + LEASE;
    let fired: Vec<_> = std::iter::from_fn(|| list.pop_expired(later, CREDIT)).collect();
    assert_eq!(
        fired,
        vec![
            missed(ids[3]),
            Expired {
                task: ids[1],
                attempt: 1,
                deadline: Deadline::Lease
            }
        ]
    );
    assert_eq!(
        list.find(Some(ids[1]), None),
        Err(Rejection::Gone {
            task: ids[1],
            why: GoneReason::LeaseExpired
        })
    );
    assert_eq!(list.live(), 0);
    assert_eq!(list.next_deadline(), None);
}

/// Extending moves the lease deadline (the old one no longer fires),
/// defaults to the task's own lease and is capped at the maximum.
#[test]
fn extend_moves_the_lease() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(1, t0, false);
    let now = t0 + secs(20);
    assert_eq!(
        list.extend(ids[0], Some(1), None, MAX_LEASE, now),
        Ok(now + LEASE)
    );
    assert_eq!(list.deadlines.len(), 1);
    assert_eq!(list.next_deadline(), Some(now + LEASE));
    assert_eq!(list.pop_expired(t0 + LEASE, CREDIT), None);
    assert_eq!(
        list.extend(ids[0], None, Some(secs(3600)), MAX_LEASE, now),
        Ok(now + MAX_LEASE)
    );
    assert_eq!(
        list.extend(ids[0], None, Some(secs(2)), MAX_LEASE, now),
        Ok(now + secs(2))
    );
    assert_eq!(list.deadlines.len(), 1);
    assert_eq!(
        list.extend(ids[0], Some(2), None, MAX_LEASE, now),
        Err(Rejection::Stale {
            task: ids[0],
            given: 2,
            held: 1
        })
    );
    assert_eq!(
        list.pop_expired(now + secs(2), CREDIT).map(|e| e.deadline),
        Some(Deadline::Lease)
    );
}

/// Every way a task leaves takes its deadlines along: nothing stale
/// fires later.
#[test]
fn removal_leaves_no_stale_deadline() {
    let t0 = Instant::now();
    let far = t0 + secs(3600);
    let (mut list, ids) = holding(3, t0, true);
    list.complete(Some(ids[0]), None, t0).ok();
    list.cancel(ids[1], 1, CREDIT);
    list.confirm_receipt(Some(ids[2]), None, t0).ok();
    list.complete(Some(ids[2]), None, t0).ok();
    assert_eq!(list.live(), 0);
    assert!(list.deadlines.is_empty());
    assert_eq!(list.next_deadline(), None);
    assert_eq!(list.pop_expired(far, CREDIT), None);
}

/// Draining yields only the tasks still held, in order, and leaves an
/// empty list with nothing scheduled.
#[test]
fn drain_yields_live_tasks_only() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(4, t0, true);
    list.cancel(ids[1], 1, CREDIT);
    let drained: Vec<(TaskId, u32)> = list.drain_live().map(|h| (h.task(), h.attempt())).collect();
    assert_eq!(drained, vec![(ids[0], 1), (ids[2], 1), (ids[3], 1)]);
    assert_eq!(list.live(), 0);
    assert!(list.entries.is_empty());
    assert_eq!(list.next_deadline(), None);
}

/// A taken-over task awaits no receipt: only its lease is scheduled.
#[test]
fn received_task_awaits_no_receipt() {
    let t0 = Instant::now();
    let mut entry = Held::pushed(TaskId::generate(), 3, LEASE, t0, Some(RECEIPT));
    entry.mark_received();
    let mut list = HeldTasks::default();
    list.track(entry);
    assert_eq!(list.deadlines.len(), 1);
    assert_eq!(list.next_deadline(), Some(t0 + LEASE));
    assert_eq!(list.confirm_receipt(None, Some(3), t0), Ok(None));
}

/// Tombstones are capped at the worker's credit, but never below the
/// minimum; the oldest goes first and then reads as never held.
#[test]
fn tombstones_are_capped_oldest_first() {
    let t0 = Instant::now();
    let n = MIN_TOMBSTONES + 2;
    let (mut list, ids) = holding(n, t0, false);
    for id in &ids {
        assert_eq!(list.cancel(*id, 1, 1), Cancel::Taken);
    }
    assert_eq!(list.live(), 0);
    assert_eq!(tombstones(&list), MIN_TOMBSTONES);
    assert_eq!(
        list.find(Some(ids[0]), None),
        Err(Rejection::NotHeld(ids[0]))
    );
    assert_eq!(
        list.find(Some(ids[1]), None),
        Err(Rejection::NotHeld(ids[1]))
    );
    assert!(matches!(
        list.find(Some(ids[2]), None),
        Err(Rejection::Gone { .. })
    ));

    // A worker with more credit keeps more of them.
    let credit = (MIN_TOMBSTONES + 4) as u32;
    let (mut list, ids) = holding(n + 4, t0, false);
    for id in &ids {
        list.cancel(*id, 1, credit);
    }
    assert_eq!(tombstones(&list), credit as usize);
}

/// Tombstones do not count as held, so they take no credit.
#[test]
fn tombstones_take_no_credit() {
    let t0 = Instant::now();
    let (mut list, ids) = holding(3, t0, true);
    list.pop_expired(t0 + RECEIPT, CREDIT);
    list.cancel(ids[2], 1, CREDIT);
    assert_eq!(list.live(), 1);
    assert_eq!(tombstones(&list), 2);
}
