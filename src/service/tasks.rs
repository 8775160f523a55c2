//! `contact.v1.Tasks`: the producer API. Submissions go to the queue actor in
//! batches; reads and waits are answered by it.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::{Core, MAX_STREAM_BATCH, StreamEnd, next_batch};
use crate::{
    auth::Scope,
    domain::{BroadcastId, NewTask, QueueName, Target, TaskId},
    error::Error,
    proto::v1::{self, tasks_server::Tasks},
    queue::{BroadcastTask, Detail},
};

/// How long a broadcast waits for every worker to make its copy.
const BROADCAST_DEADLINE: Duration = Duration::from_secs(10);

/// Dead letters listed when the request names no limit.
const DEFAULT_LIST_LIMIT: usize = 100;
/// The most dead letters one call lists.
const MAX_LIST_LIMIT: usize = 10_000;

/// The Tasks service facade.
#[derive(Clone, Debug)]
pub(crate) struct TasksService {
    core: Core,
}

impl TasksService {
    /// A facade over the server's actors.
    pub(crate) fn new(core: Core) -> Self {
        Self { core }
    }
}

fn reply(answer: Result<TaskId, Status>) -> v1::SubmitReply {
    match answer {
        Ok(id) => v1::SubmitReply {
            task_id: id.to_string(),
            error: None,
        },
        Err(status) => v1::SubmitReply {
            task_id: String::new(),
            error: Some(v1::SubmitError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            }),
        },
    }
}

/// Submits the valid requests of a batch in one queue call and answers
/// every request, valid or not, in order.
async fn submit_batch(
    core: &Core,
    scope: &Scope,
    requests: Vec<v1::SubmitRequest>,
) -> Vec<v1::SubmitReply> {
    // Each request's own refusal, or `None` when it goes to the queue.
    let mut refusals: Vec<Option<Error>> = Vec::with_capacity(requests.len());
    let mut valid = Vec::with_capacity(requests.len());
    for request in requests {
        match core.admit(request, scope) {
            Ok(task) => {
                valid.push(task);
                refusals.push(None);
            }
            Err(error) => refusals.push(Some(error)),
        }
    }
    let mut accepted = match core.queue.submit(valid).await {
        Ok(answers) => answers.into_iter(),
        // The queue is gone (the server is stopping): every task is refused.
        Err(error) => vec![Err(error); refusals.len()].into_iter(),
    };
    refusals
        .into_iter()
        .map(|refusal| {
            let answer = match refusal {
                Some(error) => Err(error),
                None => accepted
                    .next()
                    .unwrap_or(Err(Error::Unavailable("the task queue"))),
            };
            reply(answer.map_err(Status::from))
        })
        .collect()
}

#[tonic::async_trait]
impl Tasks for TasksService {
    type SubmitStreamStream = ReceiverStream<Result<v1::SubmitReply, Status>>;

    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitReply>, Status> {
        let scope = Scope::of(request.extensions());
        let task = self.core.admit(request.into_inner(), &scope)?;
        let answer = self
            .core
            .queue
            .submit(vec![task])
            .await?
            .pop()
            .unwrap_or(Err(Error::Unavailable("the task queue")))?;
        Ok(Response::new(reply(Ok(answer))))
    }

    async fn submit_stream(
        &self,
        request: Request<Streaming<v1::SubmitRequest>>,
    ) -> Result<Response<Self::SubmitStreamStream>, Status> {
        let scope = Scope::of(request.extensions());
        let mut inbound = request.into_inner();
        let (replies, replies_rx) = mpsc::channel(MAX_STREAM_BATCH);
        let core = self.core.clone();
        self.core.calls.spawn(async move {
            loop {
                let batch = next_batch(&mut inbound, &core.stopping).await;
                for answer in submit_batch(&core, &scope, batch.items).await {
                    if replies.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
                // A broken request stream (an oversized or undecodable
                // message) ends the call with its status; the accepted
                // tasks stand.
                let status = match batch.end {
                    None => continue,
                    Some(StreamEnd::Finished) => break,
                    Some(StreamEnd::Failed(status)) => status,
                    Some(StreamEnd::Stopping) => Error::ShuttingDown.into(),
                };
                debug!(%status, "SubmitStream ended with an error");
                let _ = replies.send(Err(status)).await;
                break;
            }
        });
        Ok(Response::new(ReceiverStream::new(replies_rx)))
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::TaskInfo>, Status> {
        let scope = Scope::of(request.extensions());
        let id = TaskId::parse(&request.into_inner().task_id)?;
        let info = self.core.queue.get(id).await?;
        scope.check_task(&info)?;
        Ok(Response::new(info.into()))
    }

    async fn wait(
        &self,
        request: Request<v1::WaitRequest>,
    ) -> Result<Response<v1::TaskInfo>, Status> {
        let scope = Scope::of(request.extensions());
        let request = request.into_inner();
        let id = TaskId::parse(&request.task_id)?;
        // Out of scope, the task does not exist for this caller: say so
        // before waiting for it.
        if scope.is_limited() {
            scope.check_task(&self.core.queue.get(id).await?)?;
        }
        let timeout = async {
            match request.timeout_ms {
                // No timeout of our own: the call's deadline (enforced by
                // tonic from grpc-timeout) or shutdown ends the wait.
                0 => std::future::pending().await,
                ms => tokio::time::sleep(Duration::from_millis(ms)).await,
            }
        };
        let info = tokio::select! {
            // A result that is ready wins over a timeout or a shutdown at the same instant.
            biased;
            info = self.core.queue.watch(id) => info?,
            () = timeout => {
                return Err(Error::DeadlineExceeded(format!(
                    "task {id} did not finish within {} ms",
                    request.timeout_ms
                ))
                .into());
            }
            () = self.core.stopping.cancelled() => return Err(Error::ShuttingDown.into()),
        };
        Ok(Response::new(info.into()))
    }

    async fn cancel(
        &self,
        request: Request<v1::CancelRequest>,
    ) -> Result<Response<v1::TaskInfo>, Status> {
        let scope = Scope::of(request.extensions());
        let id = TaskId::parse(&request.into_inner().task_id)?;
        // A task's target never changes, so this check holds for the cancel.
        if scope.is_limited() {
            scope.check_task(&self.core.queue.get(id).await?)?;
        }
        let cancelled = self.core.queue.cancel(id).await?;
        if let Some((worker, attempt)) = cancelled.holder
            && let Some(session) = self.core.index.resolve(Some(&worker), None)
        {
            session.cancelled(id, attempt).await;
        }
        Ok(Response::new(cancelled.info.into()))
    }

    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersReply>, Status> {
        let request = request.into_inner();
        let queue = match request.queue.as_str() {
            "" => None,
            name => Some(QueueName::parse(name)?),
        };
        let limit = match request.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => (n as usize).min(MAX_LIST_LIMIT),
        };
        let tasks = self
            .core
            .queue
            .dead_letters(queue, limit, Detail::Full)
            .await?;
        Ok(Response::new(v1::ListDeadLettersReply {
            tasks: tasks.into_iter().map(Into::into).collect(),
        }))
    }

    async fn requeue(
        &self,
        request: Request<v1::RequeueRequest>,
    ) -> Result<Response<v1::TaskInfo>, Status> {
        let id = TaskId::parse(&request.into_inner().task_id)?;
        Ok(Response::new(self.core.queue.requeue(id).await?.into()))
    }

    async fn broadcast(
        &self,
        request: Request<v1::BroadcastRequest>,
    ) -> Result<Response<v1::BroadcastReply>, Status> {
        Scope::of(request.extensions()).check_broadcast()?;
        let request = request.into_inner();
        let queue = match request.queue.as_str() {
            "" => QueueName::default_queue(),
            name => QueueName::parse(name)?,
        };
        // Checked like any task: a copy too big to push could never be delivered.
        NewTask {
            target: Some(Target::Queue(queue.clone())),
            text: request.text.clone(),
            payload: request.payload.clone(),
            ..NewTask::default()
        }
        .check(&self.core.submit_limits)?;
        let id = self.core.queue.open_broadcast().await?;
        let task = Arc::new(BroadcastTask {
            id,
            queue,
            text: request.text,
            payload: request.payload,
        });
        // Each connected session of the queue makes its own copy; waiting for
        // every answer means the reply can name them all.
        let sessions = self.core.index.sessions();
        let copies = join_all(sessions.iter().map(|session| {
            let task = task.clone();
            async move {
                let copy = session.broadcast_copy(task).await?;
                Some(v1::BroadcastCopy {
                    task_id: copy.to_string(),
                    client_id: session.client().to_string(),
                })
            }
        }));
        // A session busy past the deadline (or a server stopping) does not
        // hold the producer forever; copies made meanwhile still count in
        // GetBroadcast.
        let answers = tokio::select! {
            answers = tokio::time::timeout(BROADCAST_DEADLINE, copies) => answers.map_err(|_| {
                Error::DeadlineExceeded(format!(
                    "broadcast {id}: not every worker answered within {} s; GetBroadcast \
                     lists the copies made",
                    BROADCAST_DEADLINE.as_secs()
                ))
            })?,
            () = self.core.stopping.cancelled() => return Err(Error::ShuttingDown.into()),
        };
        let copies: Vec<v1::BroadcastCopy> = answers.into_iter().flatten().collect();
        Ok(Response::new(v1::BroadcastReply {
            broadcast_id: id.to_string(),
            copy_count: copies.len() as u32,
            copies,
        }))
    }

    async fn get_broadcast(
        &self,
        request: Request<v1::GetBroadcastRequest>,
    ) -> Result<Response<v1::BroadcastInfo>, Status> {
        Scope::of(request.extensions()).check_broadcast()?;
        let id = BroadcastId::parse(&request.into_inner().broadcast_id)?;
        let copies = self.core.queue.broadcast_copies(id, Detail::Full).await?;
        Ok(Response::new(v1::BroadcastInfo {
            broadcast_id: id.to_string(),
            copies: copies.into_iter().map(Into::into).collect(),
        }))
    }
}
