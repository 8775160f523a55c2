//! The console's reads: what the pages show, straight from the actors
//! (the registry, the sessions, the queue), each behind the look check.

use axum::{
    Json,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;

use super::{
    ApiError, Console,
    access::Need,
    views::{
        BroadcastView, HeldTaskView, LIST_PREFIX_BYTES, Overview, QueueView, SessionView, TaskView,
        WorkerView, prefix,
    },
};
use crate::{
    auth::Role,
    domain::{QueueName, TaskId},
    queue::Detail,
    transport::http_listener::HttpPeer,
};

/// Held tasks shown per worker at most (credit can be in the thousands),
/// and in all.
const MAX_HELD_SHOWN: usize = 100;
const MAX_HELD_TOTAL: usize = 2000;

/// How long a session may take to say what it holds.
const HOLDING_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Broadcasts listed at most, newest first.
const MAX_BROADCASTS_SHOWN: usize = 20;

/// Dead letters listed when the request names no limit, and at most.
const DEFAULT_DEAD_LETTERS: usize = 100;
const MAX_DEAD_LETTERS: usize = 500;

type Peer = ConnectInfo<HttpPeer>;

impl Console {
    fn look(&self, headers: &HeaderMap, peer: &HttpPeer) -> Result<(), ApiError> {
        self.inner
            .access
            .check(Need::Look, headers, &peer.identities)?;
        Ok(())
    }
}

pub(super) async fn session(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Json<SessionView> {
    let access = &console.inner.access;
    let principal = access.principal(&headers, &peer.identities);
    Json(SessionView {
        auth_required: access.required(),
        may_act: !access.required()
            || principal
                .as_ref()
                .is_some_and(|p| p.roles.contains(&Role::Admin)),
        principal: principal.map(|p| p.name.to_string()),
    })
}

pub(super) async fn overview(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Overview>, ApiError> {
    console.look(&headers, &peer)?;
    let core = &console.inner.core;
    let queues = core.queue.queue_stats().await?;
    let workers = core.registry.workers().await?;
    Ok(Json(Overview {
        now_unix_ms: crate::clock::unix_ms_now(),
        totals: console.inner.rates.latest().map(Into::into),
        rates: console.inner.rates.per_second(),
        queues: queues.len(),
        pending: queues.iter().map(|q| q.pending as u64).sum(),
        ready: queues.iter().map(|q| q.ready as u64).sum(),
        oldest_ready_age_ms: queues
            .iter()
            .filter_map(|q| q.oldest_ready_age)
            .max()
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        dead_letters: queues.iter().map(|q| q.dead_letters as u64).sum(),
        workers: workers.len(),
        in_flight: workers.iter().map(|w| u64::from(w.in_flight)).sum(),
        credit: workers.iter().map(|w| u64::from(w.max_in_flight)).sum(),
    }))
}

pub(super) async fn queues(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Vec<QueueView>>, ApiError> {
    console.look(&headers, &peer)?;
    let core = &console.inner.core;
    let queues = core.queue.queue_stats().await?;
    let workers = core.registry.workers().await?;
    Ok(Json(
        queues
            .into_iter()
            .map(|q| QueueView::new(q, &workers))
            .collect(),
    ))
}

pub(super) async fn workers(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    console.look(&headers, &peer)?;
    let core = &console.inner.core;
    let workers = core.registry.workers().await?;
    // What each holds: one ask per session (a busy or ended one shows
    // nothing), then one ask to the queue for every text shown.
    let mut holdings = Vec::with_capacity(workers.len());
    let mut shown = 0;
    for worker in &workers {
        let mut held = Vec::new();
        if shown < MAX_HELD_TOTAL
            && let Some(session) = core.index.resolve(Some(&worker.client), None)
            && let Ok(Ok(tasks)) = tokio::time::timeout(HOLDING_TIMEOUT, session.holding()).await
        {
            held = tasks
                .into_iter()
                .take(MAX_HELD_SHOWN.min(MAX_HELD_TOTAL - shown))
                .collect();
            shown += held.len();
        }
        holdings.push(held);
    }
    let ids = holdings.iter().flatten().map(|h| h.task).collect();
    let mut texts = core
        .queue
        .tasks(ids, Detail::Cut(LIST_PREFIX_BYTES))
        .await?
        .into_iter()
        .map(|info| {
            info.and_then(|i| i.text)
                .map(|t| prefix(&t, LIST_PREFIX_BYTES).to_owned())
        });
    let views = workers
        .into_iter()
        .zip(holdings)
        .map(|(worker, held)| {
            let held = held
                .into_iter()
                .map(|h| HeldTaskView::new(h, texts.next().flatten()))
                .collect();
            WorkerView::new(worker, held)
        })
        .collect();
    Ok(Json(views))
}

pub(super) async fn task(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    console.look(&headers, &peer)?;
    let id = TaskId::parse(&id)?;
    Ok(Json(console.inner.core.queue.get(id).await?.into()))
}

#[derive(Debug, Deserialize)]
pub(super) struct DeadLetterQuery {
    queue: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn dead_letters(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<DeadLetterQuery>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    console.look(&headers, &peer)?;
    let queue = match query.queue.as_deref() {
        None | Some("") => None,
        Some(name) => Some(QueueName::parse(name)?),
    };
    let limit = query
        .limit
        .unwrap_or(DEFAULT_DEAD_LETTERS)
        .clamp(1, MAX_DEAD_LETTERS);
    let tasks = console
        .inner
        .core
        .queue
        .dead_letters(queue, limit, Detail::Cut(LIST_PREFIX_BYTES))
        .await?;
    Ok(Json(
        tasks
            .into_iter()
            .map(|t| TaskView::cut(t, LIST_PREFIX_BYTES))
            .collect(),
    ))
}

pub(super) async fn broadcasts(
    State(console): State<Console>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<Vec<BroadcastView>>, ApiError> {
    console.look(&headers, &peer)?;
    let queue = &console.inner.core.queue;
    let mut views = Vec::new();
    for id in queue.broadcasts(MAX_BROADCASTS_SHOWN).await? {
        // Forgotten between the two asks: it is simply not listed.
        if let Ok(copies) = queue
            .broadcast_copies(id, Detail::Cut(LIST_PREFIX_BYTES))
            .await
        {
            views.push(BroadcastView {
                broadcast_id: id.to_string(),
                copies: copies
                    .into_iter()
                    .map(|t| TaskView::cut(t, LIST_PREFIX_BYTES))
                    .collect(),
            });
        }
    }
    Ok(Json(views))
}

pub(super) async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "NOT_FOUND",
        message: "no such page".into(),
    }
}
