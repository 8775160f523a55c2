//! The middleware every gRPC call passes through: it logs each call (method,
//! status, duration) at debug level and counts failed calls in
//! `contact_rpc_errors_total{method, code}`, whose bounded label sets live
//! with the metric (`metrics::rpc_errors`).
//!
//! It reads the status tonic puts in the response headers, which is where
//! every status a handler returns ends up (a "trailers-only" response); a
//! status that ends a stream later travels in trailers and is the stream's
//! business, not a failed call.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::time::Instant;
use tonic::Code;
use tower::{Layer, Service};

use crate::metrics::rpc_errors::{self, code_label, method_label};

/// Adds [`RpcService`] around the server's routes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner }
    }
}

/// Logs and counts each call of the wrapped service.
#[derive(Clone, Debug)]
pub(crate) struct RpcService<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for RpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from_i32);
            if code != Code::Ok {
                rpc_errors::record(method, code);
            }
            tracing::debug!(
                rpc.method = method,
                rpc.code = code_label(code),
                elapsed_us = started.elapsed().as_micros() as u64,
                "rpc"
            );
            Ok(response)
        })
    }
}
