//! The per-queue state gauges (`contact_queue_depth`,
//! `contact_queue_oldest_task_age_seconds`) under a label set of bounded
//! size, so a producer inventing queue names cannot flood Prometheus with
//! series.
//!
//! The queue actor owns one [`QueueGauges`] and publishes into it when
//! `/metrics` is scraped, not on every change.

use std::{collections::HashMap, time::Duration};

use metrics::{Gauge, gauge};

use super::{OTHER_LABEL, QUEUE_DEPTH, QUEUE_OLDEST_AGE, TARGETED_LABEL};
use crate::domain::QueueName;

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

/// One label's gauges, and what the samples of the current publish add up
/// to (several queues share the "(other)" series).
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
