//! A reusable timer for actor loops. Arming a fresh `sleep_until` on every
//! turn of a busy loop registers and drops a timer entry each time, which
//! showed up in profiles; an `Alarm` keeps one timer and only moves it when
//! the deadline changes.

use std::{pin::Pin, time::Duration};

use tokio::time::{Instant, Sleep, sleep_until};

/// Far enough ahead to stand for "never" without overflowing.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// One timer, re-armed in place.
#[derive(Debug)]
pub(crate) struct Alarm {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Alarm {
    pub(crate) fn new() -> Self {
        Self {
            sleep: Box::pin(sleep_until(Instant::now() + NEVER)),
            armed: None,
        }
    }

    /// Sets the next deadline; `None` disarms.
    pub(crate) fn set(&mut self, at: Option<Instant>) {
        if at != self.armed {
            if let Some(at) = at {
                self.sleep.as_mut().reset(at);
            }
            self.armed = at;
        }
    }

    /// Resolves at the armed deadline; never while disarmed. Firing disarms
    /// it, so the same deadline set again re-arms it.
    pub(crate) async fn fired(&mut self) {
        if self.armed.is_none() {
            std::future::pending::<()>().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// It fires at the deadline it was given, and is quiet when disarmed.
    #[tokio::test(start_paused = true)]
    async fn fires_when_armed() {
        let mut alarm = Alarm::new();
        let start = Instant::now();
        alarm.set(Some(start + Duration::from_secs(5)));
        alarm.fired().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
        alarm.set(None);
        let quiet = tokio::time::timeout(Duration::from_secs(60), alarm.fired()).await;
        assert!(quiet.is_err());
    }
}
