//! Every metric name the server exports, their help texts, the process-wide
//! Prometheus recorder, and the small HTTP server for `GET /metrics`.
//!
//! The exporter's own listener is not used: it binds inside its builder and
//! cannot report the port it got, and tests bind `127.0.0.1:0`. Labels only
//! take values from fixed sets; never a task id, client id or error text.
//!
//! Handles (`Counter`, `Gauge`) are resolved once, when an actor starts, so
//! the hot path only does atomic adds and no registry lookups. Gauges that
//! describe state (queue depths and ages, tasks in flight) are published
//! when `/metrics` is scraped, not on every change.
//!
//! The latency histograms are this module's own ([`LatencyHistogram`]):
//! the exporter keeps every histogram sample (value and timestamp) until
//! the next scrape, which at hundreds of thousands of tasks a second is
//! tens of megabytes; fixed buckets of atomic counters cost nothing to hold.

use std::{
    collections::HashMap,
    fmt::Write as _,
    future::Future,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::{DeadLetterReason, QueueName};

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
/// Gauge: tasks waiting to be delivered (ready or delayed), by `queue`.
pub const QUEUE_DEPTH: &str = "contact_queue_depth";
/// Gauge: how long the oldest ready task of a queue has been due, by `queue`.
pub const QUEUE_OLDEST_AGE: &str = "contact_queue_oldest_task_age_seconds";
/// Gauge: tasks pushed to a worker and not yet acknowledged.
pub const TASKS_IN_FLIGHT: &str = "contact_tasks_in_flight";
/// Gauge: workers with a session (an open getTask stream, or one waiting
/// to resume).
pub const WORKERS_CONNECTED: &str = "contact_workers_connected";
/// Gauge: the in-flight limits (credit) of those workers, summed.
pub const WORKER_CREDIT: &str = "contact_worker_credit";
/// Histogram: from a task being due to its first delivery.
pub const SUBMIT_TO_DISPATCH: &str = "contact_task_submit_to_dispatch_seconds";
/// Histogram: from a delivery to its receipt.
pub const DISPATCH_TO_RECEIPT: &str = "contact_task_dispatch_to_receipt_seconds";
/// Histogram: from a delivery to its acknowledgement.
pub const DISPATCH_TO_ACK: &str = "contact_task_dispatch_to_ack_seconds";

/// The `queue` label of tasks targeted at one worker rather than a queue.
/// Parentheses cannot appear in a queue name, so it never collides.
pub const TARGETED_LABEL: &str = "(worker)";
/// The `queue` label of queues beyond the labelled ones.
pub const OTHER_LABEL: &str = "(other)";

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
    pub(crate) worker_credit: Gauge,
}

impl SessionMetrics {
    pub(crate) fn new() -> Self {
        Self {
            receipts_missed: counter!(RECEIPTS_MISSED),
            leases_expired: counter!(LEASES_EXPIRED),
            stale_acks_refused: counter!(STALE_ACKS_REFUSED),
            sessions_resumed: counter!(SESSIONS_RESUMED),
            sessions_expired: counter!(SESSIONS_EXPIRED),
            worker_credit: gauge!(WORKER_CREDIT),
        }
    }
}

/// The gauge of connected workers, kept by the registry.
pub(crate) fn workers_connected() -> Gauge {
    gauge!(WORKERS_CONNECTED)
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled. Each
/// scrape first awaits `refresh`, which publishes the state gauges.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: F,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let refresh = refresh.clone();
            async move {
                refresh().await;
                let mut text = handle.render();
                for histogram in HISTOGRAMS {
                    histogram.render(&mut text);
                }
                text
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// The state gauges of each queue: depth and oldest-task age, under a label
/// set of bounded size. Queues named in the config, then the first others
/// seen, get their own label up to the limit; later ones share
/// [`OTHER_LABEL`]. A labelled queue keeps its label (at zero when empty),
/// so series do not come and go.
#[derive(Debug)]
pub(crate) struct QueueGauges {
    limit: usize,
    labelled: HashMap<QueueName, QueueSeries>,
    targeted: QueueSeries,
    other: QueueSeries,
}

#[derive(Debug)]
struct QueueSeries {
    depth: Gauge,
    oldest_age: Gauge,
    sum_depth: usize,
    max_age: Duration,
}

impl QueueSeries {
    fn new(label: &str) -> Self {
        let label = label.to_owned();
        Self {
            depth: gauge!(QUEUE_DEPTH, "queue" => label.clone()),
            oldest_age: gauge!(QUEUE_OLDEST_AGE, "queue" => label),
            sum_depth: 0,
            max_age: Duration::ZERO,
        }
    }

    fn add(&mut self, depth: usize, oldest_age: Option<Duration>) {
        self.sum_depth += depth;
        self.max_age = self.max_age.max(oldest_age.unwrap_or_default());
    }

    fn publish(&mut self) {
        self.depth.set(self.sum_depth as f64);
        self.oldest_age.set(self.max_age.as_secs_f64());
        self.sum_depth = 0;
        self.max_age = Duration::ZERO;
    }
}

/// One queue's (or one targeted worker's) state, as [`QueueGauges`] reads it.
#[derive(Debug)]
pub(crate) struct QueueSample<'a> {
    /// The queue, or `None` for tasks targeted at a worker.
    pub(crate) queue: Option<&'a QueueName>,
    /// Pending tasks, ready or delayed.
    pub(crate) depth: usize,
    /// How long its oldest ready task has been due, if any is ready.
    pub(crate) oldest_age: Option<Duration>,
}

impl QueueGauges {
    /// Gauges for up to `limit` queue labels, `preferred` first.
    pub(crate) fn new<'a>(
        limit: usize,
        preferred: impl IntoIterator<Item = &'a QueueName>,
    ) -> Self {
        let mut gauges = Self {
            limit,
            labelled: HashMap::new(),
            targeted: QueueSeries::new(TARGETED_LABEL),
            other: QueueSeries::new(OTHER_LABEL),
        };
        for queue in preferred {
            gauges.label(queue);
        }
        gauges
    }

    fn label(&mut self, queue: &QueueName) -> &mut QueueSeries {
        if !self.labelled.contains_key(queue) && self.labelled.len() < self.limit {
            self.labelled
                .insert(queue.clone(), QueueSeries::new(queue.as_str()));
        }
        self.labelled.get_mut(queue).unwrap_or(&mut self.other)
    }

    /// Sets every gauge from `samples`; labelled queues missing from them
    /// are empty. Queues new at the same scrape are labelled in name order,
    /// so which ones get a label does not depend on hashing.
    pub(crate) fn publish<'a>(&mut self, samples: impl IntoIterator<Item = QueueSample<'a>>) {
        let mut samples: Vec<QueueSample<'a>> = samples.into_iter().collect();
        samples.sort_unstable_by(|a, b| a.queue.cmp(&b.queue));
        for sample in samples {
            let series = match sample.queue {
                Some(queue) => self.label(queue),
                None => &mut self.targeted,
            };
            series.add(sample.depth, sample.oldest_age);
        }
        for series in self.labelled.values_mut() {
            series.publish();
        }
        self.targeted.publish();
        self.other.publish();
    }
}

/// Every histogram `/metrics` renders.
static HISTOGRAMS: [&LatencyHistogram; 3] = [
    &SUBMIT_TO_DISPATCH_SECONDS,
    &DISPATCH_TO_RECEIPT_SECONDS,
    &DISPATCH_TO_ACK_SECONDS,
];

/// Upper bounds, in microseconds, of the buckets of latencies measured in
/// the sessions (full clock resolution): 100 µs to 5 minutes.
const FINE_BOUNDS_US: [u64; HISTOGRAM_BUCKETS] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    60_000_000,
    300_000_000,
];

/// Upper bounds, in microseconds, for the queue's wait, which it measures
/// in whole milliseconds (the clock stamp it keeps per task is 4 bytes):
/// 1 ms to an hour.
const COARSE_BOUNDS_US: [u64; HISTOGRAM_BUCKETS] = [
    1_000,
    2_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];

const HISTOGRAM_BUCKETS: usize = 18;

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

/// A Prometheus histogram with fixed buckets: recording is two relaxed
/// atomic adds, holding it costs a few hundred bytes whatever the rate.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    name: &'static str,
    help: &'static str,
    bounds_us: [u64; HISTOGRAM_BUCKETS],
    /// Per bucket (not cumulative), then the overflow past the last bound.
    counts: [AtomicU64; HISTOGRAM_BUCKETS + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    const fn new(
        name: &'static str,
        help: &'static str,
        bounds_us: [u64; HISTOGRAM_BUCKETS],
    ) -> Self {
        Self {
            name,
            help,
            bounds_us,
            counts: [const { AtomicU64::new(0) }; HISTOGRAM_BUCKETS + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one latency.
    pub(crate) fn record(&self, latency: Duration) {
        let (bucket, us) = self.bucket(latency);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The bucket of a latency, and the latency in microseconds.
    fn bucket(&self, latency: Duration) -> (usize, u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        (self.bounds_us.partition_point(|bound| *bound < us), us)
    }

    /// Latencies to gather over a batch and add at once, so actors on
    /// several cores do not contend for the counters once per sample.
    pub(crate) fn batch(&'static self) -> LatencyBatch {
        LatencyBatch {
            histogram: self,
            counts: [0; HISTOGRAM_BUCKETS + 1],
            sum_us: 0,
            len: 0,
        }
    }

    /// Appends the histogram in the text exposition format.
    fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds_us.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[HISTOGRAM_BUCKETS].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
        out.push('\n');
    }
}

/// Samples for one histogram, added to it when dropped.
#[derive(Debug)]
pub(crate) struct LatencyBatch {
    histogram: &'static LatencyHistogram,
    counts: [u32; HISTOGRAM_BUCKETS + 1],
    sum_us: u64,
    len: u32,
}

impl LatencyBatch {
    /// Records one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        let (bucket, us) = self.histogram.bucket(latency);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.len += 1;
    }
}

impl Drop for LatencyBatch {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        for (shared, count) in self.histogram.counts.iter().zip(self.counts) {
            if count > 0 {
                shared.fetch_add(u64::from(count), Ordering::Relaxed);
            }
        }
        self.histogram
            .sum_us
            .fetch_add(self.sum_us, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Samples land in the first bucket whose bound is not below them;
    /// buckets render cumulative, with +Inf, sum and count.
    #[test]
    fn histogram_buckets_and_renders() {
        let histogram = LatencyHistogram::new("t_seconds", "Test.", FINE_BOUNDS_US);
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_micros(101));
        histogram.record(Duration::from_secs(3600));
        let mut text = String::new();
        histogram.render(&mut text);
        assert!(text.contains("# TYPE t_seconds histogram\n"), "{text}");
        assert!(
            text.contains("t_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{le=\"0.00025\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"300\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_count 3\n"), "{text}");
        assert!(text.contains("t_seconds_sum 3600.000201\n"), "{text}");
    }

    static BATCHED: LatencyHistogram = LatencyHistogram::new("b_seconds", "Test.", FINE_BOUNDS_US);

    /// A batch adds its samples to the histogram when dropped, not before.
    #[test]
    fn batches_add_up_when_dropped() {
        let mut batch = BATCHED.batch();
        batch.record(Duration::from_micros(50));
        batch.record(Duration::from_micros(50));
        batch.record(Duration::from_secs(1));
        let mut text = String::new();
        BATCHED.render(&mut text);
        assert!(text.contains("b_seconds_count 0\n"), "{text}");
        drop(batch);
        text.clear();
        BATCHED.render(&mut text);
        assert!(
            text.contains("b_seconds_bucket{le=\"0.0001\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("b_seconds_bucket{le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("b_seconds_count 3\n"), "{text}");
        assert!(text.contains("b_seconds_sum 1.0001\n"), "{text}");
    }
}
