//! What is delivered when, and to whom: queue limits, broadcast, delays,
//! TTLs and priorities, cancel and dead letters, idempotency, targeted tasks,
//! and fair serving of a worker's several queues. Every test drives real
//! workers against the real server and waits on events.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    TestServer, TestWorker, WorkerOptions, ack_op, receipt_op, submit_request as submit,
    test_config, within,
};
use contact_server::proto::{
    self, Kind, Outcome,
    client_msg::Op,
    v1::{self, TaskState},
};
use tonic::Code;

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

/// A broadcast reaches every connected worker of its queue, and their
/// results are collected under the broadcast id.
#[tokio::test]
async fn broadcast_reaches_every_worker() {
    let server = TestServer::start().await;
    let mut workers = common::workers(&server, 3, 4).await;
    let mut bystander =
        TestWorker::connect(&server, WorkerOptions::id("elsewhere").queues("other")).await;
    let mut tasks = server.tasks().await;
    let reply = within(
        "broadcast",
        tasks.broadcast(v1::BroadcastRequest {
            text: "flush caches".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let broadcast_id = reply.broadcast_id.clone();
    // The reply counts and names every copy, and each exists already, so a
    // producer can wait for all of them.
    assert_eq!(reply.copy_count, 3);
    let mut named: Vec<&str> = reply.copies.iter().map(|c| c.client_id.as_str()).collect();
    named.sort_unstable();
    assert_eq!(named, ["worker-0", "worker-1", "worker-2"]);
    for copy in &reply.copies {
        let info = server.get(&copy.task_id).await;
        assert_eq!(info.target_client_id, copy.client_id);
    }
    let mut copy_ids = Vec::new();
    for worker in &mut workers {
        let copy = worker.next_task().await;
        assert_eq!(
            (copy.broadcast_id.as_str(), copy.task.as_str()),
            (broadcast_id.as_str(), "flush caches")
        );
        assert!(
            reply
                .copies
                .iter()
                .any(|c| c.task_id == copy.task_id && c.client_id == worker.id)
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

/// The same idempotency key with a different task is refused with
/// ALREADY_EXISTS naming the key, instead of silently answering with the
/// first task's id; the same task again still gets that id.
#[tokio::test]
async fn an_idempotency_key_reused_for_another_task_is_refused() {
    let server = TestServer::start().await;
    let keyed = |text: &str| v1::SubmitRequest {
        text: text.into(),
        idempotency_key: "invoice-9".into(),
        ..Default::default()
    };
    let first = submit(&server, keyed("charge 10 EUR")).await.unwrap();
    let refused = submit(&server, keyed("charge 99 EUR")).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("\"invoice-9\"") && refused.message().contains("different task"),
        "{refused:?}"
    );
    assert_eq!(
        submit(&server, keyed("charge 10 EUR")).await.unwrap(),
        first
    );
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

/// A worker of several queues is served from them in turn: a busy first
/// queue does not starve the later ones.
#[tokio::test]
async fn a_worker_serves_its_queues_in_turn() {
    let server = TestServer::start().await;
    for i in 0..20 {
        server.submit("busy", &format!("busy-{i}")).await;
    }
    for i in 0..3 {
        server.submit("quiet", &format!("quiet-{i}")).await;
    }
    // Credit 1: each task is one lease, so the order shows whose turn it is.
    let mut worker = TestWorker::connect(
        &server,
        WorkerOptions::id("both")
            .queues("busy,quiet")
            .max_in_flight(1),
    )
    .await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let task = worker.next_task().await;
        order.push(task.queue.clone());
        worker.ack(&task.task_id, Outcome::Done, "ok").await;
    }
    assert_eq!(
        order.iter().filter(|queue| *queue == "quiet").count(),
        3,
        "every quiet task ran among the first six: {order:?}"
    );

    // With more credit, one lease splits it between the queues.
    for i in 0..20 {
        server.submit("busy2", &format!("busy-{i}")).await;
    }
    for i in 0..4 {
        server.submit("quiet2", &format!("quiet-{i}")).await;
    }
    let mut wide = TestWorker::connect(
        &server,
        WorkerOptions::id("wide")
            .queues("busy2,quiet2")
            .max_in_flight(8),
    )
    .await;
    let mut quiet = 0;
    for _ in 0..8 {
        if wide.next_task().await.queue == "quiet2" {
            quiet += 1;
        }
    }
    assert_eq!(quiet, 4, "{quiet} of the first 8 from the quiet queue");
    server.stop().await;
}

/// Dead letters are kept within their retention: past
/// `tasks.dead_letter_max_count` the oldest go (and are counted), and a
/// purge removes those of one queue for good.
#[tokio::test]
async fn dead_letters_are_kept_within_their_retention_and_purged() {
    let mut config = test_config();
    config.tasks.dead_letter_max_count = 2;
    let server = TestServer::with_config(config).await;
    let mut worker =
        TestWorker::connect(&server, WorkerOptions::id("w").queues("doomed,other")).await;
    let mut ids = Vec::new();
    for (queue, text) in [
        ("doomed", "first"),
        ("doomed", "second"),
        ("other", "third"),
    ] {
        let id = server.submit(queue, text).await;
        assert_eq!(worker.next_task().await.task_id, id);
        worker.ack(&id, Outcome::FailedPermanently, "no").await;
        server.wait_finished(&id).await;
        ids.push(id);
    }
    let mut tasks = server.tasks().await;
    let listed =
        |tasks: Vec<v1::TaskInfo>| tasks.into_iter().map(|t| t.task_id).collect::<Vec<_>>();
    let dead = within(
        "dead letters",
        tasks.list_dead_letters(v1::ListDeadLettersRequest::default()),
    )
    .await
    .unwrap()
    .into_inner()
    .tasks;
    assert_eq!(listed(dead), ids[1..], "the oldest went past the count");
    let gone = within(
        "get",
        tasks.get(v1::GetRequest {
            task_id: ids[0].clone(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let mut admin = server.admin().await;
    let purged = within(
        "purge",
        admin.purge_dead_letters(v1::PurgeDeadLettersRequest {
            queue: "doomed".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .purged;
    assert_eq!(purged, 1);
    let dead = within(
        "dead letters",
        tasks.list_dead_letters(v1::ListDeadLettersRequest::default()),
    )
    .await
    .unwrap()
    .into_inner()
    .tasks;
    assert_eq!(listed(dead), ids[2..]);
    server.stop().await;
}
