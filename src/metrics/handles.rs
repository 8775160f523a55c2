//! The pre-resolved metric handles of the actors that count events: the
//! queue actor's [`QueueMetrics`], each session's [`SessionMetrics`], and
//! the registry's connected-workers gauge.
//!
//! Handles (`Counter`, `Gauge`) are resolved once, when an actor starts, so
//! the hot path only does atomic adds and no registry lookups. Every label
//! value here is a fixed string.

use metrics::{Counter, Gauge, counter, gauge};

use super::{
    DEAD_LETTERS_DROPPED, JOURNAL_BYTES, JOURNAL_COMPACTIONS, JOURNAL_SEGMENTS, LEASES_EXPIRED,
    RECEIPTS_MISSED, SESSIONS_EXPIRED, SESSIONS_RESUMED, STALE_ACKS_REFUSED, TASKS_ACKNOWLEDGED,
    TASKS_CANCELLED, TASKS_DEAD_LETTERED, TASKS_DISPATCHED, TASKS_IN_FLIGHT, TASKS_REDELIVERED,
    TASKS_SUBMITTED, TASKS_UNFINISHED_BYTES, WORKER_CREDIT, WORKERS_CONNECTED,
};
use crate::domain::DeadLetterReason;

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
    pub(crate) unfinished_bytes: Gauge,
    pub(crate) compactions: Counter,
    pub(crate) dead_letters_dropped_count: Counter,
    pub(crate) dead_letters_dropped_bytes: Counter,
    pub(crate) dead_letters_dropped_age: Counter,
    pub(crate) dead_letters_purged: Counter,
    pub(crate) journal_bytes: Gauge,
    pub(crate) journal_segments: Gauge,
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
            compactions: counter!(JOURNAL_COMPACTIONS),
            dead_letters_dropped_count: counter!(DEAD_LETTERS_DROPPED, "reason" => "count"),
            dead_letters_dropped_bytes: counter!(DEAD_LETTERS_DROPPED, "reason" => "bytes"),
            dead_letters_dropped_age: counter!(DEAD_LETTERS_DROPPED, "reason" => "age"),
            dead_letters_purged: counter!(DEAD_LETTERS_DROPPED, "reason" => "purged"),
            journal_bytes: gauge!(JOURNAL_BYTES),
            journal_segments: gauge!(JOURNAL_SEGMENTS),
            dead_lettered: DEAD_LETTER_REASONS
                .map(|reason| counter!(TASKS_DEAD_LETTERED, "reason" => reason.as_str())),
            cancelled: counter!(TASKS_CANCELLED),
            in_flight: gauge!(TASKS_IN_FLIGHT),
            unfinished_bytes: gauge!(TASKS_UNFINISHED_BYTES),
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
