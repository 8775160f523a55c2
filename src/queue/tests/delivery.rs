//! Tests of delivery: waiting sessions served in order and bursts split
//! among them, priorities, delays and TTLs, tasks for one worker, and what
//! becomes of a task its worker fails, lets its lease run out on, or takes
//! away with it.

#![allow(clippy::unwrap_used)]

use super::*;

/// A burst is split evenly across the sessions already waiting, in the
/// order they asked, rather than filling the first one's credit.
#[test]
fn burst_is_split_across_waiting_sessions() {
    let mut q = queue(5);
    let workers: Vec<Worker> = ["a", "b", "c"].into_iter().map(worker).collect();
    let mut answers: Vec<_> = workers.iter().map(|w| lease(&mut q, w, 8)).collect();
    let tasks = submit_n(&mut q, 6);
    let got: Vec<Vec<TaskId>> = answers.iter_mut().map(ids).collect();
    assert_eq!(
        got,
        vec![
            tasks[0..2].to_vec(),
            tasks[2..4].to_vec(),
            tasks[4..6].to_vec()
        ]
    );
}

/// Waiting sessions are served first come, first served.
#[test]
fn waiting_sessions_are_served_in_arrival_order() {
    let mut q = queue(5);
    let (a, b) = (worker("a"), worker("b"));
    let mut first = lease(&mut q, &a, 1);
    let mut second = lease(&mut q, &b, 1);
    assert!(first.try_recv().is_err(), "nothing to hand out yet");
    let one = submit_n(&mut q, 1);
    assert_eq!(ids(&mut first), one);
    let two = submit_n(&mut q, 1);
    assert_eq!(ids(&mut second), two);
    assert_eq!(state(&q, one[0]), (TaskState::Delivered, 1));
}

/// Higher priority first; within a priority, first in first out.
#[test]
fn priorities_go_first() {
    let mut q = queue(5);
    let low = submit(&mut q, vec![task()])[0].clone().unwrap();
    let high = submit(
        &mut q,
        vec![NewTask {
            priority: 9,
            ..task()
        }],
    )[0]
    .clone()
    .unwrap();
    let low2 = submit_n(&mut q, 1)[0];
    let mut answer = lease(&mut q, &worker("a"), 3);
    assert_eq!(ids(&mut answer), vec![high, low, low2]);
}

/// Tasks a worker held when its lease ran out (or it went away) go back to
/// the front with the attempt counted; at max_attempts they are
/// dead-lettered instead, with the reason.
#[test]
fn released_tasks_are_redelivered_then_dead_lettered() {
    let mut q = queue(2);
    let a = worker("a");
    let tasks = submit_n(&mut q, 2);
    let mut answer = lease(&mut q, &a, 1);
    assert_eq!(ids(&mut answer), vec![tasks[0]]);
    q.handle(release(
        &a,
        vec![(tasks[0], 1)],
        ReleaseReason::LeaseExpired,
    ));
    assert_eq!(state(&q, tasks[0]), (TaskState::Pending, 1));

    let b = worker("b");
    let mut answer = lease(&mut q, &b, 1);
    assert_eq!(ids(&mut answer), vec![tasks[0]], "redelivered first");
    // A release naming the old attempt is stale and changes nothing.
    q.handle(release(&a, vec![(tasks[0], 1)], ReleaseReason::WorkerLost));
    assert_eq!(state(&q, tasks[0]), (TaskState::Delivered, 2));
    q.handle(release(&b, vec![(tasks[0], 2)], ReleaseReason::WorkerLost));
    let info = q.info(tasks[0]).unwrap();
    assert_eq!((info.state, info.attempts), (TaskState::DeadLettered, 2));
    assert_eq!(info.dead_letter_reason, Some(DeadLetterReason::MaxAttempts));
    assert!(
        info.result.error.contains("max_attempts"),
        "{}",
        info.result.error
    );
}

/// Tasks that never reached the worker (its session ended first) come back
/// without an attempt counted.
#[test]
fn undelivered_tasks_do_not_count_an_attempt() {
    let mut q = queue(1);
    let a = worker("a");
    let answer = lease(&mut q, &a, 4);
    drop(answer);
    let tasks = submit_n(&mut q, 1);
    assert_eq!(state(&q, tasks[0]), (TaskState::Pending, 0));

    let mut answer = lease(&mut q, &a, 4);
    assert_eq!(ids(&mut answer), tasks);
    q.handle(QueueMsg::Release(Release {
        session: a.session,
        worker: a.client.clone(),
        delivered: vec![],
        reason: ReleaseReason::WorkerLost,
        undelivered: tasks.clone(),
        session_ended: Some(true),
    }));
    assert_eq!(state(&q, tasks[0]), (TaskState::Pending, 0));
}

/// Acks: done stores the result and wakes watchers; a failure below
/// max_attempts requeues; an ack from another worker or for an old attempt
/// changes nothing; a permanent failure dead-letters at once.
#[test]
fn completions_apply_only_for_the_current_holder() {
    let mut q = queue(3);
    let a = worker("a");
    let tasks = submit_n(&mut q, 3);
    let mut answer = lease(&mut q, &a, 3);
    assert_eq!(ids(&mut answer), tasks);
    let (respond_to, mut watched) = oneshot::channel();
    q.handle(QueueMsg::Watch {
        task: tasks[0],
        respond_to,
    });
    assert!(watched.try_recv().is_err());

    q.handle(complete(&worker("intruder"), tasks[0], 1, Outcome::Done));
    q.handle(complete(&a, tasks[0], 7, Outcome::Done));
    assert_eq!(state(&q, tasks[0]), (TaskState::Delivered, 1));
    q.handle(complete(&a, tasks[0], 1, Outcome::Done));
    q.handle(complete(&a, tasks[1], 1, Outcome::Failed));
    q.handle(complete(&a, tasks[2], 1, Outcome::FailedPermanently));
    let done = watched.try_recv().unwrap().unwrap();
    assert_eq!(
        (done.state, done.result.ret.as_str()),
        (TaskState::Done, "r")
    );
    assert_eq!(state(&q, tasks[1]), (TaskState::Pending, 1));
    let dead = q.info(tasks[2]).unwrap();
    assert_eq!(
        dead.dead_letter_reason,
        Some(DeadLetterReason::FailedPermanently)
    );
}

/// A failure waits out its backoff before the next delivery; "retry later"
/// may name its own delay.
#[test]
fn failures_wait_for_their_backoff() {
    let mut p = policy(5);
    p.default_limits.retry = RetryPolicy {
        initial: Duration::from_secs(10),
        factor: 2.0,
        max: Duration::from_secs(100),
    };
    let mut q = queue_with(p);
    let a = worker("a");
    let tasks = submit_n(&mut q, 2);
    let mut answer = lease(&mut q, &a, 2);
    assert_eq!(ids(&mut answer), tasks);
    q.handle(complete(&a, tasks[0], 1, Outcome::Failed));
    q.handle(QueueMsg::Complete {
        worker: a.client.clone(),
        acks: vec![Completion {
            task: tasks[1],
            attempt: 1,
            outcome: Outcome::Retry,
            result: TaskResult::default(),
            retry_after: Some(Duration::from_secs(1)),
        }],
    });
    let failed = q.info(tasks[0]).unwrap();
    assert_eq!(failed.state, TaskState::Pending);
    assert!(failed.not_before_unix_ms > 0, "a backoff is pending");

    let mut answer = lease(&mut q, &a, 2);
    assert!(
        answer.try_recv().is_err(),
        "nothing is ready during the backoff"
    );
    let now = Instant::now();
    q.fire_timers(now + Duration::from_secs(2));
    q.dispatch();
    assert_eq!(
        ids(&mut answer),
        vec![tasks[1]],
        "its own 1 s delay is over"
    );
    let mut answer = lease(&mut q, &a, 2);
    q.fire_timers(now + Duration::from_secs(11));
    q.dispatch();
    assert_eq!(
        ids(&mut answer),
        vec![tasks[0]],
        "the 5-10 s backoff is over"
    );
}

/// A delayed task is not delivered before its time; a task whose TTL
/// passes unstarted is dead-lettered as expired.
#[test]
fn delayed_and_expiring_tasks() {
    let mut q = queue(5);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let later = submit(
        &mut q,
        vec![NewTask {
            not_before_unix_ms: now_ms + 60_000,
            ..task()
        }],
    )[0]
    .clone()
    .unwrap();
    let expiring = submit(
        &mut q,
        vec![NewTask {
            ttl: Some(Duration::from_secs(5)),
            priority: -1,
            ..task()
        }],
    )[0]
    .clone()
    .unwrap();
    q.fire_timers(Instant::now() + Duration::from_secs(6));
    let info = q.info(expiring).unwrap();
    assert_eq!(info.dead_letter_reason, Some(DeadLetterReason::Expired));
    let mut answer = lease(&mut q, &worker("a"), 5);
    assert!(
        answer.try_recv().is_err(),
        "the delayed task is not due yet"
    );
    q.fire_timers(Instant::now() + Duration::from_secs(61));
    q.dispatch();
    assert_eq!(ids(&mut answer), vec![later]);
}

/// A task for a worker no one has registered is refused; a task for a
/// known worker waits for that worker only, and is dead-lettered as
/// undeliverable if the worker stays away past the target TTL.
#[test]
fn targeted_tasks_wait_for_their_worker() {
    let mut q = queue(3);
    let (a, b) = (worker("a"), worker("b"));
    let refused = submit(&mut q, vec![for_client(&a.client)]);
    assert!(matches!(refused[0], Err(Error::NotFound { .. })));

    q.handle(QueueMsg::Attach {
        client: a.client.clone(),
    });
    let id = submit(&mut q, vec![for_client(&a.client)])[0]
        .clone()
        .unwrap();
    let mut for_b = lease(&mut q, &b, 4);
    assert!(for_b.try_recv().is_err(), "b must not get a's task");
    let mut for_a = lease(&mut q, &a, 4);
    let delivered = for_a.try_recv().unwrap();
    assert_eq!(
        (delivered[0].task_id, delivered[0].queue.clone()),
        (id, None)
    );

    // a goes away; a second task for it outlives the target TTL.
    q.handle(QueueMsg::Release(Release {
        session: a.session,
        worker: a.client.clone(),
        delivered: vec![(id, 1)],
        reason: ReleaseReason::WorkerLost,
        undelivered: vec![],
        session_ended: Some(false),
    }));
    q.fire_timers(Instant::now() + Duration::from_secs(31));
    assert_eq!(
        q.info(id).unwrap().dead_letter_reason,
        Some(DeadLetterReason::Undeliverable)
    );
}

/// A task's wait before its first delivery is recorded once: a lease
/// answer that never reached its session, handed back, does not count.
#[test]
fn first_wait_is_recorded_once() {
    let mut q = queue(3);
    let w = worker("w");
    // The session parks, then goes before the task arrives for it.
    drop(lease(&mut q, &w, 1));
    let id = submit_n(&mut q, 1)[0];
    assert_eq!(state(&q, id), (TaskState::Pending, 0));
    assert!(!q.wait_recorded(id), "not delivered: nothing recorded");
    let mut answer = lease(&mut q, &w, 1);
    assert_eq!(ids(&mut answer), vec![id]);
    assert!(q.wait_recorded(id));
    q.handle(QueueMsg::Release(Release {
        session: w.session,
        worker: w.client.clone(),
        delivered: vec![],
        reason: ReleaseReason::WorkerLost,
        undelivered: vec![id],
        session_ended: None,
    }));
    assert_eq!(state(&q, id), (TaskState::Pending, 0));
    assert!(
        q.wait_recorded(id),
        "handed back: still recorded, not again"
    );
}
