//! Delivery that survives misbehaving workers: receipts, leases and fencing,
//! credit, liveness and keepalives, resume, targeting and broadcast,
//! scheduling, idempotency. Every test drives real workers against the real
//! server and waits on events.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestWorker, WorkerOptions, eventually, sample, test_config, within};
use contact_server::proto::{
    self, Kind, Outcome,
    client_msg::Op,
    v1::{self, TaskState},
};
use tonic::Code;

fn ack_op(task_id: &str, attempt: u32) -> Op {
    Op::Ack(proto::Result {
        task_id: task_id.into(),
        attempt,
        ..Default::default()
    })
}

fn receipt_op(task_id: &str, attempt: u32) -> Op {
    Op::Ack(proto::Result {
        task_id: task_id.into(),
        attempt,
        receipt: true,
        ..Default::default()
    })
}

async fn submit(server: &TestServer, request: v1::SubmitRequest) -> Result<String, tonic::Status> {
    within("submit", server.tasks().await.submit(request))
        .await
        .map(|reply| reply.into_inner().task_id)
}

/// A worker that asked for receipts but does not confirm one loses the task
/// to another worker within the receipt timeout (and is told); a worker that
/// confirms keeps it.
#[tokio::test]
async fn missing_receipt_sends_the_task_elsewhere() {
    let mut config = test_config();
    config.workers.receipt_timeout_ms = 200;
    let server = TestServer::with_config(config).await;
    let mut silent = TestWorker::connect(&server, WorkerOptions::id("silent").receipts()).await;
    let id = server.submit("default", "confirm me").await;
    let task = silent.next_task().await;
    assert!(task.receipt_required);
    let mut other = TestWorker::connect(&server, WorkerOptions::id("other").receipts()).await;

    let cancel = silent.next_task().await;
    assert_eq!(
        (cancel.kind(), cancel.task_id.as_str()),
        (Kind::Cancel, id.as_str())
    );
    let again = other.next_task().await;
    assert_eq!((again.task_id.as_str(), again.attempt), (id.as_str(), 2));
    let mut control = other.control().await;
    assert_eq!(control.op(receipt_op(&id, 2)).await.code, 0);
    assert_eq!(control.op(ack_op(&id, 2)).await.code, 0);
    assert_eq!(server.wait_finished(&id).await.worker_id, "other");

    // The silent worker's late receipt and ack are refused, not applied.
    let mut late = silent.control().await;
    let refused = late.op(ack_op(&id, 1)).await;
    assert_eq!(refused.code, Code::FailedPrecondition as i32, "{refused:?}");
    server.stop().await;
}

/// A lease that runs out sends the task to another worker as attempt 2;
/// the first worker's late ack for attempt 1 is refused and never applied.
/// An extension keeps a long task with its worker.
#[tokio::test]
async fn expired_lease_redelivers_and_fences_the_old_attempt() {
    let server = TestServer::start().await;
    let before = server.scrape().await;
    let mut slow = TestWorker::connect(&server, WorkerOptions::id("slow")).await;
    let short = v1::SubmitRequest {
        text: "short lease".into(),
        lease_ms: 300,
        ..Default::default()
    };
    let extended_id = submit(&server, short.clone()).await.unwrap();
    let extended = slow.next_task().await;
    assert_eq!(
        (extended.task_id.as_str(), extended.lease_ms),
        (extended_id.as_str(), 300)
    );
    let mut control = slow.control().await;
    let extend = control
        .op(Op::Extend(proto::Extend {
            task_id: extended_id.clone(),
            attempt: 1,
            lease_ms: 10_000,
        }))
        .await;
    assert_eq!(extend.code, 0, "{extend:?}");

    let expiring_id = submit(&server, short).await.unwrap();
    assert_eq!(slow.next_task().await.task_id, expiring_id);
    let mut fast = TestWorker::connect(&server, WorkerOptions::id("fast")).await;
    // Only the unextended task comes back, once its 300 ms lease is over.
    let again = fast.next_task().await;
    assert_eq!(
        (again.task_id.as_str(), again.attempt),
        (expiring_id.as_str(), 2)
    );

    let stale = control.op(ack_op(&expiring_id, 1)).await;
    assert_eq!(stale.code, Code::FailedPrecondition as i32, "{stale:?}");
    assert!(stale.error.contains("lease expired"), "{stale:?}");
    assert_eq!(server.get(&expiring_id).await.state(), TaskState::Delivered);
    fast.ack(&expiring_id, Outcome::Done, "second run").await;
    assert_eq!(server.wait_finished(&expiring_id).await.ret, "second run");

    // The extended task outlived its original lease and is still the slow
    // worker's to finish.
    assert_eq!(control.op(ack_op(&extended_id, 1)).await.code, 0);
    assert_eq!(server.wait_finished(&extended_id).await.worker_id, "slow");

    // Other tests in this process share the recorder, so each count rose by
    // at least this test's one lease and one stale ack.
    let after = server.scrape().await;
    for name in [
        "contact_leases_expired_total",
        "contact_stale_acks_refused_total",
    ] {
        let rise = sample(&after, name).unwrap_or(0.0) - sample(&before, name).unwrap_or(0.0);
        assert!(rise >= 1.0, "{name} rose by {rise}: {after}");
    }
    server.stop().await;
}

/// A worker changes its credit at runtime: raising it brings more tasks,
/// 0 pauses it, and a credit above the cap is refused in the reply.
#[tokio::test]
async fn credit_can_be_raised_lowered_and_paused() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").max_in_flight(1)).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(server.submit("default", &format!("t{i}")).await);
    }
    assert_eq!(worker.next_task().await.task_id, ids[0]);
    assert_eq!(server.get(&ids[1]).await.state(), TaskState::Pending);
    let mut control = worker.control().await;
    let raise = control
        .op(Op::Credit(proto::Credit { max_in_flight: 3 }))
        .await;
    assert_eq!(raise.code, 0);
    assert_eq!(worker.next_task().await.task_id, ids[1]);
    assert_eq!(worker.next_task().await.task_id, ids[2]);

    assert_eq!(
        control
            .op(Op::Credit(proto::Credit { max_in_flight: 0 }))
            .await
            .code,
        0
    );
    for id in &ids[..3] {
        assert_eq!(control.op(ack_op(id, 0)).await.code, 0);
    }
    // Paused: everything acked, nothing new pushed.
    assert_eq!(server.get(&ids[3]).await.state(), TaskState::Pending);
    let too_much = control
        .op(Op::Credit(proto::Credit {
            max_in_flight: 1_000_000,
        }))
        .await;
    assert_eq!(too_much.code, Code::InvalidArgument as i32);
    assert_eq!(
        control
            .op(Op::Credit(proto::Credit { max_in_flight: 2 }))
            .await
            .code,
        0
    );
    assert_eq!(worker.next_task().await.task_id, ids[3]);
    assert_eq!(worker.next_task().await.task_id, ids[4]);
    // Operators see the credit the worker has now, not the one it started with.
    let listed = within(
        "list workers",
        server.admin().await.list_workers(v1::ListWorkersRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(listed.workers.len(), 1);
    assert_eq!(listed.workers[0].max_in_flight, 2);
    server.stop().await;
}

/// A queue at its maximum depth refuses new tasks with RESOURCE_EXHAUSTED
/// (on Submit and in place on SubmitStream) and keeps serving.
#[tokio::test]
async fn full_queue_answers_resource_exhausted() {
    let mut config = test_config();
    config.queues.insert(
        "small".into(),
        contact_server::config::QueueConfig {
            max_queue_depth: Some(2),
            ..Default::default()
        },
    );
    let server = TestServer::with_config(config).await;
    let small = |text: &str| v1::SubmitRequest {
        queue: "small".into(),
        text: text.into(),
        ..Default::default()
    };
    submit(&server, small("1")).await.unwrap();
    submit(&server, small("2")).await.unwrap();
    let full = submit(&server, small("3")).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    let mut replies = within(
        "submit stream",
        server.tasks().await.submit_stream(tokio_stream::iter(vec![
            small("4"),
            v1::SubmitRequest::default(),
        ])),
    )
    .await
    .unwrap()
    .into_inner();
    let first = within("reply", replies.message()).await.unwrap().unwrap();
    assert_eq!(first.error.unwrap().code, Code::ResourceExhausted as i32);
    let second = within("reply", replies.message()).await.unwrap().unwrap();
    assert!(second.error.is_none(), "other queues still take tasks");
    server.stop().await;
}

/// A worker that asked for keepalives gets KIND_KEEPALIVE on an idle
/// stream; if it then goes silent past the liveness timeout, its stream is
/// closed and its task is redelivered within seconds.
#[tokio::test]
async fn silent_worker_is_expired_and_its_task_redelivered() {
    let mut config = test_config();
    config.workers.liveness_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut zombie =
        TestWorker::connect(&server, WorkerOptions::id("zombie").keepalive_ms(100)).await;
    let keepalive = zombie.next_task().await;
    assert_eq!(keepalive.kind(), Kind::Keepalive);
    let id = server.submit("default", "held by a zombie").await;
    loop {
        let message = zombie.next_task().await;
        if message.kind() == Kind::Task {
            assert_eq!(message.task_id, id);
            break;
        }
    }
    let mut healthy = TestWorker::connect(&server, WorkerOptions::id("healthy")).await;
    // The zombie never speaks again: its stream ends and the task moves on.
    let ended = loop {
        match zombie.next_event().await {
            Ok(Some(message)) => assert_ne!(message.kind(), Kind::Task),
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let again = healthy.next_task().await;
    assert_eq!((again.task_id.as_str(), again.attempt), (id.as_str(), 2));
    server.stop().await;
}

/// Seed-style workers (no keepalive asked) never receive anything but tasks
/// and are never expired for silence.
#[tokio::test]
async fn plain_workers_get_only_tasks() {
    let mut config = test_config();
    config.workers.liveness_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut plain = TestWorker::connect(&server, WorkerOptions::id("plain")).await;
    let mut extended =
        TestWorker::connect(&server, WorkerOptions::id("ext").keepalive_ms(100)).await;
    // Let the extended worker see keepalives (proof that time passes) while
    // it keeps itself alive with heartbeats, for longer than the liveness timeout.
    let mut control = extended.control().await;
    let mut keepalives = 0;
    while keepalives < 15 {
        let message = extended.next_task().await;
        assert_eq!(message.kind(), Kind::Keepalive);
        keepalives += 1;
        control.send(proto::ClientMsg::default()).await;
    }
    let id = server.submit("default", "for anyone").await;
    let task = tokio::select! {
        task = plain.next_task() => task,
        task = async {
            loop {
                let message = extended.next_task().await;
                if message.kind() == Kind::Task {
                    return message;
                }
            }
        } => task,
    };
    assert_eq!(
        (task.task_id.as_str(), task.kind()),
        (id.as_str(), Kind::Task)
    );
    server.stop().await;
}

/// A worker whose stream drops resumes within the grace period: the tasks
/// it still holds stay its own (its acks for them are accepted), and the
/// rest are redelivered.
#[tokio::test]
async fn dropped_worker_resumes_what_it_holds() {
    let mut config = test_config();
    config.workers.resume_grace_secs = 30;
    let server = TestServer::with_config(config).await;
    let mut first = TestWorker::connect(&server, WorkerOptions::id("r")).await;
    let kept = server.submit("default", "kept").await;
    let lost = server.submit("default", "lost").await;
    assert_eq!(first.next_task().await.task_id, kept);
    assert_eq!(first.next_task().await.task_id, lost);
    let session = first.session_id.clone();
    drop(first);

    // Naming its session, the worker takes over even if the old stream has
    // not been seen to drop yet.
    let options = WorkerOptions::id("r").resume(&session, &[(kept.as_str(), 1)]);
    let mut resumed = TestWorker::connect(&server, options).await;
    assert_eq!(resumed.resumed, 1);
    assert_ne!(resumed.session_id, session);
    // The task it did not claim comes back (to the only worker there is).
    let again = resumed.next_task().await;
    assert_eq!((again.task_id.as_str(), again.attempt), (lost.as_str(), 2));
    let mut control = resumed.control().await;
    assert_eq!(control.op(ack_op(&kept, 1)).await.code, 0);
    assert_eq!(server.wait_finished(&kept).await.attempts, 1);
    let metrics = server.scrape().await;
    assert!(
        metrics.contains("contact_sessions_resumed_total 1"),
        "{metrics}"
    );
    server.stop().await;
}

/// No resume within the grace period: everything the worker held is
/// redelivered.
#[tokio::test]
async fn no_resume_in_time_redelivers_everything() {
    let mut config = test_config();
    config.workers.resume_grace_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut gone = TestWorker::connect(&server, WorkerOptions::id("gone")).await;
    let id = server.submit("default", "orphan").await;
    assert_eq!(gone.next_task().await.task_id, id);
    drop(gone);
    // The heir is there at once, but the task only comes after the grace.
    let mut heir = TestWorker::connect(&server, WorkerOptions::id("heir")).await;
    let again = heir.next_task().await;
    assert_eq!((again.task_id.as_str(), again.attempt), (id.as_str(), 2));
    server.stop().await;
}

/// A broadcast reaches every connected worker of its queue, and their
/// results are collected under the broadcast id.
#[tokio::test]
async fn broadcast_reaches_every_worker() {
    let server = TestServer::start().await;
    let mut workers = common::workers(&server, 3, 4).await;
    let mut bystander =
        TestWorker::connect(&server, WorkerOptions::id("elsewhere").queues("other")).await;
    let mut tasks = server.tasks().await;
    let broadcast_id = within(
        "broadcast",
        tasks.broadcast(v1::BroadcastRequest {
            text: "flush caches".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .broadcast_id;
    let mut copy_ids = Vec::new();
    for worker in &mut workers {
        let copy = worker.next_task().await;
        assert_eq!(
            (copy.broadcast_id.as_str(), copy.task.as_str()),
            (broadcast_id.as_str(), "flush caches")
        );
        worker
            .ack(
                &copy.task_id,
                Outcome::Done,
                &format!("flushed by {}", worker.id),
            )
            .await;
        copy_ids.push(copy.task_id);
    }
    for id in &copy_ids {
        server.wait_finished(id).await;
    }
    let info = within(
        "get broadcast",
        tasks.get_broadcast(v1::GetBroadcastRequest {
            broadcast_id: broadcast_id.clone(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let mut results: Vec<String> = info.copies.iter().map(|c| c.ret.clone()).collect();
    results.sort();
    assert_eq!(
        results,
        vec![
            "flushed by worker-0",
            "flushed by worker-1",
            "flushed by worker-2"
        ]
    );
    // The worker of another queue got no copy: its next task is a plain one.
    let id = submit(
        &server,
        v1::SubmitRequest {
            queue: "other".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(bystander.next_task().await.task_id, id);
    server.stop().await;
}

/// Scheduling: a delayed task waits its time, an unstarted task with a TTL
/// expires into the dead letters, higher priority goes first.
#[tokio::test]
async fn delayed_expiring_and_prioritised_tasks() {
    let server = TestServer::start().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let delayed = submit(
        &server,
        v1::SubmitRequest {
            text: "later".into(),
            not_before_unix_ms: now_ms + 300,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let expiring = submit(
        &server,
        v1::SubmitRequest {
            queue: "nobody-listens".into(),
            ttl_ms: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let info = server.get(&delayed).await;
    assert!(info.not_before_unix_ms >= now_ms + 300, "{info:?}");
    let low = submit(
        &server,
        v1::SubmitRequest {
            text: "low".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let high = submit(
        &server,
        v1::SubmitRequest {
            text: "high".into(),
            priority: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    assert_eq!(worker.next_task().await.task_id, high);
    assert_eq!(worker.next_task().await.task_id, low);
    let later = worker.next_task().await;
    assert_eq!(later.task_id, delayed);
    let received_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(received_ms >= now_ms + 300, "delivered before its time");

    let dead = server.wait_finished(&expiring).await;
    assert_eq!(
        (dead.state(), dead.dead_letter_reason.as_str()),
        (TaskState::DeadLettered, "expired")
    );
    server.stop().await;
}

/// Cancelling a delivered task tells a worker that asked for control
/// messages, and its ack is then refused; a dead letter can be listed and
/// requeued.
#[tokio::test]
async fn cancel_dead_letters_and_requeue() {
    let mut config = test_config();
    config.tasks.max_attempts = 1;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").receipts()).await;
    let mut tasks = server.tasks().await;
    let doomed = server.submit("default", "cancel me").await;
    assert_eq!(worker.next_task().await.task_id, doomed);
    let cancelled = within(
        "cancel",
        tasks.cancel(v1::CancelRequest {
            task_id: doomed.clone(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(cancelled.state(), TaskState::Cancelled);
    let notice = worker.next_task().await;
    assert_eq!(
        (notice.kind(), notice.task_id.as_str()),
        (Kind::Cancel, doomed.as_str())
    );
    let mut control = worker.control().await;
    assert_eq!(
        control.op(ack_op(&doomed, 1)).await.code,
        Code::FailedPrecondition as i32
    );
    let again = within(
        "cancel again",
        tasks.cancel(v1::CancelRequest {
            task_id: doomed.clone(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let failing = server.submit("default", "fail for good").await;
    let task = worker.next_task().await;
    assert_eq!(task.task_id, failing);
    assert_eq!(control.op(receipt_op(&failing, 1)).await.code, 0);
    let fail = control
        .op(Op::Ack(proto::Result {
            task_id: failing.clone(),
            outcome: Outcome::Failed.into(),
            error: "broken input".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(fail.code, 0);
    let dead = server.wait_finished(&failing).await;
    assert_eq!(
        (dead.dead_letter_reason.as_str(), dead.error.as_str()),
        ("max_attempts", "broken input")
    );
    let listed = within(
        "dead letters",
        tasks.list_dead_letters(v1::ListDeadLettersRequest::default()),
    )
    .await
    .unwrap()
    .into_inner()
    .tasks;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].task_id, failing);
    within(
        "requeue",
        tasks.requeue(v1::RequeueRequest {
            task_id: failing.clone(),
        }),
    )
    .await
    .unwrap();
    let retried = worker.next_task().await;
    assert_eq!(
        (retried.task_id.as_str(), retried.attempt),
        (failing.as_str(), 1)
    );
    server.stop().await;
}

/// Submitting the same idempotency key twice returns the first task's id.
#[tokio::test]
async fn idempotent_submit_returns_the_first_task() {
    let server = TestServer::start().await;
    let keyed = v1::SubmitRequest {
        text: "once".into(),
        idempotency_key: "order-17".into(),
        ..Default::default()
    };
    let first = submit(&server, keyed.clone()).await.unwrap();
    let second = submit(&server, keyed).await.unwrap();
    assert_eq!(first, second);
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    assert_eq!(worker.next_task().await.task_id, first);
    let other = server.submit("default", "next").await;
    assert_eq!(
        worker.next_task().await.task_id,
        other,
        "no second copy was made"
    );
    server.stop().await;
}

/// A task whose lease ran out comes back to the same worker when no other
/// is waiting; the new attempt is the worker's to finish, the old one is not.
#[tokio::test]
async fn a_task_can_return_to_the_worker_that_let_its_lease_lapse() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("only").max_in_flight(1)).await;
    let id = submit(
        &server,
        v1::SubmitRequest {
            text: "again".into(),
            lease_ms: 200,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(worker.next_task().await.attempt, 1);
    let again = worker.next_task().await;
    assert_eq!((again.task_id.as_str(), again.attempt), (id.as_str(), 2));
    let mut control = worker.control().await;
    assert_eq!(
        control.op(ack_op(&id, 1)).await.code,
        Code::FailedPrecondition as i32
    );
    assert_eq!(control.op(ack_op(&id, 2)).await.code, 0);
    assert_eq!(server.wait_finished(&id).await.attempts, 2);
    server.stop().await;
}

/// A slow reader is not punished for it: when it stops reading, its
/// receipts lapse and its tasks go back, but once it reads again it keeps
/// its session and gets new work.
#[tokio::test]
async fn a_slow_reader_keeps_its_session() {
    let mut config = test_config();
    config.workers.receipt_timeout_ms = 100;
    config.workers.max_in_flight_cap = 4;
    let server = TestServer::with_config(config).await;
    let missed = |text: &str| sample(text, "contact_receipts_missed_total").unwrap_or(0.0);
    let before = missed(&server.scrape().await);
    let mut slow = TestWorker::connect(
        &server,
        WorkerOptions::id("slow").receipts().max_in_flight(4),
    )
    .await;
    for i in 0..4 {
        server.submit("default", &format!("t{i}")).await;
    }
    // Not reading: the four receipts lapse (an event the metrics show).
    eventually("receipts to lapse", || async {
        (missed(&server.scrape().await) - before >= 4.0).then_some(())
    })
    .await;
    // Now it reads: four tasks, then whatever cancels fitted the buffer.
    let mut tasks = 0;
    while tasks < 4 {
        if slow.next_task().await.kind() == Kind::Task {
            tasks += 1;
        }
    }
    let mut control = slow.control().await;
    assert_eq!(control.send(proto::ClientMsg::default()).await.code, 0);
    let fresh = server.submit("default", "fresh").await;
    // A well-behaved worker again: confirm and finish everything it gets.
    loop {
        let message = slow.next_task().await;
        if message.kind() != Kind::Task {
            continue;
        }
        let receipt = control
            .op(receipt_op(&message.task_id, message.attempt))
            .await;
        assert_eq!(receipt.code, 0, "{receipt:?}");
        assert_eq!(
            control
                .op(ack_op(&message.task_id, message.attempt))
                .await
                .code,
            0
        );
        if message.task_id == fresh {
            break;
        }
    }
    server.stop().await;
}

/// A worker without its own id can never come back under the id the server
/// gave it, so tasks targeted at it are dead-lettered as undeliverable as
/// soon as it goes.
#[tokio::test]
async fn tasks_for_a_vanished_anonymous_worker_are_undeliverable() {
    let server = TestServer::start().await;
    let mut anonymous = TestWorker::connect(&server, WorkerOptions::default()).await;
    let id = submit(
        &server,
        v1::SubmitRequest {
            target_client_id: anonymous.id.clone(),
            text: "only for you".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(anonymous.next_task().await.task_id, id);
    drop(anonymous);
    let info = server.wait_finished(&id).await;
    assert_eq!(
        (info.state(), info.dead_letter_reason.as_str()),
        (TaskState::DeadLettered, "undeliverable")
    );
    server.stop().await;
}
