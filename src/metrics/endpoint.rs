//! The `GET /metrics` HTTP endpoint, on a listener the server binds itself.
//!
//! The exporter's own listener is not used: it binds inside its builder and
//! cannot report the port it got, and tests bind `127.0.0.1:0`. The server
//! spawns [`serve`] and cancels it when it stops.

use std::future::Future;

use axum::{Router, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::HISTOGRAMS;

/// Serves `GET /metrics` on `listener` until `stop` is cancelled. Each
/// scrape first awaits `refresh`, which publishes the state gauges.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: F,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let refresh = refresh.clone();
            async move {
                refresh().await;
                let mut text = handle.render();
                for histogram in HISTOGRAMS {
                    histogram.render(&mut text);
                }
                text
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
