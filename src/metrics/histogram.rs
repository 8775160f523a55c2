//! The server's own latency histograms: fixed buckets of atomic counters,
//! rendered in the Prometheus text format next to the exporter's output.
//!
//! The exporter keeps every histogram sample (value and timestamp) until
//! the next scrape, which at hundreds of thousands of tasks a second is
//! tens of megabytes; fixed buckets cost nothing to hold. The histograms
//! themselves (names, help, which bounds) are declared in the parent
//! module; the queue and session actors record into them, and the
//! `/metrics` endpoint renders them.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds, in microseconds, of the buckets of latencies measured in
/// the sessions (full clock resolution): 100 µs to 5 minutes.
pub(super) const FINE_BOUNDS_US: [u64; HISTOGRAM_BUCKETS] = [
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
pub(super) const COARSE_BOUNDS_US: [u64; HISTOGRAM_BUCKETS] = [
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
    pub(super) const fn new(
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
    pub(super) fn render(&self, out: &mut String) {
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
