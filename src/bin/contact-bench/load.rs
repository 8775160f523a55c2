//! Load-generation helpers shared by the scenarios and the ceiling: stamped
//! payloads, an open-loop schedule, histograms, connections.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// Wall-clock nanoseconds: comparable across the processes of one machine.
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A payload of `size` bytes (at least 8) whose first 8 bytes are `stamp`.
pub(crate) fn payload(size: usize, stamp: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(8));
    buf.put_u64(stamp);
    buf.resize(size.max(8), 0x5a);
    buf.freeze()
}

fn stamp_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// A histogram of microseconds, 1 µs to 100 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    // INVARIANT: constant bounds that hdrhistogram accepts (low >= 1,
    // high >= 2 * low, 3 significant figures).
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Records the time since the stamp in `payload`, in microseconds.
pub(crate) fn record_since(histogram: &mut Histogram<u64>, payload: &[u8]) {
    if let Some(stamp) = stamp_of(payload) {
        let micros = now_nanos().saturating_sub(stamp) / 1000;
        histogram.saturating_record(micros.max(1));
    }
}

/// Open-loop sending: the i-th send is due at start + i / rate, whatever
/// happened to earlier ones, and carries that due time as its stamp, so a
/// stall shows up as latency instead of being hidden (no coordinated omission).
#[derive(Debug)]
pub(crate) struct Schedule {
    start: Instant,
    start_nanos: u64,
    interval: Duration,
    sent: u64,
}

impl Schedule {
    pub(crate) fn new(rate: f64) -> Self {
        Self {
            start: Instant::now(),
            start_nanos: now_nanos(),
            interval: Duration::from_secs_f64(1.0 / rate.max(1.0)),
            sent: 0,
        }
    }

    /// Waits until the next send is due; returns its due time as a stamp.
    pub(crate) async fn next(&mut self) -> u64 {
        let offset = self.interval.mul_f64(self.sent as f64);
        self.sent += 1;
        tokio::time::sleep_until(self.start + offset).await;
        self.start_nanos + offset.as_nanos() as u64
    }
}

pub(crate) async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}
