//! What a session tells the registry about its worker: the record it
//! registers, and the counters it keeps up to date for operators to read.
//!
//! These types belong to the session, which creates and writes them; the
//! registry stores and reads them (and imports them from here), so the
//! session depends on the registry only for its handle.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64},
    },
};

use super::SessionHandle;
use crate::domain::{ClientId, QueueName};

/// Counters a session keeps about its worker and the registry reads.
/// Each field has one writer (the session); atomics keep the hot path free
/// of messages and locks.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    /// Its in-flight limit (credit), which it may change at runtime.
    pub(crate) max_in_flight: AtomicU32,
    /// Tasks pushed and not yet acknowledged.
    pub(crate) in_flight: AtomicU32,
    /// When the worker last acknowledged a task, in milliseconds since the Unix epoch.
    pub(crate) last_ack_unix_ms: AtomicU64,
}

/// What a session registers about its worker; the registry keeps it while
/// the worker is connected.
#[derive(Debug)]
pub(crate) struct WorkerRecord {
    /// The worker.
    pub(crate) client: ClientId,
    /// True when the server chose the id: the worker can only be found by
    /// its connection.
    pub(crate) generated_id: bool,
    /// Its getTask session.
    pub(crate) session: SessionHandle,
    /// The connection's peer address, when the transport knows it.
    pub(crate) peer: Option<SocketAddr>,
    /// Its queues.
    pub(crate) queues: Arc<[QueueName]>,
    /// Shared counters, written by the session.
    pub(crate) stats: Arc<WorkerStats>,
}
