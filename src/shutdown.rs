//! The daemon's stop signal: the first SIGINT or SIGTERM.

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. If a handler cannot be
/// installed, that signal is logged and ignored rather than stopping at once.
pub async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "stop signal received"),
        () = terminate => tracing::info!(signal = "SIGTERM", "stop signal received"),
    }
}
