//! `/metrics` reports the right values after known workloads, and passes
//! `promtool check metrics`. The recorder and histograms are process-wide,
//! and state gauges are set whole by whichever server last changed them, so
//! the tests here take turns (`SERIAL`), and each asserts counters and
//! histogram counts as deltas from a scrape taken when it starts.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    TestServer, TestWorker, WorkerOptions, eventually, eventually_explained, promtool, sample,
    test_config, until_disconnected, within,
};
use contact_server::{
    config::QueueConfig,
    proto::{
        self, Kind, Outcome,
        client_msg::Op,
        v1::{self, TaskState},
    },
};
use tonic::Code;

/// Held by each test for its whole run, so no two servers publish into the
/// process-wide recorder at once.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// What a scrape must show, against the scrape `base` taken when the test
/// started: counters and histogram counts as deltas, state gauges whole.
struct Expected<'a> {
    base: &'a str,
    deltas: &'a [(&'a str, f64)],
    values: &'a [(&'a str, f64)],
}

impl<'a> Expected<'a> {
    /// Only counters and histogram counts, as deltas.
    fn deltas(base: &'a str, deltas: &'a [(&'a str, f64)]) -> Self {
        Self {
            base,
            deltas,
            values: &[],
        }
    }

    /// Every series that does not show what is expected, and what it shows.
    fn mismatches(&self, text: &str) -> Vec<String> {
        let value = |text: &str, series: &str| sample(text, series).unwrap_or(0.0);
        let deltas = self.deltas.iter().filter_map(|(series, want)| {
            let delta = value(text, series) - value(self.base, series);
            (delta != *want).then(|| format!("{series}: up {delta}, expected up {want}"))
        });
        let values = self.values.iter().filter_map(|(series, want)| {
            let got = sample(text, series);
            (got != Some(*want)).then(|| format!("{series}: {got:?}, expected {want}"))
        });
        deltas.chain(values).collect()
    }
}

/// Scrapes until the scrape shows what is expected; that scrape. Effects
/// of timeouts and dropped workers are noticed asynchronously, so the wait
/// is for an event, polled, bounded by [`TIMEOUT`]; on timeout the failure
/// names every series still wrong.
async fn until(server: &TestServer, expected: Expected<'_>) -> String {
    eventually_explained("the metrics to settle", || async {
        let text = server.scrape().await;
        let wrong = expected.mismatches(&text);
        if wrong.is_empty() {
            Ok(text)
        } else {
            Err(format!(
                "  {}\n--- last scrape ---\n{text}",
                wrong.join("\n  ")
            ))
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
    let base = server.scrape().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").max_in_flight(6)).await;
    let mut confirming = TestWorker::connect(
        &server,
        WorkerOptions::id("r")
            .queues("only-r")
            .max_in_flight(1)
            .receipts(),
    )
    .await;
    until(
        &server,
        Expected::deltas(&base, &[("contact_worker_credit", 7.0)]),
    )
    .await;

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
    until(
        &server,
        Expected::deltas(&base, &[("contact_worker_credit", 9.0)]),
    )
    .await;
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

    let deltas = [
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
    let values = [
        ("contact_queue_depth{queue=\"default\"}", 1.0),
        ("contact_queue_depth{queue=\"idle-a\"}", 1.0),
        ("contact_queue_depth{queue=\"idle-b\"}", 1.0),
        ("contact_queue_depth{queue=\"(other)\"}", 1.0),
        ("contact_queue_depth{queue=\"(worker)\"}", 1.0),
        ("contact_tasks_in_flight", 0.0),
        ("contact_workers_connected", 0.0),
    ];
    let text = until(
        &server,
        Expected {
            base: &base,
            deltas: &deltas,
            values: &values,
        },
    )
    .await;
    assert!(sample(&text, "contact_queue_depth{queue=\"idle-c\"}").is_none());
    assert!(text.contains("# HELP contact_tasks_submitted_total"));
    assert!(text.contains("# TYPE contact_task_dispatch_to_ack_seconds histogram"));

    // The oldest task of a queue nobody serves ages between scrapes.
    let age = "contact_queue_oldest_task_age_seconds{queue=\"idle-a\"}";
    let first = sample(&text, age).unwrap();
    let later = eventually("the oldest task to age", || async {
        let now = sample(&server.scrape().await, age).unwrap();
        (now >= first + 0.05).then_some(now)
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
    let bad_gets = |text: &str| rpc_errors(text, "contact.v1.Tasks/Get", "invalid_argument");
    assert_eq!(
        bad_gets(&text).unwrap() - bad_gets(&base).unwrap_or(0.0),
        1.0,
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

/// A control op acknowledging one attempt of a task as done.
fn ack_op(task_id: &str, attempt: u32) -> Op {
    Op::Ack(proto::Result {
        task_id: task_id.into(),
        attempt,
        ..Default::default()
    })
}

async fn cancel(server: &TestServer, task_id: &str) -> v1::TaskInfo {
    let request = v1::CancelRequest {
        task_id: task_id.into(),
    };
    within("cancel", server.tasks().await.cancel(request))
        .await
        .unwrap()
        .into_inner()
}

/// Every way a task ends or comes back other than a plain ack, each on its
/// own queue so the counts are exact, with timeouts short enough that the
/// test takes a couple of seconds: a keepalive worker goes silent past the
/// liveness timeout (session expired, task redelivered as worker lost); a
/// 200 ms lease lapses twice on a queue of two attempts (lease expired,
/// redelivered, then dead-lettered at max attempts) and the first attempt's
/// late ack is refused as stale; a receipt is not confirmed in time
/// (receipt missed, redelivered) and the task is then cancelled; a retry,
/// then a permanent failure; a task that expires unstarted; a task for a
/// worker that left and does not come back within the target TTL.
#[tokio::test]
async fn timeouts_and_endings_are_counted() {
    let _turn = SERIAL.lock().await;
    let mut config = test_config();
    config.workers.receipt_timeout_ms = 200;
    config.workers.liveness_timeout_secs = 1;
    config.tasks.target_ttl_secs = 1;
    config.queues.insert(
        "twice".into(),
        QueueConfig {
            max_attempts: Some(2),
            ..Default::default()
        },
    );
    let server = TestServer::with_config(config).await;
    let base = server.scrape().await;

    // The two waits of a second start first and run while the rest goes on.
    let mut zombie = TestWorker::connect(
        &server,
        WorkerOptions::id("zombie")
            .queues("zombie")
            .keepalive_ms(100),
    )
    .await;
    let held = server.submit("zombie", "held by a zombie").await;
    loop {
        let message = zombie.next_task().await;
        if message.kind() == Kind::Task {
            assert_eq!(message.task_id, held);
            break;
        }
    }
    let gone = TestWorker::connect(&server, WorkerOptions::id("gone").queues("none")).await;
    drop(gone);
    until_disconnected(&server, "gone").await;
    let undeliverable = submit_to_client(&server, "gone", "never collected").await;

    let expiring = within(
        "submit",
        server.tasks().await.submit(v1::SubmitRequest {
            queue: "nobody".into(),
            ttl_ms: 100,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .task_id;

    let mut lapsing =
        TestWorker::connect(&server, WorkerOptions::id("lapsing").queues("twice")).await;
    let short = within(
        "submit",
        server.tasks().await.submit(v1::SubmitRequest {
            queue: "twice".into(),
            lease_ms: 200,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .task_id;
    for attempt in [1, 2] {
        let task = lapsing.next_task().await;
        assert_eq!(
            (task.task_id.as_str(), task.attempt),
            (short.as_str(), attempt)
        );
    }
    let dead = server.wait_finished(&short).await;
    assert_eq!(
        (dead.state(), dead.dead_letter_reason.as_str()),
        (TaskState::DeadLettered, "max_attempts")
    );
    let mut control = lapsing.control().await;
    let late = control.op(ack_op(&short, 1)).await;
    assert_eq!(late.code, Code::FailedPrecondition as i32, "{late:?}");

    let mut unconfirming = TestWorker::connect(
        &server,
        WorkerOptions::id("unconfirming")
            .queues("receipts")
            .receipts(),
    )
    .await;
    let unconfirmed = server.submit("receipts", "confirm me").await;
    assert_eq!(unconfirming.next_task().await.task_id, unconfirmed);
    // The missed receipt puts the task back, and the suspected worker takes
    // nothing until it speaks; cancelling before the task is back would
    // leave nothing to redeliver.
    until(
        &server,
        Expected::deltas(
            &base,
            &[(
                "contact_tasks_redelivered_total{reason=\"receipt_missed\"}",
                1.0,
            )],
        ),
    )
    .await;
    assert_eq!(
        cancel(&server, &unconfirmed).await.state(),
        TaskState::Cancelled
    );

    let mut retrying =
        TestWorker::connect(&server, WorkerOptions::id("retrying").queues("retries")).await;
    let retried = server.submit("retries", "try again").await;
    assert_eq!(retrying.next_task().await.attempt, 1);
    retrying
        .send_ack(proto::Result {
            task_id: retried.clone(),
            attempt: 1,
            outcome: Outcome::Retry.into(),
            retry_after_ms: 1,
            ..Default::default()
        })
        .await;
    assert_eq!(retrying.next_task().await.attempt, 2);
    retrying
        .ack(&retried, Outcome::FailedPermanently, "hopeless")
        .await;
    let failed = server.wait_finished(&retried).await;
    assert_eq!(failed.dead_letter_reason, "failed_permanently");

    let expired = server.wait_finished(&expiring).await;
    assert_eq!(expired.dead_letter_reason, "expired");
    let stranded = server.wait_finished(&undeliverable).await;
    assert_eq!(stranded.dead_letter_reason, "undeliverable");
    let ended = loop {
        match zombie.next_event().await {
            Ok(Some(message)) => assert_ne!(message.kind(), Kind::Task),
            Ok(None) => panic!("the zombie's stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");

    let deltas = [
        ("contact_tasks_submitted_total{target=\"queue\"}", 5.0),
        ("contact_tasks_submitted_total{target=\"client\"}", 1.0),
        // zombie 1, twice 2, receipts 1, retries 2.
        ("contact_tasks_dispatched_total", 6.0),
        ("contact_tasks_acknowledged_total{outcome=\"done\"}", 0.0),
        ("contact_tasks_acknowledged_total{outcome=\"retry\"}", 1.0),
        // A permanent failure is acknowledged as failed.
        ("contact_tasks_acknowledged_total{outcome=\"failed\"}", 1.0),
        (
            "contact_tasks_redelivered_total{reason=\"worker_lost\"}",
            1.0,
        ),
        (
            "contact_tasks_redelivered_total{reason=\"lease_expired\"}",
            1.0,
        ),
        (
            "contact_tasks_redelivered_total{reason=\"receipt_missed\"}",
            1.0,
        ),
        ("contact_tasks_redelivered_total{reason=\"retry\"}", 1.0),
        ("contact_tasks_redelivered_total{reason=\"failed\"}", 0.0),
        (
            "contact_tasks_dead_lettered_total{reason=\"max_attempts\"}",
            1.0,
        ),
        (
            "contact_tasks_dead_lettered_total{reason=\"failed_permanently\"}",
            1.0,
        ),
        ("contact_tasks_dead_lettered_total{reason=\"expired\"}", 1.0),
        (
            "contact_tasks_dead_lettered_total{reason=\"undeliverable\"}",
            1.0,
        ),
        ("contact_tasks_cancelled_total", 1.0),
        ("contact_receipts_missed_total", 1.0),
        ("contact_leases_expired_total", 2.0),
        ("contact_stale_acks_refused_total", 1.0),
        ("contact_sessions_expired_total", 1.0),
        ("contact_sessions_resumed_total", 0.0),
        ("contact_task_submit_to_dispatch_seconds_count", 4.0),
        // The retry and the permanent failure; the refused ack is not one.
        ("contact_task_dispatch_to_ack_seconds_count", 2.0),
        ("contact_task_dispatch_to_receipt_seconds_count", 0.0),
    ];
    // Only the zombie's task still waits; nothing is in flight.
    let values = [
        ("contact_queue_depth{queue=\"zombie\"}", 1.0),
        ("contact_queue_depth{queue=\"twice\"}", 0.0),
        ("contact_queue_depth{queue=\"(worker)\"}", 0.0),
        ("contact_tasks_in_flight", 0.0),
    ];
    let text = until(
        &server,
        Expected {
            base: &base,
            deltas: &deltas,
            values: &values,
        },
    )
    .await;
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
