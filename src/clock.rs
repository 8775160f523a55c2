//! Wall-clock time as the wire and operators see it: milliseconds since the
//! Unix epoch. Deadlines inside the server use tokio's monotonic clock; this
//! is only for timestamps that leave the process (not-before times, "last
//! heard" columns, dead-letter times) and for reading ones that come in;
//! public so that the tools showing them (contactctl) read the same clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch at `at`; 0 before the epoch (a clock
/// set that far back is not worth an error on every timestamp).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms_now() -> u64 {
    unix_ms(SystemTime::now())
}
