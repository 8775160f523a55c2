//! `/metrics` reports the right values after a known workload, and passes
//! `promtool check metrics`. The recorder and histograms are process-wide,
//! and state gauges are set whole by whichever server last changed them, so
//! the tests here take turns (`SERIAL`); only the known workload moves
//! the counters.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestServer, TestWorker, WorkerOptions, promtool, test_config, within};
use contact_server::proto::{
    Outcome,
    client_msg::Op,
    v1::{self, TaskState},
};

/// Held by each test for its whole run, so no two servers publish into the
/// process-wide recorder at once.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// The value of `contact_rpc_errors_total` for one method and code, if the
/// series is there (in whatever order the exporter writes the labels).
fn rpc_errors(text: &str, method: &str, code: &str) -> Option<f64> {
    let method = format!("method=\"{method}\"");
    let code = format!("code=\"{code}\"");
    text.lines()
        .filter(|line| line.starts_with("contact_rpc_errors_total{"))
        .find(|line| line.contains(&method) && line.contains(&code))
        .and_then(|line| line.rsplit_once(' ')?.1.parse().ok())
}

/// Scrapes until every `(series, value)` holds; the scrape that did.
/// Effects of a dropped worker are noticed asynchronously, so the wait is
/// for an event (bounded by `within`), polled.
async fn until_metrics(server: &TestServer, expected: &[(&str, f64)]) -> String {
    within("metrics to settle", async {
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
    .await
}

async fn submit_to_client(server: &TestServer, client: &str, text: &str) -> String {
    let request = v1::SubmitRequest {
        target_client_id: client.into(),
        text: text.into(),
        ..Default::default()
    };
    within("submit", server.tasks().await.submit(request))
        .await
        .unwrap()
        .into_inner()
        .task_id
}

/// Submit 4, ack 2, fail 1 then ack its retry, and drop the worker holding
/// the last; a second worker confirms a receipt; tasks wait in queues no
/// one serves, more of them than there are labels. Every counter, gauge and
/// histogram says exactly that, and promtool finds nothing to complain of.
#[tokio::test]
async fn metrics_match_a_known_workload() {
    let _turn = SERIAL.lock().await;
    let mut config = test_config();
    // "default" and two more queues get their own label.
    config.server.metrics_queue_labels = 3;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").max_in_flight(6)).await;
    let mut confirming = TestWorker::connect(
        &server,
        WorkerOptions::id("r")
            .queues("only-r")
            .max_in_flight(1)
            .receipts(),
    )
    .await;
    until_metrics(&server, &[("contact_worker_credit", 7.0)]).await;

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

    let confirmed = submit_to_client(&server, "r", "confirm me").await;
    let task = confirming.next_task().await;
    assert!(task.receipt_required);
    let mut control = confirming.control().await;
    let receipt = control
        .op(Op::Ack(contact_server::proto::Result {
            task_id: confirmed.clone(),
            attempt: 1,
            receipt: true,
            ..Default::default()
        }))
        .await;
    assert_eq!(receipt.code, 0, "{receipt:?}");
    // A runtime credit change moves the credit gauge.
    let raised = control
        .op(Op::Credit(contact_server::proto::Credit {
            max_in_flight: 3,
        }))
        .await;
    assert_eq!(raised.code, 0, "{raised:?}");
    until_metrics(&server, &[("contact_worker_credit", 9.0)]).await;
    confirming.ack(&confirmed, Outcome::Done, "ok").await;
    assert_eq!(
        server.wait_finished(&confirmed).await.state(),
        TaskState::Done
    );
    drop(worker);
    drop(confirming);

    // Queues nobody serves: two get the last labels, in name order; the
    // third shares "(other)". A task for the offline worker "w" is held.
    for queue in ["idle-a", "idle-b", "idle-c"] {
        server.submit(queue, "waiting").await;
    }
    submit_to_client(&server, "w", "held").await;

    let expected = [
        ("contact_tasks_submitted_total{target=\"queue\"}", 7.0),
        ("contact_tasks_submitted_total{target=\"client\"}", 2.0),
        ("contact_tasks_dispatched_total", 6.0),
        ("contact_tasks_acknowledged_total{outcome=\"done\"}", 4.0),
        ("contact_tasks_acknowledged_total{outcome=\"failed\"}", 1.0),
        ("contact_tasks_redelivered_total{reason=\"failed\"}", 1.0),
        (
            "contact_tasks_redelivered_total{reason=\"worker_lost\"}",
            1.0,
        ),
        ("contact_queue_depth{queue=\"default\"}", 1.0),
        ("contact_queue_depth{queue=\"idle-a\"}", 1.0),
        ("contact_queue_depth{queue=\"idle-b\"}", 1.0),
        ("contact_queue_depth{queue=\"(other)\"}", 1.0),
        ("contact_queue_depth{queue=\"(worker)\"}", 1.0),
        ("contact_tasks_in_flight", 0.0),
        ("contact_workers_connected", 0.0),
        ("contact_worker_credit", 0.0),
        // First deliveries only: the retry is not a wait in the queue.
        ("contact_task_submit_to_dispatch_seconds_count", 5.0),
        ("contact_task_dispatch_to_ack_seconds_count", 5.0),
        ("contact_task_dispatch_to_receipt_seconds_count", 1.0),
        (
            "contact_task_dispatch_to_receipt_seconds_bucket{le=\"+Inf\"}",
            1.0,
        ),
    ];
    let text = until_metrics(&server, &expected).await;
    assert!(sample(&text, "contact_queue_depth{queue=\"idle-c\"}").is_none());
    assert!(text.contains("# HELP contact_tasks_submitted_total"));
    assert!(text.contains("# TYPE contact_task_dispatch_to_ack_seconds histogram"));

    // The oldest task of a queue nobody serves ages between scrapes.
    let age = "contact_queue_oldest_task_age_seconds{queue=\"idle-a\"}";
    let first = sample(&text, age).unwrap();
    let later = within("the oldest task to age", async {
        loop {
            let now = sample(&server.scrape().await, age).unwrap();
            if now >= first + 0.05 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(later < 60.0, "{later}");

    // A failed call is counted by method and code.
    let bad = within(
        "bad get",
        server.tasks().await.get(v1::GetRequest {
            task_id: "not-a-uuid".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let text = server.scrape().await;
    assert_eq!(
        rpc_errors(&text, "contact.v1.Tasks/Get", "invalid_argument"),
        Some(1.0),
        "{text}"
    );
    // No series is labelled with an id.
    assert!(!text.contains(&ids[0]));
    assert!(!text.contains("client_id"));

    // The check can fail: promtool rejects a counter without `_total`.
    assert!(promtool::check_metrics("# HELP bad A counter.\n# TYPE bad counter\nbad 1\n").is_err());
    if let Err(complaints) = promtool::check_metrics(&text) {
        panic!("promtool check metrics:\n{complaints}\n--- exposition ---\n{text}");
    }
    server.stop().await;
}

/// A server that has failed no call already exports the rpc error series
/// at zero, so a dashboard shows 0 rather than "no data": every served
/// method with every code the error mapping produces, and "other" with
/// `unimplemented`.
#[tokio::test]
async fn rpc_error_series_start_at_zero() {
    let _turn = SERIAL.lock().await;
    let server = TestServer::start().await;
    let text = server.scrape().await;
    let codes = [
        "invalid_argument",
        "not_found",
        "failed_precondition",
        "already_exists",
        "resource_exhausted",
        "deadline_exceeded",
        "unavailable",
    ];
    for method in [
        "Contact/getTask",
        "Contact/tellResult",
        "Contact/sendStatus",
        "contact.v1.Tasks/Submit",
        "contact.v1.Tasks/Get",
        "contact.v1.Admin/ListWorkers",
        "grpc.health.v1.Health/Check",
    ] {
        for code in codes {
            assert!(
                rpc_errors(&text, method, code).is_some(),
                "no series for {method} {code} in\n{text}"
            );
        }
    }
    // No test in this process fails a call to these.
    for code in codes {
        assert_eq!(
            rpc_errors(&text, "contact.v1.Admin/DrainWorker", code),
            Some(0.0),
            "{code}: {text}"
        );
    }
    assert_eq!(rpc_errors(&text, "other", "unimplemented"), Some(0.0));
    // Codes the server does not answer with are not registered in advance.
    assert!(rpc_errors(&text, "contact.v1.Tasks/Get", "data_loss").is_none());
    server.stop().await;
}
