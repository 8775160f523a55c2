//! `contact.v1.Admin`: read-only views for operators.

use tonic::{Request, Response, Status};

use super::Core;
use crate::{
    domain::ClientId,
    error::Error,
    proto::v1::{self, admin_server::Admin},
    session::SessionHandle,
};

/// The Admin service facade.
#[derive(Clone, Debug)]
pub(crate) struct AdminService {
    core: Core,
}

impl AdminService {
    /// A facade over the server's actors.
    pub(crate) fn new(core: Core) -> Self {
        Self { core }
    }

    /// The session of the worker a request names.
    fn worker(&self, request: v1::WorkerRequest) -> Result<SessionHandle, Error> {
        let client = ClientId::parse(&request.client_id)?;
        self.core
            .index
            .resolve(Some(&client), None)
            .ok_or(Error::NotFound {
                what: "worker",
                id: client.to_string(),
            })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersReply>, Status> {
        let workers = self.core.registry.workers().await?;
        let workers = workers
            .into_iter()
            .map(|w| v1::Worker {
                client_id: w.client.to_string(),
                peer: w.peer.map(|p| p.to_string()).unwrap_or_default(),
                queues: w.queues.iter().map(ToString::to_string).collect(),
                max_in_flight: w.max_in_flight,
                in_flight: w.in_flight,
                connected_unix_ms: w.connected_unix_ms,
                last_status: w.last_status,
                last_heard_unix_ms: w.last_heard_unix_ms,
                reported_running: w.reported_running,
                detached: w.detached,
            })
            .collect();
        Ok(Response::new(v1::ListWorkersReply { workers }))
    }

    async fn list_queues(
        &self,
        _request: Request<v1::ListQueuesRequest>,
    ) -> Result<Response<v1::ListQueuesReply>, Status> {
        let queues = self
            .core
            .queue
            .queue_stats()
            .await?
            .into_iter()
            .map(|q| v1::QueueStats {
                name: q.name.to_string(),
                pending: q.pending as u64,
                ready: q.ready as u64,
                waiting_workers: q.waiting_workers as u64,
                oldest_ready_age_ms: q
                    .oldest_ready_age
                    .map_or(0, |age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                dead_letters: q.dead_letters as u64,
            })
            .collect();
        Ok(Response::new(v1::ListQueuesReply { queues }))
    }

    async fn drain_worker(
        &self,
        request: Request<v1::WorkerRequest>,
    ) -> Result<Response<v1::WorkerReply>, Status> {
        let session = self.worker(request.into_inner())?;
        session.drain().await?;
        Ok(Response::new(v1::WorkerReply {
            message: format!(
                "worker {} takes no new tasks and ends when it has acknowledged what it holds",
                session.client()
            ),
        }))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<v1::PurgeDeadLettersRequest>,
    ) -> Result<Response<v1::PurgeDeadLettersReply>, Status> {
        let queue = match request.into_inner().queue.as_str() {
            "" => None,
            name => Some(crate::domain::QueueName::parse(name)?),
        };
        let purged = self.core.queue.purge_dead_letters(queue).await?;
        Ok(Response::new(v1::PurgeDeadLettersReply { purged }))
    }

    async fn disconnect_worker(
        &self,
        request: Request<v1::WorkerRequest>,
    ) -> Result<Response<v1::WorkerReply>, Status> {
        let session = self.worker(request.into_inner())?;
        session.disconnect().await?;
        Ok(Response::new(v1::WorkerReply {
            message: format!(
                "worker {} disconnected; the tasks it held go to other workers",
                session.client()
            ),
        }))
    }
}
