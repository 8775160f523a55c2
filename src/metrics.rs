//! Every metric name the server exports, their help texts, the process-wide
//! Prometheus recorder, and the small HTTP server for `GET /metrics`.
//!
//! The exporter's own listener is not used: it binds inside its builder and
//! cannot report the port it got, and tests bind `127.0.0.1:0`. Labels only
//! take values from fixed sets; never a task id, client id or error text.
//!
//! Handles (`Counter`, `Gauge`) are resolved once, when an actor starts, so
//! the hot path only does atomic adds and no registry lookups.

use std::sync::OnceLock;

use axum::{Router, routing::get};
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Counter: tasks accepted, by `target` (`queue` or `client`).
pub const TASKS_SUBMITTED: &str = "contact_tasks_submitted_total";
/// Counter: task deliveries pushed to workers (redeliveries included).
pub const TASKS_DISPATCHED: &str = "contact_tasks_dispatched_total";
/// Counter: acknowledgements applied, by `outcome` (`done`, `failed`, `retry`).
pub const TASKS_ACKNOWLEDGED: &str = "contact_tasks_acknowledged_total";
/// Counter: tasks put back for another delivery, by `reason`
/// (`worker_lost`, `failed`, `retry`).
pub const TASKS_REDELIVERED: &str = "contact_tasks_redelivered_total";
/// Counter: tasks given up on after `max_attempts`.
pub const TASKS_DEAD_LETTERED: &str = "contact_tasks_dead_lettered_total";
/// Gauge: tasks waiting to be delivered.
pub const QUEUE_DEPTH: &str = "contact_queue_depth";
/// Gauge: tasks pushed to a worker and not yet acknowledged.
pub const TASKS_IN_FLIGHT: &str = "contact_tasks_in_flight";
/// Gauge: workers with an open getTask stream.
pub const WORKERS_CONNECTED: &str = "contact_workers_connected";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle. Later
/// calls (several servers in one test process) share the first recorder.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe_all();
            handle
        })
        .clone()
}

fn describe_all() {
    describe_counter!(
        TASKS_SUBMITTED,
        Unit::Count,
        "Tasks accepted from producers."
    );
    describe_counter!(
        TASKS_DISPATCHED,
        Unit::Count,
        "Task deliveries pushed to workers, redeliveries included."
    );
    describe_counter!(
        TASKS_ACKNOWLEDGED,
        Unit::Count,
        "Acknowledgements applied, by outcome."
    );
    describe_counter!(
        TASKS_REDELIVERED,
        Unit::Count,
        "Tasks put back for another delivery, by reason."
    );
    describe_counter!(
        TASKS_DEAD_LETTERED,
        Unit::Count,
        "Tasks given up on after max_attempts deliveries."
    );
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "Tasks waiting to be delivered.");
    describe_gauge!(
        TASKS_IN_FLIGHT,
        Unit::Count,
        "Tasks pushed to a worker and not yet acknowledged."
    );
    describe_gauge!(
        WORKERS_CONNECTED,
        Unit::Count,
        "Workers with an open getTask stream."
    );
}

/// The queue actor's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct QueueMetrics {
    pub(crate) submitted_queue: Counter,
    pub(crate) submitted_client: Counter,
    pub(crate) dispatched: Counter,
    pub(crate) acked_done: Counter,
    pub(crate) acked_failed: Counter,
    pub(crate) acked_retry: Counter,
    pub(crate) redelivered_worker_lost: Counter,
    pub(crate) redelivered_failed: Counter,
    pub(crate) redelivered_retry: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) queue_depth: Gauge,
    pub(crate) in_flight: Gauge,
}

impl QueueMetrics {
    pub(crate) fn new() -> Self {
        Self {
            submitted_queue: counter!(TASKS_SUBMITTED, "target" => "queue"),
            submitted_client: counter!(TASKS_SUBMITTED, "target" => "client"),
            dispatched: counter!(TASKS_DISPATCHED),
            acked_done: counter!(TASKS_ACKNOWLEDGED, "outcome" => "done"),
            acked_failed: counter!(TASKS_ACKNOWLEDGED, "outcome" => "failed"),
            acked_retry: counter!(TASKS_ACKNOWLEDGED, "outcome" => "retry"),
            redelivered_worker_lost: counter!(TASKS_REDELIVERED, "reason" => "worker_lost"),
            redelivered_failed: counter!(TASKS_REDELIVERED, "reason" => "failed"),
            redelivered_retry: counter!(TASKS_REDELIVERED, "reason" => "retry"),
            dead_lettered: counter!(TASKS_DEAD_LETTERED),
            queue_depth: gauge!(QUEUE_DEPTH),
            in_flight: gauge!(TASKS_IN_FLIGHT),
        }
    }
}

/// The gauge of connected workers, kept by the registry.
pub(crate) fn workers_connected() -> Gauge {
    gauge!(WORKERS_CONNECTED)
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
