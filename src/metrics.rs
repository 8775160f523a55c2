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

use crate::domain::DeadLetterReason;

/// Counter: tasks accepted, by `target` (`queue` or `client`).
pub const TASKS_SUBMITTED: &str = "contact_tasks_submitted_total";
/// Counter: task deliveries pushed to workers (redeliveries included).
pub const TASKS_DISPATCHED: &str = "contact_tasks_dispatched_total";
/// Counter: acknowledgements applied, by `outcome` (`done`, `failed`, `retry`).
pub const TASKS_ACKNOWLEDGED: &str = "contact_tasks_acknowledged_total";
/// Counter: tasks put back for another delivery, by `reason`
/// (`worker_lost`, `lease_expired`, `receipt_missed`, `failed`, `retry`).
pub const TASKS_REDELIVERED: &str = "contact_tasks_redelivered_total";
/// Counter: tasks given up on, by `reason` (`max_attempts`,
/// `failed_permanently`, `expired`, `undeliverable`).
pub const TASKS_DEAD_LETTERED: &str = "contact_tasks_dead_lettered_total";
/// Counter: tasks cancelled by producers.
pub const TASKS_CANCELLED: &str = "contact_tasks_cancelled_total";
/// Counter: deliveries whose receipt did not come in time.
pub const RECEIPTS_MISSED: &str = "contact_receipts_missed_total";
/// Counter: deliveries whose execution lease ran out.
pub const LEASES_EXPIRED: &str = "contact_leases_expired_total";
/// Counter: acks, receipts and extensions refused because their attempt was
/// no longer current (or the task had been taken back).
pub const STALE_ACKS_REFUSED: &str = "contact_stale_acks_refused_total";
/// Counter: sessions resumed by a reconnecting worker.
pub const SESSIONS_RESUMED: &str = "contact_sessions_resumed_total";
/// Counter: sessions expired because their worker went silent.
pub const SESSIONS_EXPIRED: &str = "contact_sessions_expired_total";
/// Counter: gRPC calls that failed, by `method` (a fixed list, else
/// `other`) and `code` (the gRPC status code's name).
pub const RPC_ERRORS: &str = "contact_rpc_errors_total";
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
        "Tasks given up on, by reason."
    );
    describe_counter!(
        TASKS_CANCELLED,
        Unit::Count,
        "Tasks cancelled by producers."
    );
    describe_counter!(
        RECEIPTS_MISSED,
        Unit::Count,
        "Deliveries whose receipt did not come in time."
    );
    describe_counter!(
        LEASES_EXPIRED,
        Unit::Count,
        "Deliveries whose execution lease ran out."
    );
    describe_counter!(
        STALE_ACKS_REFUSED,
        Unit::Count,
        "Acks, receipts and extensions refused for an attempt no longer current."
    );
    describe_counter!(
        SESSIONS_RESUMED,
        Unit::Count,
        "Sessions resumed by a reconnecting worker."
    );
    describe_counter!(
        SESSIONS_EXPIRED,
        Unit::Count,
        "Sessions expired because their worker went silent."
    );
    describe_counter!(
        RPC_ERRORS,
        Unit::Count,
        "gRPC calls that failed, by method and status code."
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
    pub(crate) redelivered_lease_expired: Counter,
    pub(crate) redelivered_receipt_missed: Counter,
    pub(crate) redelivered_failed: Counter,
    pub(crate) redelivered_retry: Counter,
    dead_lettered: [Counter; 4],
    pub(crate) cancelled: Counter,
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
            redelivered_lease_expired: counter!(TASKS_REDELIVERED, "reason" => "lease_expired"),
            redelivered_receipt_missed: counter!(TASKS_REDELIVERED, "reason" => "receipt_missed"),
            redelivered_failed: counter!(TASKS_REDELIVERED, "reason" => "failed"),
            redelivered_retry: counter!(TASKS_REDELIVERED, "reason" => "retry"),
            dead_lettered: DEAD_LETTER_REASONS
                .map(|reason| counter!(TASKS_DEAD_LETTERED, "reason" => reason.as_str())),
            cancelled: counter!(TASKS_CANCELLED),
            queue_depth: gauge!(QUEUE_DEPTH),
            in_flight: gauge!(TASKS_IN_FLIGHT),
        }
    }

    pub(crate) fn dead_lettered(&self, reason: DeadLetterReason) -> &Counter {
        &self.dead_lettered[reason as usize]
    }
}

/// Every reason, in declaration order, so `reason as usize` indexes it.
const DEAD_LETTER_REASONS: [DeadLetterReason; 4] = [
    DeadLetterReason::MaxAttempts,
    DeadLetterReason::FailedPermanently,
    DeadLetterReason::Expired,
    DeadLetterReason::Undeliverable,
];

/// A session's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct SessionMetrics {
    pub(crate) receipts_missed: Counter,
    pub(crate) leases_expired: Counter,
    pub(crate) stale_acks_refused: Counter,
    pub(crate) sessions_resumed: Counter,
    pub(crate) sessions_expired: Counter,
}

impl SessionMetrics {
    pub(crate) fn new() -> Self {
        Self {
            receipts_missed: counter!(RECEIPTS_MISSED),
            leases_expired: counter!(LEASES_EXPIRED),
            stale_acks_refused: counter!(STALE_ACKS_REFUSED),
            sessions_resumed: counter!(SESSIONS_RESUMED),
            sessions_expired: counter!(SESSIONS_EXPIRED),
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
