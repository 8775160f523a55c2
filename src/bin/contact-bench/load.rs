//! Load-generation helpers shared by the scenarios and the ceiling: stamped
//! payloads, an open-loop schedule, histograms, connections.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::{BufMut, Bytes, BytesMut};
use contact_server::client::{AuthChannel, Credentials};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

/// What the load generator's connections present: none, or TLS and a
/// token (the security scenario sets them for its run).
static CREDENTIALS: std::sync::RwLock<Option<Credentials>> = std::sync::RwLock::new(None);

/// The credentials every later connection uses; `None`: plain, no token.
pub(crate) fn use_credentials(credentials: Option<Credentials>) {
    if let Ok(mut current) = CREDENTIALS.write() {
        *current = credentials;
    }
}

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

/// Open-loop sending: the i-th item is due at start + i / rate, whatever
/// happened to earlier ones, and carries that due time as its stamp, so a
/// stall shows up as latency instead of being hidden (no coordinated
/// omission). A dedicated thread keeps the schedule: tokio's timer ticks in
/// whole milliseconds, which alone would add up to a millisecond of latency.
pub(crate) fn schedule<T: Send + 'static>(
    rate: f64,
    count: u64,
    make: impl Fn(u64) -> T + Send + 'static,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel(4096);
    std::thread::spawn(move || {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
        let start = std::time::Instant::now();
        let start_nanos = now_nanos();
        for i in 0..count {
            let offset = interval.mul_f64(i as f64);
            let due = start + offset;
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx
                .blocking_send(make(start_nanos + offset.as_nanos() as u64))
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// A connection to `url`, with the credentials of the moment (checked by
/// the server once per call, and the token added once per call here).
pub(crate) async fn connect(url: &str) -> anyhow::Result<AuthChannel> {
    let credentials = CREDENTIALS.read().ok().and_then(|c| c.clone());
    match credentials {
        Some(credentials) => {
            let channel = contact_server::client::dial(url, &credentials)
                .await
                .with_context(|| format!("cannot connect to {url} over TLS"))?;
            Ok(credentials.channel(channel))
        }
        None => {
            let channel = Endpoint::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            Ok(Credentials::none().channel(channel))
        }
    }
}
