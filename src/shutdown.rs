//! The daemon's stop signal: the first SIGINT or SIGTERM.
//!
//! The handlers are installed when [`listen`] is called, not when its
//! future is first polled, so a daemon that calls it before it starts
//! serving never dies of a SIGTERM sent the moment it says it listens.

use std::future::Future;

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on
/// the first of them. A handler that cannot be installed is logged, and
/// that signal is ignored rather than stopping at once.
pub fn listen() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::error!(%error, signal = name, "cannot listen for the signal");
                None
            }
        };
        let mut interrupt = install(SignalKind::interrupt(), "SIGINT");
        let mut terminate = install(SignalKind::terminate(), "SIGTERM");
        async move {
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let terminated = async {
                match terminate.as_mut() {
                    Some(stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = interrupted => tracing::info!(signal = "SIGINT", "stop signal received"),
                () = terminated => tracing::info!(signal = "SIGTERM", "stop signal received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "SIGINT", "stop signal received");
        }
    }
}
