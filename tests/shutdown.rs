//! Graceful shutdown: health flips, new work is refused, workers finish what
//! they hold (up to the drain timeout), streams end, and the server stops.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestWorker, WorkerOptions, test_config, within};
use contact_server::proto::{
    Outcome,
    v1::{self, TaskState},
};
use tonic::Code;

/// While draining, a worker's ack of a held task still lands; then its
/// stream ends with UNAVAILABLE and the server stops without waiting out
/// the (long) drain timeout.
#[tokio::test]
async fn shutdown_drains_held_tasks_then_stops() {
    let mut config = test_config();
    config.server.drain_timeout_secs = 60;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let id = server.submit("default", "finish me").await;
    assert_eq!(worker.next_task().await.task_id, id);
    // A second held task keeps the drain going while the first is waited on.
    let last = server.submit("default", "finish me last").await;
    assert_eq!(worker.next_task().await.task_id, last);

    server.begin_shutdown_and_see_health_flip().await;

    // New work is refused, clearly.
    let refused = within(
        "submit while draining",
        server.tasks().await.submit(v1::SubmitRequest::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let refused = TestWorker::try_connect(&server, WorkerOptions::id("late"))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Reads still work while draining, and the held task can be finished.
    assert_eq!(server.get(&id).await.state(), TaskState::Delivered);
    let waiting = server.spawn_wait(&id).await;
    worker.ack(&id, Outcome::Done, "made it").await;
    let finished = within("wait", waiting).await.unwrap().unwrap();
    assert_eq!(finished.state(), TaskState::Done);
    worker.ack(&last, Outcome::Done, "made it too").await;
    let end = worker.next_event().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");

    server.wait_stopped().await;
}

/// A worker that never acknowledges cannot hold the server hostage: after
/// the drain timeout its stream ends and the server stops.
#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    let mut config = test_config();
    config.server.drain_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("stuck")).await;
    let id = server.submit("default", "never acked").await;
    assert_eq!(worker.next_task().await.task_id, id);
    server.begin_shutdown();
    let end = worker.next_event().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    server.wait_stopped().await;
}

/// Idle workers are released at once when the server stops.
#[tokio::test]
async fn idle_workers_end_promptly() {
    let mut config = test_config();
    config.server.drain_timeout_secs = 60;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("idle")).await;
    server.begin_shutdown();
    let end = worker.next_event().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    server.wait_stopped().await;
}

/// During a graceful drain, a tellResult call whose acks were all applied
/// ends OK, so the worker knows they landed (it ended UNAVAILABLE before,
/// which reads as "maybe not").
#[tokio::test]
async fn tell_result_whose_acks_landed_ends_ok_in_a_drain() {
    let mut config = test_config();
    config.server.drain_timeout_secs = 60;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let id = server.submit("default", "finish me while draining").await;
    assert_eq!(worker.next_task().await.task_id, id);

    server.begin_shutdown_and_see_health_flip().await;
    worker.ack(&id, Outcome::Done, "landed").await;
    let end = worker.next_event().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    // The worker kept its tellResult call open; the server ends it.
    worker.ack_call_ends().await.unwrap();
    server.wait_stopped().await;
}
