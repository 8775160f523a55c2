//! Operating the server: the Admin API (queues, drain or disconnect one
//! worker) and every contactctl command against a real server, with its JSON
//! output parsed and checked.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{TestServer, TestWorker, WorkerOptions, test_config, within};
use contact_server::proto::{
    Outcome,
    v1::{self, TaskState},
};
use serde_json::Value;
use tonic::Code;

/// Runs contactctl with `args` against `server`; returns its exit code and
/// its stdout parsed as JSON (with `--json`).
async fn contactctl(server: &TestServer, args: &[&str]) -> (i32, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_contactctl"));
    command
        .args(["--server", &server.url(), "--json"])
        .args(args);
    let output = within(
        "contactctl",
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), value)
}

/// A drained worker gets nothing new, finishes what it holds, and its
/// stream then ends; the rest goes to other workers.
#[tokio::test]
async fn drain_one_worker() {
    let server = TestServer::start().await;
    let mut drained = TestWorker::connect(&server, WorkerOptions::id("old").max_in_flight(1)).await;
    let held = server.submit("default", "held").await;
    assert_eq!(drained.next_task().await.task_id, held);
    let waiting = server.submit("default", "waiting").await;
    let reply = within(
        "drain",
        server.admin().await.drain_worker(v1::WorkerRequest {
            client_id: "old".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(reply.message.contains("old"), "{reply:?}");
    drained.ack(&held, Outcome::Done, "last one").await;
    let end = drained.next_event().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(end.message().contains("drained"), "{end:?}");
    let mut fresh = TestWorker::connect(&server, WorkerOptions::id("new")).await;
    assert_eq!(fresh.next_task().await.task_id, waiting);
    assert_eq!(server.wait_finished(&held).await.worker_id, "old");
    server.stop().await;
}

/// A disconnected worker's stream ends at once and its task goes to
/// another worker; an unknown worker is NOT_FOUND.
#[tokio::test]
async fn disconnect_one_worker() {
    let mut config = test_config();
    config.workers.resume_grace_secs = 30;
    let server = TestServer::with_config(config).await;
    let mut kicked = TestWorker::connect(&server, WorkerOptions::id("kicked")).await;
    let id = server.submit("default", "moves on").await;
    assert_eq!(kicked.next_task().await.task_id, id);
    let mut admin = server.admin().await;
    within(
        "disconnect",
        admin.disconnect_worker(v1::WorkerRequest {
            client_id: "kicked".into(),
        }),
    )
    .await
    .unwrap();
    let end = kicked.next_event().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    // No resume grace for an operator's disconnect: the task moves at once.
    let mut other = TestWorker::connect(&server, WorkerOptions::id("other")).await;
    let again = other.next_task().await;
    assert_eq!((again.task_id.as_str(), again.attempt), (id.as_str(), 2));
    let missing = within(
        "disconnect unknown",
        admin.disconnect_worker(v1::WorkerRequest {
            client_id: "nobody".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await;
}

/// Every contactctl command works against a real server and prints JSON
/// that says what happened.
#[tokio::test]
async fn contactctl_commands_print_json() {
    let mut config = test_config();
    config.tasks.max_attempts = 1;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").queues("jobs")).await;

    let (code, submitted) = contactctl(&server, &["submit", "--queue", "jobs", "first"]).await;
    assert_eq!(code, 0);
    let first = submitted["task_id"].as_str().unwrap().to_owned();
    assert_eq!(worker.next_task().await.task_id, first);

    let (_, workers) = contactctl(&server, &["workers"]).await;
    assert_eq!(workers[0]["client_id"], "w");
    assert_eq!(workers[0]["in_flight"], 1);

    let (_, second) = contactctl(&server, &["submit", "--queue", "idle", "second"]).await;
    let second = second["task_id"].as_str().unwrap().to_owned();
    let (_, queues) = contactctl(&server, &["queues"]).await;
    let idle = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "idle")
        .unwrap();
    assert_eq!(
        (idle["pending"].as_u64(), idle["ready"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(idle["oldest_ready_age_ms"].as_u64().is_some(), "{idle}");

    let (_, got) = contactctl(&server, &["get", &first]).await;
    assert_eq!(
        (got["state"].as_str(), got["worker_id"].as_str()),
        (Some("delivered"), Some("w"))
    );

    let (_, cancelled) = contactctl(&server, &["cancel", &second]).await;
    assert_eq!(cancelled["state"], "cancelled");

    worker.ack(&first, Outcome::Failed, "broken").await;
    let (code, waited) = contactctl(&server, &["wait", &first, "--timeout", "10"]).await;
    assert_eq!(code, 2, "a dead-lettered task exits 2");
    assert_eq!(waited["dead_letter_reason"], "max_attempts");
    let (_, dead) = contactctl(&server, &["dead-letters"]).await;
    assert_eq!(dead[0]["task_id"].as_str(), Some(first.as_str()));
    // A queue with only a dead letter is listed, with its count.
    let (_, queues) = contactctl(&server, &["queues"]).await;
    let jobs = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "jobs")
        .unwrap();
    assert_eq!(
        (jobs["pending"].as_u64(), jobs["dead_letters"].as_u64()),
        (Some(0), Some(1)),
        "{jobs}"
    );
    let (_, requeued) = contactctl(&server, &["requeue", &first]).await;
    assert_eq!(requeued["state"], "pending");
    assert_eq!(worker.next_task().await.task_id, first);

    let (code, drained) = contactctl(&server, &["drain", "w"]).await;
    assert_eq!(code, 0);
    assert!(drained["message"].as_str().unwrap().contains("w"));
    let (code, _) = contactctl(&server, &["disconnect", "w"]).await;
    assert_eq!(code, 0);
    let (code, missing) = contactctl(&server, &["get", "not-a-uuid"]).await;
    assert_eq!(
        (code, missing),
        (1, Value::Null),
        "errors go to stderr, exit 1"
    );
    // Losing its worker used up the requeued task's one attempt.
    assert_eq!(
        server.wait_finished(&first).await.state(),
        TaskState::DeadLettered
    );
    // Purged dead letters are gone for good.
    let (code, purged) = contactctl(&server, &["purge-dead-letters", "--queue", "jobs"]).await;
    assert_eq!((code, purged["purged"].as_u64()), (0, Some(1)));
    let (_, dead) = contactctl(&server, &["dead-letters"]).await;
    assert_eq!(dead, Value::Array(Vec::new()));
    server.stop().await;
}

/// `contactctl health` says SERVING, and NOT_SERVING (exit 3) once the
/// server drains; a service name is checked on its own.
#[tokio::test]
async fn contactctl_health_follows_the_drain() {
    let mut config = test_config();
    // The drain lasts until the worker acks, however slow the test machine.
    config.server.drain_timeout_secs = 60;
    let server = TestServer::with_config(config).await;
    let (code, health) = contactctl(&server, &["health"]).await;
    assert_eq!((code, health["status"].as_str()), (0, Some("SERVING")));
    let (code, health) = contactctl(&server, &["health", "--service", "contact.v1.Tasks"]).await;
    assert_eq!((code, health["status"].as_str()), (0, Some("SERVING")));
    let (code, _) = contactctl(&server, &["health", "--service", "no.such.Service"]).await;
    assert_eq!(code, 1, "an unknown service is an error (NOT_FOUND)");

    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let held = server.submit("default", "keeps the drain open").await;
    assert_eq!(worker.next_task().await.task_id, held);
    server.begin_shutdown_and_see_health_flip().await;
    let (code, health) = contactctl(&server, &["health"]).await;
    assert_eq!((code, health["status"].as_str()), (3, Some("NOT_SERVING")));
    worker.ack(&held, Outcome::Done, "done").await;
    server.wait_stopped().await;
}
