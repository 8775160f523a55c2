//! Delivery that survives misbehaving workers: receipts, leases and fencing,
//! credit, liveness and keepalives, resume, slow readers. Every test drives
//! real workers against the real server and waits on events. What is
//! delivered when, and to whom, is `tests/scheduling.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    TestServer, TestWorker, WorkerOptions, ack_op, eventually, receipt_op, sample,
    submit_request as submit, test_config, within,
};
use contact_server::proto::{
    self, Kind, Outcome,
    client_msg::Op,
    v1::{self, TaskState},
};
use tonic::Code;

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
    let resumed_before =
        sample(&server.scrape().await, "contact_sessions_resumed_total").unwrap_or(0.0);
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
    // Other tests in this process share the recorder: the count rose by
    // at least this resume.
    let resumed_total = |text: &str| sample(text, "contact_sessions_resumed_total").unwrap_or(0.0);
    let after = server.scrape().await;
    assert!(resumed_total(&after) - resumed_before >= 1.0, "{after}");
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
