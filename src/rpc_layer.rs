//! The middleware every gRPC call passes through: it logs each call (method,
//! status, duration) at debug level and counts failed calls in
//! `contact_rpc_errors_total{method, code}`.
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

use crate::metrics::RPC_ERRORS;

/// Every method the server serves, so that the method label comes from a
/// fixed set. Anything else is counted as "other".
const METHODS: &[&str] = &[
    "/Contact/sendStatus",
    "/Contact/getTask",
    "/Contact/tellResult",
    "/contact.v1.Tasks/Submit",
    "/contact.v1.Tasks/SubmitStream",
    "/contact.v1.Tasks/Get",
    "/contact.v1.Tasks/Wait",
    "/contact.v1.Tasks/Cancel",
    "/contact.v1.Tasks/ListDeadLetters",
    "/contact.v1.Tasks/Requeue",
    "/contact.v1.Tasks/Broadcast",
    "/contact.v1.Tasks/GetBroadcast",
    "/contact.v1.Admin/ListWorkers",
    "/contact.v1.Admin/ListQueues",
    "/contact.v1.Admin/DrainWorker",
    "/contact.v1.Admin/DisconnectWorker",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == path)
        .map_or("other", |m| m.trim_start_matches('/'))
}

fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

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
                metrics::counter!(RPC_ERRORS, "method" => method, "code" => code_label(code))
                    .increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels come from fixed sets, whatever path a client asks for.
    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            method_label("/contact.v1.Tasks/Get"),
            "contact.v1.Tasks/Get"
        );
        assert_eq!(method_label("/Contact/getTask"), "Contact/getTask");
        assert_eq!(method_label("/evil/a-million-names-1234"), "other");
        assert_eq!(code_label(Code::from_i32(3)), "invalid_argument");
        assert_eq!(code_label(Code::from_i32(999)), "unknown");
    }
}
