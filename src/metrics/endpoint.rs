//! The HTTP listener: `GET /metrics`, and the console's routes beside it, on a listener the server binds itself,
//! over TLS when `[tls] http_listener` says so, asking for a bearer token
//! when `[auth] metrics_token_sha256` is set.
//!
//! The exporter's own listener is not used: it binds inside its builder and
//! cannot report the port it got, and tests bind `127.0.0.1:0`. The server
//! spawns [`serve`] and cancels it when it stops.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse as _, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::HISTOGRAMS;
use crate::{
    auth::token,
    transport::{
        http_listener::{HttpListener, HttpPeer},
        tls::Tls,
    },
};

/// How the HTTP listener guards itself.
#[derive(Clone, Debug)]
pub(crate) struct HttpAccess {
    /// The SHA-256 of the token scrapes must send.
    pub(crate) token_sha256: Option<[u8; 32]>,
    /// TLS, if the listener speaks it.
    pub(crate) tls: Option<Arc<Tls>>,
    /// How long a connection may make no progress.
    pub(crate) timeout: Duration,
}

/// Whether a scrape's `Authorization` header carries the token.
fn authorized(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, presented)| {
            token::equal(&token::sha256(presented.trim().as_bytes()), expected)
        })
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled, beside
/// the routes of `others` (the console). Each scrape first awaits
/// `refresh`, which publishes the state gauges.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: F,
    access: HttpAccess,
    others: Router,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let handle = handle.clone();
            let refresh = refresh.clone();
            let token = access.token_sha256;
            async move {
                if let Some(expected) = &token
                    && !authorized(&headers, expected)
                {
                    return unauthorized();
                }
                refresh().await;
                let mut text = handle.render();
                for histogram in HISTOGRAMS {
                    histogram.render(&mut text);
                }
                text.into_response()
            }
        }),
    );
    let app = app.merge(others);
    let listener = HttpListener::new(listener, access.tls.clone(), access.timeout);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<HttpPeer>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this endpoint needs `Authorization: Bearer <token>`\n",
    )
        .into_response()
}
