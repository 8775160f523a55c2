//! Tests of what submission refuses (a full queue, the server-wide limit,
//! draining), idempotency keys, the operator's actions on tasks (cancel,
//! dead-letter listing, requeue), and the sweep of idle queue states.

#![allow(clippy::unwrap_used)]

use super::*;

/// The same idempotency key returns the first task and creates nothing,
/// until its window is over.
#[test]
fn idempotent_submit() {
    let mut q = queue(5);
    let keyed = || NewTask {
        idempotency_key: Some("order-17".into()),
        ..task()
    };
    let first = submit(&mut q, vec![keyed()])[0].clone().unwrap();
    let again = submit(&mut q, vec![keyed()])[0].clone().unwrap();
    assert_eq!(first, again);
    q.fire_timers(Instant::now() + Duration::from_secs(11));
    let after = submit(&mut q, vec![keyed()])[0].clone().unwrap();
    assert_ne!(first, after);
}

/// The whole server refuses past its pending-task limit, whatever the queue.
#[test]
fn server_wide_limit_refuses() {
    let mut p = policy(5);
    p.max_pending_tasks = 2;
    let mut q = queue_with(p);
    let in_queue = |name: &str| NewTask {
        target: Some(Target::Queue(QueueName::parse(name).unwrap())),
        ..task()
    };
    let answers = submit(&mut q, vec![in_queue("a"), in_queue("b"), in_queue("c")]);
    assert!(answers[0].is_ok() && answers[1].is_ok());
    assert!(matches!(answers[2], Err(Error::ResourceExhausted(_))));
}

/// A full queue refuses with RESOURCE_EXHAUSTED and keeps what it has.
#[test]
fn full_queue_refuses() {
    let mut p = policy(5);
    p.default_limits.max_depth = 2;
    let mut q = queue_with(p);
    let answers = submit(&mut q, vec![task(), task(), task()]);
    assert!(answers[0].is_ok() && answers[1].is_ok());
    assert!(matches!(answers[2], Err(Error::ResourceExhausted(_))));
    // Delivering one makes room again.
    let mut answer = lease(&mut q, &worker("a"), 1);
    assert_eq!(ids(&mut answer).len(), 1);
    assert!(submit(&mut q, vec![task()])[0].is_ok());
}

/// Cancel: a pending task never runs; a delivered one reports its holder;
/// a finished one cannot be cancelled.
#[test]
fn cancel_pending_and_delivered() {
    let mut q = queue(5);
    let a = worker("a");
    let tasks = submit_n(&mut q, 2);
    let (respond_to, mut answer) = oneshot::channel();
    q.handle(QueueMsg::Cancel {
        task: tasks[1],
        respond_to,
    });
    let cancelled = answer.try_recv().unwrap().unwrap();
    assert_eq!(
        (cancelled.info.state, cancelled.holder),
        (TaskState::Cancelled, None)
    );

    let mut leased = lease(&mut q, &a, 5);
    assert_eq!(
        ids(&mut leased),
        vec![tasks[0]],
        "the cancelled task is skipped"
    );
    let (respond_to, mut answer) = oneshot::channel();
    q.handle(QueueMsg::Cancel {
        task: tasks[0],
        respond_to,
    });
    let cancelled = answer.try_recv().unwrap().unwrap();
    assert_eq!(cancelled.holder, Some((a.client.clone(), 1)));
    let (respond_to, mut answer) = oneshot::channel();
    q.handle(QueueMsg::Cancel {
        task: tasks[0],
        respond_to,
    });
    assert!(matches!(
        answer.try_recv().unwrap(),
        Err(Error::FailedPrecondition(_))
    ));
    // A late ack of the cancelled task changes nothing.
    q.handle(complete(&a, tasks[0], 1, Outcome::Done));
    assert_eq!(state(&q, tasks[0]).0, TaskState::Cancelled);
}

/// Dead letters are listed, and a requeued one runs again from attempt 1.
#[test]
fn dead_letters_list_and_requeue() {
    let mut q = queue(1);
    let a = worker("a");
    let tasks = submit_n(&mut q, 1);
    let mut answer = lease(&mut q, &a, 1);
    assert_eq!(ids(&mut answer), tasks);
    q.handle(complete(&a, tasks[0], 1, Outcome::Failed));
    let (respond_to, mut listed) = oneshot::channel();
    q.handle(QueueMsg::DeadLetters {
        queue: None,
        limit: 10,
        detail: crate::queue::Detail::Full,
        respond_to,
    });
    assert_eq!(listed.try_recv().unwrap()[0].id, tasks[0]);

    let (respond_to, mut requeued) = oneshot::channel();
    q.handle(QueueMsg::Requeue {
        task: tasks[0],
        respond_to,
    });
    assert_eq!(
        requeued.try_recv().unwrap().unwrap().state,
        TaskState::Pending
    );
    let mut answer = lease(&mut q, &a, 1);
    let delivery = answer.try_recv().unwrap();
    assert_eq!((delivery[0].task_id, delivery[0].attempt), (tasks[0], 1));
}

/// While draining, new tasks are refused and nothing already held is lost.
#[test]
fn draining_refuses_new_tasks() {
    let mut q = queue(3);
    let held = submit_n(&mut q, 1);
    q.handle(QueueMsg::Drain);
    let refused = submit(&mut q, vec![task()]);
    assert_eq!(refused, vec![Err(Error::ShuttingDown)]);
    assert_eq!(state(&q, held[0]), (TaskState::Pending, 0));
}

/// Queues that producers stop using do not pile up: once nothing is pending
/// in them (here their tasks expired), their state is swept.
#[test]
fn idle_queue_states_are_swept() {
    let mut q = queue(5);
    let tasks = (0..1500)
        .map(|i| NewTask {
            target: Some(Target::Queue(QueueName::parse(&format!("q{i}")).unwrap())),
            ttl: Some(Duration::from_secs(1)),
            ..task()
        })
        .collect();
    assert!(submit(&mut q, tasks).iter().all(Result::is_ok));
    q.fire_timers(Instant::now() + Duration::from_secs(2));
    q.dispatch();
    q.sweep();
    assert!(
        q.target_count() < 100,
        "{} target states kept",
        q.target_count()
    );
}
