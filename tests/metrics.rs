//! `/metrics` reports the right counts after a known workload. This file holds
//! one test, so the process-wide recorder sees only its workload.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestServer, TestWorker, WorkerOptions, within};
use contact_server::proto::{Outcome, v1::TaskState};

/// The value of one sample line (`name{labels}` exactly), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Submit 4, ack 2, fail 1 then ack its retry, and drop the worker holding
/// the last: every counter and gauge says exactly that.
#[tokio::test]
async fn metrics_match_a_known_workload() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d"] {
        ids.push(server.submit("default", name).await);
    }
    for _ in 0..4 {
        worker.next_task().await;
    }
    worker.ack(&ids[0], Outcome::Done, "a").await;
    worker.ack(&ids[1], Outcome::Done, "b").await;
    worker.ack(&ids[2], Outcome::Failed, "c").await;
    let retry = worker.next_task().await;
    assert_eq!(
        (retry.task_id.as_str(), retry.attempt),
        (ids[2].as_str(), 2)
    );
    worker.ack(&ids[2], Outcome::Done, "c").await;
    for id in &ids[..3] {
        assert_eq!(server.wait_finished(id).await.state(), TaskState::Done);
    }
    drop(worker);

    let expected = [
        ("contact_tasks_submitted_total{target=\"queue\"}", 4.0),
        ("contact_tasks_dispatched_total", 5.0),
        ("contact_tasks_acknowledged_total{outcome=\"done\"}", 3.0),
        ("contact_tasks_acknowledged_total{outcome=\"failed\"}", 1.0),
        ("contact_tasks_redelivered_total{reason=\"failed\"}", 1.0),
        (
            "contact_tasks_redelivered_total{reason=\"worker_lost\"}",
            1.0,
        ),
        ("contact_queue_depth", 1.0),
        ("contact_tasks_in_flight", 0.0),
        ("contact_workers_connected", 0.0),
    ];
    // The dropped worker is noticed asynchronously: poll the scrape (bounded).
    let text = within("metrics to settle", async {
        loop {
            let text = server.scrape().await;
            if expected
                .iter()
                .all(|(series, value)| sample(&text, series) == Some(*value))
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(text.contains("# HELP contact_tasks_submitted_total"));

    // A failed call is counted by method and code.
    let bad = within(
        "bad get",
        server
            .tasks()
            .await
            .get(contact_server::proto::v1::GetRequest {
                task_id: "not-a-uuid".into(),
            }),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let text = server.scrape().await;
    let counted = text.lines().any(|line| {
        line.starts_with("contact_rpc_errors_total{")
            && line.contains("method=\"contact.v1.Tasks/Get\"")
            && line.contains("code=\"invalid_argument\"")
            && line.ends_with(" 1")
    });
    assert!(counted, "{text}");
    assert!(text.contains("# TYPE contact_queue_depth gauge"));
    // No series is labelled with an id.
    assert!(!text.contains(&ids[0]));
    assert!(!text.contains("client_id"));
    server.stop().await;
}
