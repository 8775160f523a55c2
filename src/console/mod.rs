//! The operator's console: a few pages, and the JSON API they poll once a
//! second, served on the HTTP listener beside `/metrics`.
//!
//! - `assets`: the pages, embedded in the binary (nothing is fetched at run
//!   time);
//! - `api`: the reads, straight from the actors;
//! - `actions`: drain, disconnect, cancel, requeue and purge, through the
//!   Admin and Tasks services, so they behave exactly as contactctl's do;
//! - `access`: who may look and act, and the guard against cross-site
//!   requests;
//! - `rates`: the overview's per-second rates, sampled from the queue;
//! - `views`: the JSON shapes.
//!
//! The API is documented in docs/console-api.md.

mod access;
mod actions;
mod api;
mod assets;
pub(crate) mod rates;
mod views;

use std::sync::Arc;

use axum::{
    Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Principals,
    service::{AdminService, Core, TasksService},
};
use access::{Access, Refusal};
use rates::Rates;

/// What the console's handlers share.
#[derive(Clone, Debug)]
pub(crate) struct Console {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    core: Core,
    admin: AdminService,
    tasks: TasksService,
    access: Access,
    rates: Rates,
}

impl Console {
    /// The console over the server's actors; `secure` when the HTTP
    /// listener speaks TLS. Its sampler runs until `stop`.
    pub(crate) fn new(
        core: Core,
        principals: Arc<Principals>,
        secure: bool,
        stop: CancellationToken,
    ) -> Self {
        let rates = Rates::start(core.queue.clone(), stop);
        Self {
            inner: Arc::new(Inner {
                admin: AdminService::new(core.clone()),
                tasks: TasksService::new(core.clone()),
                core,
                access: Access::new(principals, secure),
                rates,
            }),
        }
    }

    /// The console's routes, to merge into the HTTP listener's.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route("/", get(assets::index))
            .route("/console.js", get(assets::script))
            .route("/console.css", get(assets::style))
            .route("/api/session", get(api::session))
            .route("/api/sign-in", post(actions::sign_in))
            .route("/api/sign-out", post(actions::sign_out))
            .route("/api/overview", get(api::overview))
            .route("/api/queues", get(api::queues))
            .route("/api/workers", get(api::workers))
            .route("/api/tasks/{id}", get(api::task))
            .route("/api/dead-letters", get(api::dead_letters))
            .route("/api/broadcasts", get(api::broadcasts))
            .route("/api/workers/{id}/drain", post(actions::drain))
            .route("/api/workers/{id}/disconnect", post(actions::disconnect))
            .route("/api/tasks/{id}/cancel", post(actions::cancel))
            .route("/api/dead-letters/requeue", post(actions::requeue))
            .route("/api/dead-letters/purge", post(actions::purge))
            .fallback(api::not_found)
            .with_state(self)
    }
}

/// An API error: its HTTP status and a JSON body saying why.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    /// The gRPC code's name, or the console's own reason.
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            error: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        Self {
            status: refusal.status,
            code: match refusal.status {
                StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
                _ => "PERMISSION_DENIED",
            },
            message: refusal.reason.to_owned(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
            }
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        Self {
            status: http,
            code,
            message: status.message().to_owned(),
        }
    }
}

impl From<crate::Error> for ApiError {
    fn from(error: crate::Error) -> Self {
        tonic::Status::from(error).into()
    }
}
