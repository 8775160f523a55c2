//! `contact.v1.Admin`: read-only views for operators.

use tonic::{Request, Response, Status};

use super::Core;
use crate::proto::v1::{self, admin_server::Admin};

/// The Admin service facade.
#[derive(Clone, Debug)]
pub struct AdminService {
    core: Core,
}

impl AdminService {
    /// A facade over the server's actors.
    pub fn new(core: Core) -> Self {
        Self { core }
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
}
