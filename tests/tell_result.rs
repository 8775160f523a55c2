//! tellResult: acknowledgements complete, retry or dead-letter tasks, and
//! every bad acknowledgement gets a clear status while the server keeps
//! serving.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{TestServer, TestWorker, WorkerOptions, tell_result_once, test_config, within};
use contact_server::proto::{
    self, Outcome,
    v1::{self, TaskState},
};
use tonic::Code;

/// An ack stores the result: Get and Wait show it, with the worker that did it.
#[tokio::test]
async fn ack_then_get_and_wait_show_the_result() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let id = server.submit("default", "compute").await;
    let task = worker.next_task().await;
    // Wait before the ack: it must resolve once the ack lands.
    let waiting = server.spawn_wait(&id).await;
    worker
        .send_ack(proto::Result {
            task_id: task.task_id.clone(),
            outcome: Outcome::Done.into(),
            ret: "42".into(),
            output: Bytes::from_static(b"\x00\x01"),
            ..Default::default()
        })
        .await;
    let waited = within("wait", waiting).await.unwrap().unwrap();
    assert_eq!(waited.state(), TaskState::Done);
    assert_eq!(waited.ret, "42");
    assert_eq!(waited.output.as_ref(), b"\x00\x01");
    assert_eq!(waited.worker_id, "w");
    let got = server.get(&id).await;
    assert_eq!(got, waited);
    worker.finish_acks().await.unwrap();
    server.stop().await;
}

/// Wait gives up with DEADLINE_EXCEEDED when the task does not finish in time.
#[tokio::test]
async fn wait_times_out() {
    let server = TestServer::start().await;
    let id = server.submit("default", "nobody takes me").await;
    let status = within(
        "wait",
        server.tasks().await.wait(v1::WaitRequest {
            task_id: id.clone(),
            timeout_ms: 50,
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(server.get(&id).await.state(), TaskState::Pending);
    server.stop().await;
}

/// A failed task is redelivered with its attempt raised; after max_attempts
/// it is dead-lettered with the last error.
#[tokio::test]
async fn failures_retry_then_dead_letter() {
    let mut config = test_config();
    config.tasks.max_attempts = 2;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let id = server.submit("default", "flaky").await;
    let first = worker.next_task().await;
    assert_eq!(first.attempt, 1);
    worker.ack(&id, Outcome::Failed, "boom").await;
    let second = worker.next_task().await;
    assert_eq!((second.task_id.as_str(), second.attempt), (id.as_str(), 2));
    worker.ack(&id, Outcome::Retry, "again").await;
    let info = server.wait_finished(&id).await;
    assert_eq!(info.state(), TaskState::DeadLettered);
    assert_eq!(info.attempts, 2);
    assert_eq!(info.error, "again failed");
    server.stop().await;
}

/// A seed-style ack (no task id) acknowledges the worker's oldest task.
#[tokio::test]
async fn ack_without_id_takes_the_oldest_task() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let a = server.submit("default", "a").await;
    let b = server.submit("default", "b").await;
    worker.next_task().await;
    worker.next_task().await;
    worker
        .send_ack(proto::Result {
            ret: "first".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(server.wait_finished(&a).await.ret, "first");
    assert_eq!(server.get(&b).await.state(), TaskState::Delivered);
    server.stop().await;
}

/// A done ack for `task_id`.
fn ack_of(task_id: &str) -> proto::Result {
    proto::Result {
        task_id: task_id.into(),
        ..Default::default()
    }
}

/// Asserts `status` has `code`, then that the server still serves: a fresh
/// task goes through a worker and is acknowledged.
async fn assert_refused_then_serving(
    server: &TestServer,
    worker: &mut TestWorker,
    status: tonic::Status,
    code: Code,
) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(!status.message().is_empty());
    let id = server.submit("default", "after bad input").await;
    let task = worker.next_task().await;
    assert_eq!(task.task_id, id);
    tell_result_once(
        server,
        &worker.id,
        vec![proto::Result {
            task_id: id.clone(),
            ..Default::default()
        }],
    )
    .await
    .unwrap();
    assert_eq!(server.wait_finished(&id).await.state(), TaskState::Done);
}

/// Every bad ack gets its own clear status, and the server keeps serving.
#[tokio::test]
async fn bad_acks_get_clear_statuses() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    // On its own queue, so the tasks of the serving checks all go to `worker`.
    let other = TestWorker::connect(&server, WorkerOptions::id("other").queues("elsewhere")).await;

    // An ack for a task id the server never issued.
    let status = tell_result_once(
        &server,
        "w",
        vec![ack_of(&uuid::Uuid::new_v4().to_string())],
    )
    .await
    .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, status, Code::NotFound).await;

    // A task id that is not a UUID.
    let status = tell_result_once(&server, "w", vec![ack_of("not-a-uuid")])
        .await
        .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, status, Code::InvalidArgument).await;

    // An outcome outside the enum.
    let status = tell_result_once(
        &server,
        "w",
        vec![proto::Result {
            outcome: 17,
            ..Default::default()
        }],
    )
    .await
    .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, status, Code::InvalidArgument).await;

    // An ack from a worker that does not hold the task.
    let held = server.submit("default", "held by w").await;
    assert_eq!(worker.next_task().await.task_id, held);
    let status = tell_result_once(
        &server,
        &other.id,
        vec![proto::Result {
            task_id: held.clone(),
            ..Default::default()
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(server.get(&held).await.state(), TaskState::Delivered);

    // A duplicate ack: the second one is refused, the first stands.
    let ack = proto::Result {
        task_id: held.clone(),
        ret: "once".into(),
        ..Default::default()
    };
    let status = tell_result_once(&server, "w", vec![ack.clone(), ack])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(server.get(&held).await.ret, "once");

    // An ack without id from a worker that holds nothing.
    let status = tell_result_once(&server, &other.id, vec![proto::Result::default()])
        .await
        .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, status, Code::FailedPrecondition).await;

    // An ack naming a client id that is not connected at all.
    let status = tell_result_once(&server, "ghost", vec![proto::Result::default()])
        .await
        .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, status, Code::FailedPrecondition).await;
    server.stop().await;
}

/// Malformed requests on the other RPCs: a clear status each, then service.
#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let mut config = test_config();
    config.server.max_message_bytes = 1024;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let mut tasks = server.tasks().await;

    let oversized = within(
        "oversized submit",
        tasks.submit(v1::SubmitRequest {
            payload: vec![7u8; 4096].into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, oversized, Code::OutOfRange).await;

    let bad_queue = within(
        "bad queue",
        tasks.submit(v1::SubmitRequest {
            queue: "spaces are not allowed".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, bad_queue, Code::InvalidArgument).await;

    let bad_get = within(
        "bad get",
        tasks.get(v1::GetRequest {
            task_id: "x".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, bad_get, Code::InvalidArgument).await;

    let missing = within(
        "missing get",
        tasks.get(v1::GetRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
        }),
    )
    .await
    .unwrap_err();
    assert_refused_then_serving(&server, &mut worker, missing, Code::NotFound).await;

    let bad_credit = TestWorker::try_connect(&server, WorkerOptions::id("x").max_in_flight(0))
        .await
        .err()
        .unwrap();
    assert_refused_then_serving(&server, &mut worker, bad_credit, Code::InvalidArgument).await;

    let duplicate = TestWorker::try_connect(&server, WorkerOptions::id("w"))
        .await
        .err()
        .unwrap();
    assert_refused_then_serving(&server, &mut worker, duplicate, Code::AlreadyExists).await;

    // A pipelined stream answers bad items in place and goes on.
    let requests = vec![
        v1::SubmitRequest {
            text: "good".into(),
            ..Default::default()
        },
        v1::SubmitRequest {
            queue: "bad queue".into(),
            ..Default::default()
        },
        v1::SubmitRequest {
            target_client_id: "nobody".into(),
            ..Default::default()
        },
        v1::SubmitRequest {
            text: "good too".into(),
            ..Default::default()
        },
    ];
    let mut replies = within(
        "submit stream",
        tasks.submit_stream(tokio_stream::iter(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    let mut answers = Vec::new();
    while let Some(reply) = within("submit reply", replies.message()).await.unwrap() {
        answers.push(reply);
    }
    assert_eq!(answers.len(), 4);
    assert!(answers[0].error.is_none() && !answers[0].task_id.is_empty());
    assert_eq!(
        answers[1].error.as_ref().unwrap().code,
        Code::InvalidArgument as i32
    );
    assert_eq!(
        answers[2].error.as_ref().unwrap().code,
        Code::NotFound as i32
    );
    assert!(answers[3].error.is_none() && !answers[3].task_id.is_empty());
    server.stop().await;
}
