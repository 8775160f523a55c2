//! The gRPC facades. Each service only validates requests (through
//! `domain`), calls actor handles, and converts answers back to protobuf;
//! no state lives here beyond the handles in [`Core`].

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::WorkersConfig,
    queue::QueueHandle,
    registry::{RegistryHandle, SessionIndex},
    session::{Notice, SessionDeps, SessionTiming},
};

mod admin;
mod contact;
mod tasks;

pub use admin::AdminService;
pub use contact::ContactService;
pub use tasks::TasksService;

/// Most messages a streaming handler reads before it hands them on as one
/// batch; only messages that already arrived are batched, nothing waits.
const MAX_STREAM_BATCH: usize = 256;

/// What every service holds: actor handles and the server's lifecycle tokens.
#[derive(Clone, Debug)]
pub struct Core {
    /// The task queue.
    pub queue: QueueHandle,
    /// The worker registry.
    pub registry: RegistryHandle,
    /// Who is connected, for routing acks and status to sessions.
    pub index: Arc<SessionIndex>,
    /// Server-wide notices; each session subscribes its own receiver.
    pub notices: async_broadcast::InactiveReceiver<Notice>,
    /// Sends server-wide notices (broadcast tasks).
    pub notice_tx: async_broadcast::Sender<Notice>,
    /// Cancelled when the server starts draining: no new work is taken.
    pub draining: CancellationToken,
    /// Cancelled when open calls must end.
    pub stopping: CancellationToken,
    /// Tracks every session, so shutdown can wait for them to drain.
    pub sessions: TaskTracker,
    /// Tracks the tasks that streaming handlers spawn, so shutdown can wait for them.
    pub calls: TaskTracker,
    /// Worker limits.
    pub workers: WorkersConfig,
    /// Session timeouts.
    pub timing: SessionTiming,
}

impl Core {
    fn session_deps(&self) -> SessionDeps {
        SessionDeps {
            queue: self.queue.clone(),
            registry: self.registry.clone(),
            tracker: self.sessions.clone(),
            timing: self.timing,
        }
    }
}
