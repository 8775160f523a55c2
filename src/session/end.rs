//! How a session ends, and what it tells the worker about it: the final
//! status of the getTask stream, carrying a machine-readable reason in the
//! `END_REASON_KEY` metadata so a worker knows whether to reconnect.
//!
//! The session actor decides the end; this file only names the cases and
//! words the goodbye, so the wording and codes are in one place.

use std::time::Duration;

use tonic::{
    Status,
    metadata::{MetadataMap, MetadataValue},
};

use crate::domain::{END_REASON_KEY, EndReason};

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The worker closed the stream or its connection dropped (and it did
    /// not resume in time), or an operator disconnected it.
    Disconnected {
        /// An operator's doing: the worker is still there to be told.
        by_operator: bool,
    },
    /// The server drained and this worker acknowledged everything.
    Drained,
    /// The server is stopping now (or an actor it needs is gone).
    Shutdown,
    /// The worker was silent past the liveness timeout.
    Expired,
    /// A resuming session took over.
    HandedOver,
}

impl End {
    /// The status the stream ends with, or `None` when nobody is left to
    /// read it (the worker left, or its new session has the stream).
    /// `operator_drain` says a drain came from an operator rather than the
    /// server stopping; `liveness_timeout` is quoted to an expired worker.
    pub(super) fn status(self, operator_drain: bool, liveness_timeout: Duration) -> Option<Status> {
        let (reason, message) = match self {
            End::Drained if operator_drain => (
                EndReason::Drained,
                "drained by an operator; every task was acknowledged".to_owned(),
            ),
            End::Disconnected { by_operator: true } => (
                EndReason::Disconnected,
                "disconnected by an operator; held tasks went to other workers".to_owned(),
            ),
            End::Drained | End::Shutdown => (
                EndReason::ShuttingDown,
                "server is shutting down".to_owned(),
            ),
            End::Expired => (
                EndReason::Expired,
                format!(
                    "no message from this worker for {} s; its tasks were redelivered",
                    liveness_timeout.as_secs()
                ),
            ),
            End::Disconnected { .. } | End::HandedOver => return None,
        };
        let mut metadata = MetadataMap::new();
        metadata.insert(END_REASON_KEY, MetadataValue::from_static(reason.as_str()));
        Some(Status::with_metadata(
            tonic::Code::Unavailable,
            message,
            metadata,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVENESS: Duration = Duration::from_secs(45);

    fn reason(status: &Status) -> Option<&str> {
        status
            .metadata()
            .get(END_REASON_KEY)
            .and_then(|v| v.to_str().ok())
    }

    /// A worker that is gone, or whose new session owns the stream, is
    /// told nothing.
    #[test]
    fn no_status_when_nobody_reads() {
        assert!(
            End::Disconnected { by_operator: false }
                .status(false, LIVENESS)
                .is_none()
        );
        assert!(End::HandedOver.status(true, LIVENESS).is_none());
    }

    /// Every goodbye is UNAVAILABLE with the reason a worker acts on.
    #[test]
    fn statuses_carry_their_reason() {
        let cases = [
            (End::Drained, true, EndReason::Drained),
            (End::Drained, false, EndReason::ShuttingDown),
            (End::Shutdown, true, EndReason::ShuttingDown),
            (
                End::Disconnected { by_operator: true },
                false,
                EndReason::Disconnected,
            ),
            (End::Expired, false, EndReason::Expired),
        ];
        for (end, operator_drain, expected) in cases {
            let Some(status) = end.status(operator_drain, LIVENESS) else {
                panic!("{end:?} ends without a status");
            };
            assert_eq!(status.code(), tonic::Code::Unavailable, "{end:?}");
            assert_eq!(reason(&status), Some(expected.as_str()), "{end:?}");
        }
    }

    /// An expired worker is told how long it was silent.
    #[test]
    fn expiry_quotes_the_timeout() {
        let status = End::Expired.status(false, LIVENESS);
        let message = status.map(|s| s.message().to_owned()).unwrap_or_default();
        assert!(message.contains("45 s"), "{message}");
    }
}
