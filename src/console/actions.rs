//! The console's actions, each behind the act check (the admin role, and
//! the cross-site guard) and each through the Admin or Tasks service, so a
//! drain, a cancel or a requeue from the browser is the one contactctl
//! makes. Also signing in and out.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tonic::Request;

use super::{
    ApiError, Console,
    access::{Need, same_origin},
    views::{SessionView, TaskView, prefix},
};
use crate::{
    auth::{Caller, Principal},
    proto::v1::{self, admin_server::Admin, tasks_server::Tasks},
    transport::http_listener::HttpPeer,
};

/// Tasks one requeue request may name.
const MAX_REQUEUE: usize = 1000;

type Peer = ConnectInfo<HttpPeer>;

impl Console {
    /// Checks that the request may act: the principal acting, if any.
    fn act(
        &self,
        headers: &HeaderMap,
        peer: &HttpPeer,
    ) -> Result<Option<Arc<Principal>>, ApiError> {
        Ok(self
            .inner
            .access
            .check(Need::Act, headers, &peer.identities)?)
    }
}

/// A service request carrying the console user's principal, as the auth
/// layer would have added it, so the services' own checks apply.
fn request<T>(message: T, principal: Option<Arc<Principal>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(principal) = principal {
        request.extensions_mut().insert(Caller(principal));
    }
    request
}

/// A JSON body, or a 400 that says where it is wrong. serde's own message
/// can quote the input whole, so only its kind and place are given.
fn body<T: DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "INVALID_ARGUMENT",
        message: format!(
            "the request body is not {expected}: {:?} error at line {}, column {}",
            error.classify(),
            error.line(),
            error.column()
        ),
    })
}

#[derive(Debug, Serialize)]
pub(super) struct Done {
    message: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct SignIn {
    token: String,
}

pub(super) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let SignIn { token } = body(&bytes, r#"{"token": "..."}"#)?;
    let (principal, cookie) = console.inner.access.sign_in(token.trim())?;
    let view = SessionView {
        auth_required: true,
        may_act: true,
        principal: Some(principal.name.to_string()),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(view)).into_response())
}

pub(super) async fn sign_out(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let cookie = console.inner.access.sign_out(&headers);
    let done = Done {
        message: "signed out".into(),
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(done)).into_response())
}

/// What an operator does to one worker.
#[derive(Clone, Copy, Debug)]
enum WorkerAction {
    Drain,
    Disconnect,
}

async fn on_worker(
    console: &Console,
    headers: &HeaderMap,
    peer: &HttpPeer,
    client_id: String,
    action: WorkerAction,
) -> Result<Json<Done>, ApiError> {
    let principal = console.act(headers, peer)?;
    let admin = &console.inner.admin;
    let request = request(v1::WorkerRequest { client_id }, principal);
    let reply = match action {
        WorkerAction::Drain => Admin::drain_worker(admin, request).await?,
        WorkerAction::Disconnect => Admin::disconnect_worker(admin, request).await?,
    };
    Ok(Json(Done {
        message: reply.into_inner().message,
    }))
}

pub(super) async fn drain(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    on_worker(&console, &headers, &peer, client_id, WorkerAction::Drain).await
}

pub(super) async fn disconnect(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    on_worker(
        &console,
        &headers,
        &peer,
        client_id,
        WorkerAction::Disconnect,
    )
    .await
}

pub(super) async fn cancel(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(task_id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let principal = console.act(&headers, &peer)?;
    let id = crate::domain::TaskId::parse(&task_id)?;
    Tasks::cancel(
        &console.inner.tasks,
        request(v1::CancelRequest { task_id }, principal),
    )
    .await?;
    Ok(Json(console.inner.core.queue.get(id).await?.into()))
}

#[derive(Debug, Deserialize)]
pub(super) struct Requeue {
    task_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Refused {
    task_id: String,
    error: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Requeued {
    requeued: Vec<String>,
    refused: Vec<Refused>,
}

pub(super) async fn requeue(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Requeued>, ApiError> {
    let principal = console.act(&headers, &peer)?;
    let Requeue { task_ids } = body(&bytes, r#"{"task_ids": ["..."]}"#)?;
    if task_ids.len() > MAX_REQUEUE {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_ARGUMENT",
            message: format!(
                "{} tasks named; one request requeues at most {MAX_REQUEUE}",
                task_ids.len()
            ),
        });
    }
    let mut answer = Requeued {
        requeued: Vec::new(),
        refused: Vec::new(),
    };
    for task_id in task_ids {
        let outcome = Tasks::requeue(
            &console.inner.tasks,
            request(
                v1::RequeueRequest {
                    task_id: task_id.clone(),
                },
                principal.clone(),
            ),
        )
        .await;
        match outcome {
            Ok(_) => answer.requeued.push(task_id),
            Err(status) => answer.refused.push(Refused {
                task_id: prefix(&task_id, 64).to_owned(),
                error: status.message().to_owned(),
            }),
        }
    }
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
pub(super) struct Purge {
    #[serde(default)]
    queue: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Purged {
    purged: u64,
}

pub(super) async fn purge(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Purged>, ApiError> {
    let principal = console.act(&headers, &peer)?;
    let Purge { queue } = body(&bytes, r#"{"queue": "..."}"#)?;
    let reply = Admin::purge_dead_letters(
        &console.inner.admin,
        request(v1::PurgeDeadLettersRequest { queue }, principal),
    )
    .await?;
    Ok(Json(Purged {
        purged: reply.into_inner().purged,
    }))
}
