//! The overview's rates: once a second the queue's totals are sampled, and
//! the last five minutes of samples are kept, so a page can draw submitted,
//! done and failed per second from the server's own counts, however late
//! it was opened.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::queue::{QueueHandle, Totals};

/// Samples kept: one a second for five minutes, and one more to difference.
const SAMPLES: usize = 301;

/// How long a sample may wait for a busy queue before it is skipped.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);

/// Events per second over one interval between samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct RatePoint {
    /// The end of the interval (ms since the Unix epoch).
    pub(crate) unix_ms: u64,
    pub(crate) submitted: f64,
    pub(crate) done: f64,
    pub(crate) failed: f64,
    pub(crate) dead_lettered: f64,
}

/// One sample: when it was asked for (the interval between two comes from
/// the monotonic clock; the Unix time is for display) and the totals.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    unix_ms: u64,
    totals: Totals,
}

/// The samples, shared by the sampler and the API.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rates {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

impl Rates {
    /// Starts sampling `queue` until `stop` is cancelled.
    pub(crate) fn start(queue: QueueHandle, stop: CancellationToken) -> Self {
        let rates = Self::default();
        let samples = rates.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (at, unix_ms) = (Instant::now(), crate::clock::unix_ms_now());
                if let Ok(Ok(totals)) = tokio::time::timeout(SAMPLE_TIMEOUT, queue.totals()).await {
                    samples.record(Sample {
                        at,
                        unix_ms,
                        totals,
                    });
                }
            }
        });
        rates
    }

    fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back(sample);
        while samples.len() > SAMPLES {
            samples.pop_front();
        }
    }

    /// The latest totals, if a sample has been taken.
    pub(crate) fn latest(&self) -> Option<Totals> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.back().map(|sample| sample.totals)
    }

    /// Per-second rates between consecutive samples, oldest first.
    pub(crate) fn per_second(&self) -> Vec<RatePoint> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .filter(|(before, after)| after.at > before.at)
            .map(|(before, after)| {
                let seconds = (after.at - before.at).as_secs_f64();
                let (a, b) = (before.totals, after.totals);
                let rate = |from: u64, to: u64| to.saturating_sub(from) as f64 / seconds;
                RatePoint {
                    unix_ms: after.unix_ms,
                    submitted: rate(a.submitted, b.submitted),
                    done: rate(a.done, b.done),
                    failed: rate(a.failed, b.failed),
                    dead_lettered: rate(a.dead_lettered, b.dead_lettered),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(submitted: u64, done: u64) -> Totals {
        Totals {
            submitted,
            done,
            ..Totals::default()
        }
    }

    #[test]
    fn rates_are_differences_over_the_interval_and_the_window_is_bounded() {
        let rates = Rates::default();
        let start = Instant::now();
        let record = |ms: u64, totals: Totals| {
            rates.record(Sample {
                at: start + std::time::Duration::from_millis(ms),
                unix_ms: ms,
                totals,
            })
        };
        record(1_000, totals(0, 0));
        record(2_000, totals(10, 4));
        record(4_000, totals(30, 4));
        let points = rates.per_second();
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].submitted, points[0].done), (10.0, 4.0));
        assert_eq!((points[1].unix_ms, points[1].submitted), (4_000, 10.0));
        for i in 0..1_000 {
            record(5_000 + i * 1_000, totals(i, i));
        }
        assert_eq!(rates.per_second().len(), SAMPLES - 1);
        assert_eq!(rates.latest(), Some(totals(999, 999)));
    }
}
