//! What your code holds of a running worker: the [`Worker`] it pulls tasks
//! from, the [`WorkerHandle`] that controls it from anywhere, and the
//! [`WorkerState`] the driver publishes.
//!
//! Both are thin: every operation is a command to the driver, the one
//! background task that talks to the server (see `driver.rs`).

use tokio::sync::{mpsc, oneshot, watch};

use super::{
    ClientError, Task,
    command::{Command, request},
};
use crate::proto;

/// A registered worker: pull tasks with [`Worker::next_task`].
///
/// Dropping it drains the worker: nothing new is taken, tasks still held
/// by your code can be finished, then the connection closes. Tasks pushed
/// but not yet taken from it are handed back (see [`Task`]).
#[derive(Debug)]
pub struct Worker {
    tasks: mpsc::UnboundedReceiver<Task>,
    handle: WorkerHandle,
}

impl Worker {
    /// The worker the driver feeds: its tasks, its inbox and its state.
    pub(super) fn new(
        tasks: mpsc::UnboundedReceiver<Task>,
        commands: mpsc::UnboundedSender<Command>,
        state: watch::Receiver<WorkerState>,
    ) -> Self {
        Self {
            tasks,
            handle: WorkerHandle { commands, state },
        }
    }

    /// The next task pushed to this worker; `None` once the worker has
    /// stopped (drained, or stopped by an operator). After a drain, tasks
    /// that were already on their way still come: keep calling until `None`.
    pub async fn next_task(&mut self) -> Option<Task> {
        self.tasks.recv().await
    }

    /// A handle for changing credit, reporting status and draining.
    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }

    /// The worker's id: the one it was given, or the one the server made.
    pub fn client_id(&self) -> String {
        self.handle.state().client_id
    }
}

/// Controls a running worker from anywhere; cloning it is cheap.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<WorkerState>,
}

impl WorkerHandle {
    /// Changes the credit at runtime; 0 pauses the worker (it keeps what it
    /// holds). Once the server accepts it, reconnections register with it.
    pub async fn set_credit(&self, max_in_flight: u32) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Credit {
                max_in_flight,
                reply,
            })
            .map_err(|_| ClientError::Stopped)?;
        answer.await.map_err(|_| ClientError::Stopped)?
    }

    /// Reports a status text and how many tasks your code is running;
    /// operators see both in `contactctl workers`.
    pub async fn report_status(
        &self,
        text: impl Into<String>,
        running: u32,
    ) -> Result<(), ClientError> {
        let message = proto::ClientMsg {
            msg: text.into(),
            running,
            ..Default::default()
        };
        request(&self.commands, message, None).await
    }

    /// Drains the worker: it takes no new tasks, waits until every task it
    /// holds is finished, then closes. Resolves once it has stopped.
    pub async fn drain(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Drain { done }).is_ok() {
            // An error means the driver stopped anyway.
            let _ = stopped.await;
        }
    }

    /// What the worker is doing now.
    pub fn state(&self) -> WorkerState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of [`WorkerState`], e.g. to wait
    /// for a reconnection with `wait_for`.
    pub fn watch(&self) -> watch::Receiver<WorkerState> {
        self.state.clone()
    }
}

/// What a worker is doing, for logs, health checks and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerState {
    /// Its id (its own, or the one the server made).
    pub client_id: String,
    /// The current session, named when resuming.
    pub session_id: String,
    /// True while a connection is up.
    pub connected: bool,
    /// Connections made so far, the first included.
    pub connections: u32,
    /// How many held tasks the last resume kept.
    pub resumed: u32,
    /// Tasks pushed to it and not yet finished.
    pub held: usize,
    /// Keepalives answered.
    pub keepalives: u64,
    /// A drain has started.
    pub draining: bool,
    /// True once it has stopped for good.
    pub stopped: bool,
}
