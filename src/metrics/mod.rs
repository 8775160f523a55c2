//! Every metric name the server exports, their help texts, the label
//! values that are not free-form, and the process-wide Prometheus recorder.
//! The server installs the recorder once at start; every actor that counts
//! something takes its names (or pre-resolved handles) from here.
//!
//! Labels only take values from fixed sets; never a task id, client id or
//! error text. Gauges that describe state (queue depths and ages, tasks in
//! flight) are published when `/metrics` is scraped, not on every change.
//!
//! What lives where:
//! - `endpoint`: the `GET /metrics` HTTP endpoint;
//! - `handles`: the queue's and sessions' pre-resolved handles;
//! - `queue_gauges`: the per-queue gauges under a bounded label set;
//! - `rpc_errors`: the label sets of `contact_rpc_errors_total`, whose
//!   series are registered at zero when the recorder is installed;
//! - `histogram`: the server's own fixed-bucket latency histograms (the
//!   exporter's would keep every sample until the next scrape), declared
//!   below with their names and help.

mod endpoint;
mod handles;
mod histogram;
mod queue_gauges;
pub(crate) mod rpc_errors;

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub(crate) use endpoint::{HttpAccess, serve};
pub(crate) use handles::{QueueMetrics, SessionMetrics, workers_connected};
pub(crate) use histogram::LatencyBatch;
use histogram::{COARSE_BOUNDS_US, FINE_BOUNDS_US, LatencyHistogram};
pub(crate) use queue_gauges::{QueueGauges, QueueSample};

/// Counter: tasks accepted, by `target` (`queue` or `client`).
pub(crate) const TASKS_SUBMITTED: &str = "contact_tasks_submitted_total";
/// Counter: task deliveries pushed to workers (redeliveries included).
pub(crate) const TASKS_DISPATCHED: &str = "contact_tasks_dispatched_total";
/// Counter: acknowledgements applied, by `outcome` (`done`, `failed`, `retry`).
pub(crate) const TASKS_ACKNOWLEDGED: &str = "contact_tasks_acknowledged_total";
/// Counter: tasks put back for another delivery, by `reason`
/// (`worker_lost`, `lease_expired`, `receipt_missed`, `failed`, `retry`).
pub(crate) const TASKS_REDELIVERED: &str = "contact_tasks_redelivered_total";
/// Counter: tasks given up on, by `reason` (`max_attempts`,
/// `failed_permanently`, `expired`, `undeliverable`).
pub(crate) const TASKS_DEAD_LETTERED: &str = "contact_tasks_dead_lettered_total";
/// Counter: tasks cancelled by producers.
pub(crate) const TASKS_CANCELLED: &str = "contact_tasks_cancelled_total";
/// Counter: dead letters dropped past their retention, or purged.
pub(crate) const DEAD_LETTERS_DROPPED: &str = "contact_dead_letters_dropped_total";
/// Counter: calls refused by authentication or authorization, by reason.
pub(crate) const AUTH_REFUSALS: &str = "contact_auth_refusals_total";
/// Counter: journal compactions (tasks of the oldest segment carried forward).
pub(crate) const JOURNAL_COMPACTIONS: &str = "contact_journal_compactions_total";
/// Histogram: duration of each journal fdatasync.
pub(crate) const JOURNAL_FSYNC: &str = "contact_journal_fsync_seconds";
/// Counter: journal writes (one per group-committed batch).
pub(crate) const JOURNAL_WRITES: &str = "contact_journal_writes_total";
/// Counter: bytes written to the journal.
pub(crate) const JOURNAL_WRITTEN_BYTES: &str = "contact_journal_written_bytes_total";
/// Gauge: bytes of journal on disk.
pub(crate) const JOURNAL_BYTES: &str = "contact_journal_bytes";
/// Gauge: journal segment files.
pub(crate) const JOURNAL_SEGMENTS: &str = "contact_journal_segments";
/// Gauge: how long the last start took to replay the journal.
pub(crate) const JOURNAL_RECOVERY_SECONDS: &str = "contact_journal_recovery_seconds";
/// Counter: deliveries whose receipt did not come in time.
pub(crate) const RECEIPTS_MISSED: &str = "contact_receipts_missed_total";
/// Counter: deliveries whose execution lease ran out.
pub(crate) const LEASES_EXPIRED: &str = "contact_leases_expired_total";
/// Counter: acks, receipts and extensions refused because their attempt was
/// no longer current (or the task had been taken back).
pub(crate) const STALE_ACKS_REFUSED: &str = "contact_stale_acks_refused_total";
/// Counter: sessions resumed by a reconnecting worker.
pub(crate) const SESSIONS_RESUMED: &str = "contact_sessions_resumed_total";
/// Counter: sessions expired because their worker went silent.
pub(crate) const SESSIONS_EXPIRED: &str = "contact_sessions_expired_total";
/// Counter: gRPC calls that failed, by `method` (a fixed list, else
/// `other`) and `code` (the gRPC status code's name). The likely series
/// exist at zero from the start; see `rpc_errors`.
pub(crate) const RPC_ERRORS: &str = "contact_rpc_errors_total";
/// Gauge: tasks waiting to be delivered (ready or delayed), by `queue`.
pub(crate) const QUEUE_DEPTH: &str = "contact_queue_depth";
/// Gauge: how long the oldest ready task of a queue has been due, by `queue`.
pub(crate) const QUEUE_OLDEST_AGE: &str = "contact_queue_oldest_task_age_seconds";
/// Gauge: tasks pushed to a worker and not yet acknowledged.
pub(crate) const TASKS_IN_FLIGHT: &str = "contact_tasks_in_flight";
/// Gauge: open connections of the gRPC listener.
pub(crate) const CONNECTIONS_OPEN: &str = "contact_connections_open";
/// Gauge: calls (HTTP/2 streams) open over all gRPC connections.
pub(crate) const CALLS_OPEN: &str = "contact_calls_open";
/// Counter: calls whose response stream ended before its end (reset).
pub(crate) const CALLS_RESET: &str = "contact_calls_reset_total";
/// Counter: connections closed at accept because the limit was reached.
pub(crate) const CONNECTIONS_REFUSED: &str = "contact_connections_refused_total";
/// Counter: connections the server closed, by reason.
pub(crate) const CONNECTIONS_CLOSED: &str = "contact_connections_closed_total";
/// Gauge: bytes (text and payload) of tasks not yet finished.
pub(crate) const TASKS_UNFINISHED_BYTES: &str = "contact_tasks_unfinished_bytes";
/// Gauge: workers with a session (an open getTask stream, or one waiting
/// to resume).
pub(crate) const WORKERS_CONNECTED: &str = "contact_workers_connected";
/// Gauge: the in-flight limits (credit) of those workers, summed.
pub(crate) const WORKER_CREDIT: &str = "contact_worker_credit";
/// Histogram: from a task being due to its first delivery.
pub(crate) const SUBMIT_TO_DISPATCH: &str = "contact_task_submit_to_dispatch_seconds";
/// Histogram: from a delivery to its receipt.
pub(crate) const DISPATCH_TO_RECEIPT: &str = "contact_task_dispatch_to_receipt_seconds";
/// Histogram: from a delivery to its acknowledgement.
pub(crate) const DISPATCH_TO_ACK: &str = "contact_task_dispatch_to_ack_seconds";

/// The `queue` label of tasks targeted at one worker rather than a queue.
/// Parentheses cannot appear in a queue name, so it never collides.
pub(crate) const TARGETED_LABEL: &str = "(worker)";
/// The `queue` label of queues beyond the labelled ones.
pub(crate) const OTHER_LABEL: &str = "(other)";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once, describes every metric,
/// registers the rpc error series at zero, and returns its handle. Later
/// calls (several servers in one test process) share the first recorder.
pub(crate) fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe_all();
            rpc_errors::register_all();
            crate::auth::layer::register_metrics();
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
        DEAD_LETTERS_DROPPED,
        Unit::Count,
        "Dead letters dropped past their retention (reason: count, bytes, age) or purged."
    );
    describe_counter!(
        AUTH_REFUSALS,
        Unit::Count,
        "Calls refused: missing or unknown credentials (UNAUTHENTICATED), a missing role, another worker's id or a queue out of scope (PERMISSION_DENIED)."
    );
    describe_counter!(
        JOURNAL_COMPACTIONS,
        Unit::Count,
        "Journal compactions: the live tasks of the oldest segment carried forward so it can go."
    );
    describe_counter!(
        JOURNAL_WRITES,
        Unit::Count,
        "Journal writes: one per batch of records group-committed together."
    );
    describe_counter!(
        JOURNAL_WRITTEN_BYTES,
        Unit::Bytes,
        "Bytes written to the journal (divided by the writes: the average batch)."
    );
    describe_gauge!(
        JOURNAL_BYTES,
        Unit::Bytes,
        "Bytes of journal segments on disk (0 in memory mode)."
    );
    describe_gauge!(
        JOURNAL_SEGMENTS,
        Unit::Count,
        "Journal segment files on disk (0 in memory mode)."
    );
    describe_gauge!(
        JOURNAL_RECOVERY_SECONDS,
        Unit::Seconds,
        "How long the last start took to open and replay the journal."
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
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Tasks waiting to be delivered, ready or delayed, by queue."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "How long the oldest ready task of each queue has been due."
    );
    describe_gauge!(
        WORKER_CREDIT,
        Unit::Count,
        "In-flight limits (credit) of workers with a session, summed."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        Unit::Count,
        "Open connections of the gRPC listener, against server.max_connections."
    );
    describe_gauge!(
        CALLS_OPEN,
        Unit::Count,
        "Calls (HTTP/2 streams) open over all gRPC connections; each connection has at most server.max_concurrent_streams."
    );
    describe_counter!(
        CALLS_RESET,
        Unit::Count,
        "Calls whose response was dropped before its end: the stream reset by either side (a connection resetting more than server.max_local_reset_streams is closed), or the connection gone."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections closed at accept: reason=limit, server.max_connections were open."
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        Unit::Count,
        "Connections the server closed: reason=handshake_timeout (no TLS handshake and HTTP/2 preface in time), tls_handshake (it failed), not_http2, or idle (no call open for server.idle_timeout_secs)."
    );
    describe_gauge!(
        TASKS_UNFINISHED_BYTES,
        Unit::Bytes,
        "Bytes (text and payload) of tasks not yet finished, against tasks.max_pending_bytes."
    );
    describe_gauge!(
        TASKS_IN_FLIGHT,
        Unit::Count,
        "Tasks pushed to a worker and not yet acknowledged."
    );
    describe_gauge!(
        WORKERS_CONNECTED,
        Unit::Count,
        "Workers with a session: an open getTask stream, or one waiting to resume."
    );
}

/// Every histogram `/metrics` renders.
static HISTOGRAMS: [&LatencyHistogram; 4] = [
    &SUBMIT_TO_DISPATCH_SECONDS,
    &DISPATCH_TO_RECEIPT_SECONDS,
    &DISPATCH_TO_ACK_SECONDS,
    &JOURNAL_FSYNC_SECONDS,
];

/// How long each journal `fdatasync` took (`storage.sync = "fsync"`).
/// Recorded by the journal's writer thread.
pub(crate) static JOURNAL_FSYNC_SECONDS: LatencyHistogram = LatencyHistogram::new(
    JOURNAL_FSYNC,
    "How long each journal fdatasync took (storage.sync = fsync).",
    FINE_BOUNDS_US,
);

/// From a task being due (submitted, or its delay over) to its first
/// delivery. Recorded by the queue actor.
pub(crate) static SUBMIT_TO_DISPATCH_SECONDS: LatencyHistogram = LatencyHistogram::new(
    SUBMIT_TO_DISPATCH,
    "From a task being due (submitted or its delay over) to its first delivery; 1 ms resolution.",
    COARSE_BOUNDS_US,
);

/// From a delivery being pushed to its receipt. Recorded by sessions.
pub(crate) static DISPATCH_TO_RECEIPT_SECONDS: LatencyHistogram = LatencyHistogram::new(
    DISPATCH_TO_RECEIPT,
    "From a delivery being pushed to the worker's receipt (workers that confirm receipts).",
    FINE_BOUNDS_US,
);

/// From a delivery being pushed to its acknowledgement. Recorded by sessions.
pub(crate) static DISPATCH_TO_ACK_SECONDS: LatencyHistogram = LatencyHistogram::new(
    DISPATCH_TO_ACK,
    "From a delivery being pushed to its acknowledgement, any outcome.",
    FINE_BOUNDS_US,
);
