//! The worker side: a [`Worker`] your code pulls [`Task`]s from, and the
//! driver, one background task that owns the connection and does the
//! protocol's chores.
//!
//! The driver is an actor like the server's: [`Task`]s and the
//! [`WorkerHandle`] send it commands; it alone talks to the server. Every
//! operation goes on `sendStatus`, which answers each message in order, so
//! a refused ack is reported to the caller without ending the call.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use bytes::Bytes;
use futures_util::FutureExt as _;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tonic::{
    Code, Request, Status, Streaming,
    metadata::{MetadataMap, MetadataValue},
};
use tracing::{debug, info, warn};

use super::{ClientError, dial};
use crate::{
    domain::{
        CLIENT_ID_KEY, END_REASON_KEY, EndReason, KEEPALIVE_MS_KEY, MAX_IN_FLIGHT_KEY, QUEUES_KEY,
        RECEIPTS_KEY, RESUMED_KEY, SESSION_ID_KEY,
    },
    proto::{self, Kind, Outcome, client_msg::Op, contact_client::ContactClient},
};

/// The longest reconnect backoff a worker may ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The settings of a [`Worker`]; [`WorkerBuilder::connect`] starts it.
#[derive(Clone, Debug)]
pub struct WorkerBuilder {
    endpoint: String,
    client_id: Option<String>,
    queues: Vec<String>,
    max_in_flight: u32,
    receipts: bool,
    keepalive: Option<Duration>,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl WorkerBuilder {
    /// A worker of the server at `endpoint` (e.g. `http://127.0.0.1:50051`),
    /// on queue "default", with 8 tasks in flight, no receipts, no
    /// keepalives, reconnecting after 100 ms doubling up to 10 s.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            client_id: None,
            queues: Vec::new(),
            max_in_flight: 8,
            receipts: false,
            keepalive: None,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }

    /// The worker's id. Without one the server makes one up, and a dropped
    /// connection cannot resume: the tasks it held go to other workers (or
    /// back to it as new attempts), and their `Task`s are cancelled.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The queues to take tasks from (default: "default").
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// The credit: most tasks held unacknowledged at once.
    pub fn max_in_flight(mut self, max_in_flight: u32) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Ask for receipts: the server takes a task back unless its receipt
    /// comes within its receipt timeout. The worker confirms each task as
    /// it arrives, before your code sees it.
    pub fn receipts(mut self, on: bool) -> Self {
        self.receipts = on;
        self
    }

    /// Ask for keepalives when the stream is idle this long; the worker
    /// answers each, so the server can expire it if it goes silent.
    pub fn keepalive(mut self, every: Duration) -> Self {
        self.keepalive = Some(every);
        self
    }

    /// Reconnect waits: from `initial`, doubling up to `max`, each drawn at
    /// random from its upper half so a restarted fleet spreads out.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Connects and registers. The first connection must succeed, so a
    /// refusal (a bad option, a duplicate id) is returned here; later ones
    /// are retried in the background.
    pub async fn connect(self) -> Result<Worker, ClientError> {
        let registration = self.registration()?;
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (tasks_tx, tasks) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(WorkerState::default());
        let mut driver = Driver {
            credit: self.max_in_flight,
            own_id: self.client_id.is_some(),
            client_id: self.client_id.clone(),
            settings: self,
            registration,
            commands,
            command_tx: commands_tx.downgrade(),
            tasks: tasks_tx,
            held: HashMap::new(),
            awaiting_reply: VecDeque::new(),
            queued: VecDeque::new(),
            session_id: None,
            draining: false,
            drained: Vec::new(),
            state: state_tx,
        };
        let connection = driver.open().await?;
        tokio::spawn(driver.run(connection));
        Ok(Worker {
            tasks,
            handle: WorkerHandle {
                commands: commands_tx,
                state,
            },
        })
    }

    /// Checks the options and builds the registration metadata that does
    /// not change between connections.
    fn registration(&self) -> Result<MetadataMap, ClientError> {
        let invalid = |what: &str| ClientError::InvalidOption(what.to_owned());
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight must be at least 1"));
        }
        if self.backoff_initial.is_zero()
            || self.backoff_max < self.backoff_initial
            || self.backoff_max > MAX_BACKOFF
        {
            return Err(invalid(
                "reconnect backoff: initial must be above zero, and max from initial to an hour",
            ));
        }
        let mut metadata = MetadataMap::new();
        let text = |value: &str, what: &str| {
            MetadataValue::try_from(value).map_err(|_| invalid(&format!("{what} must be ASCII")))
        };
        if let Some(id) = &self.client_id {
            metadata.insert(CLIENT_ID_KEY, text(id, "client_id")?);
        }
        if !self.queues.is_empty() {
            metadata.insert(QUEUES_KEY, text(&self.queues.join(","), "queues")?);
        }
        if self.receipts {
            metadata.insert(RECEIPTS_KEY, MetadataValue::from_static("true"));
        }
        if let Some(every) = self.keepalive {
            metadata.insert(
                KEEPALIVE_MS_KEY,
                MetadataValue::from(every.as_millis() as u64),
            );
        }
        Ok(metadata)
    }
}

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
            op: None,
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

/// A task pushed to this worker. Finish it with one of the consuming
/// methods; each returns once the server has applied (or refused) it.
/// Dropping an unfinished task hands it back as a retry, which counts as an
/// attempt (like [`Task::retry_after`]).
#[derive(Debug)]
pub struct Task {
    /// The task's id.
    pub id: String,
    /// Which delivery this is (1 the first time).
    pub attempt: u32,
    /// The task's text.
    pub text: String,
    /// The task's payload.
    pub payload: Bytes,
    /// Its queue; empty for a task sent to this worker by id.
    pub queue: String,
    /// Its priority.
    pub priority: i32,
    /// The execution lease: finish or [`Task::extend`] within it.
    pub lease: Duration,
    /// The broadcast it is a copy of, if any.
    pub broadcast_id: String,
    cancelled: CancellationToken,
    commands: mpsc::UnboundedSender<Command>,
    finished: bool,
}

impl Task {
    /// The task is done; `ret` is stored as its result.
    pub async fn done(self, ret: impl Into<String>) -> Result<(), ClientError> {
        self.finish(ack(Outcome::Done, ret.into(), String::new()))
            .await
    }

    /// The task is done, with binary output stored beside `ret`.
    pub async fn done_with_output(
        self,
        ret: impl Into<String>,
        output: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let mut result = ack(Outcome::Done, ret.into(), String::new());
        result.output = output.into();
        self.finish(result).await
    }

    /// The task failed: it is retried after its queue's backoff, until its
    /// attempts run out.
    pub async fn fail(self, error: impl Into<String>) -> Result<(), ClientError> {
        self.finish(ack(Outcome::Failed, String::new(), error.into()))
            .await
    }

    /// The task failed and must not be retried: it is dead-lettered.
    pub async fn fail_permanently(self, error: impl Into<String>) -> Result<(), ClientError> {
        self.finish(ack(Outcome::FailedPermanently, String::new(), error.into()))
            .await
    }

    /// The worker cannot take it now: deliver it again after `delay` (this
    /// counts as an attempt).
    pub async fn retry_after(self, delay: Duration) -> Result<(), ClientError> {
        let mut result = ack(Outcome::Retry, String::new(), String::new());
        result.retry_after_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.finish(result).await
    }

    /// Still working: the lease runs for `lease` from now (capped by the
    /// server's maximum).
    pub async fn extend(&self, lease: Duration) -> Result<(), ClientError> {
        let message = proto::ClientMsg {
            op: Some(Op::Extend(proto::Extend {
                task_id: self.id.clone(),
                attempt: self.attempt,
                lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1),
            })),
            ..Default::default()
        };
        request(&self.commands, message, None).await
    }

    /// Resolves when the task is taken away (a producer cancelled it, its
    /// lease ran out, or the session it came on could not be resumed):
    /// stop working on it; finishing it will be refused. The server says so
    /// only to workers that asked for receipts or keepalives (and only when
    /// its stream has room), so ask for one of them to rely on this.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancelled.cancelled()
    }

    /// True once the server has taken the task away.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }

    async fn finish(mut self, mut result: proto::Result) -> Result<(), ClientError> {
        self.finished = true;
        result.task_id = self.id.clone();
        result.attempt = self.attempt;
        let message = proto::ClientMsg {
            op: Some(Op::Ack(result)),
            ..Default::default()
        };
        request(
            &self.commands,
            message,
            Some((self.id.clone(), self.attempt)),
        )
        .await
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.finished || self.cancelled.is_cancelled() {
            return;
        }
        let mut result = ack(
            Outcome::Retry,
            String::new(),
            "the worker dropped the task without finishing it".to_owned(),
        );
        result.task_id = self.id.clone();
        result.attempt = self.attempt;
        let message = proto::ClientMsg {
            op: Some(Op::Ack(result)),
            ..Default::default()
        };
        // A stopped driver cannot send it; the lease then brings it back.
        let _ = self.commands.send(Command::Op(Box::new(PendingOp::new(
            message,
            Some((self.id.clone(), self.attempt)),
            None,
        ))));
    }
}

fn ack(outcome: Outcome, ret: String, error: String) -> proto::Result {
    proto::Result {
        outcome: outcome.into(),
        ret,
        error,
        ..Default::default()
    }
}

/// Sends one control message through the driver and waits for its answer.
async fn request(
    commands: &mpsc::UnboundedSender<Command>,
    message: proto::ClientMsg,
    settles: Option<(String, u32)>,
) -> Result<(), ClientError> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(Command::Op(Box::new(PendingOp::new(
            message,
            settles,
            Some(reply),
        ))))
        .map_err(|_| ClientError::Stopped)?;
    answer.await.map_err(|_| ClientError::Stopped)?
}

// === The driver ===

/// What tasks and handles ask of the driver.
#[derive(Debug)]
enum Command {
    /// Send a control message.
    Op(Box<PendingOp>),
    /// Change the credit.
    Credit {
        max_in_flight: u32,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Drain, then report having stopped.
    Drain { done: oneshot::Sender<()> },
}

/// A control message on its way, and who waits for its answer.
#[derive(Debug)]
struct PendingOp {
    message: proto::ClientMsg,
    /// The task (and attempt) it finishes: forgotten once answered.
    settles: Option<(String, u32)>,
    reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// A credit that becomes the worker's own once accepted.
    credit: Option<u32>,
    /// Sent before on a connection that dropped unanswered.
    resent: bool,
}

impl PendingOp {
    fn new(
        message: proto::ClientMsg,
        settles: Option<(String, u32)>,
        reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> Self {
        Self {
            message,
            settles,
            reply,
            credit: None,
            resent: false,
        }
    }

    /// A message nobody waits for (receipt, heartbeat, pause).
    fn unanswered(message: proto::ClientMsg) -> Self {
        Self::new(message, None, None)
    }
}

/// A task the worker holds.
#[derive(Debug)]
struct Held {
    attempt: u32,
    cancelled: CancellationToken,
}

/// One connection's calls.
#[derive(Debug)]
struct Connection {
    control: mpsc::UnboundedSender<proto::ClientMsg>,
    replies: Streaming<proto::Result>,
    stream: Streaming<proto::ServerMsg>,
}

/// Why a connection's life ended.
#[derive(Debug)]
enum Ended {
    /// Drained and closed by this worker.
    Closed,
    /// The server ended it for good (an operator's drain or disconnect).
    Stopped(EndReason),
    /// Everything that could use the worker is gone.
    Abandoned,
    /// The connection or a call failed: reconnect.
    Lost(String),
}

#[derive(Debug)]
struct Driver {
    settings: WorkerBuilder,
    /// Registration metadata that does not change.
    registration: MetadataMap,
    credit: u32,
    /// The worker chose its id (and so can resume).
    own_id: bool,
    client_id: Option<String>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For the tasks it makes; weak, so the driver alone does not keep its
    /// own inbox open.
    command_tx: mpsc::WeakUnboundedSender<Command>,
    tasks: mpsc::UnboundedSender<Task>,
    held: HashMap<String, Held>,
    /// Sent on this connection, answers due in order.
    awaiting_reply: VecDeque<PendingOp>,
    /// Waiting for a connection.
    queued: VecDeque<PendingOp>,
    session_id: Option<String>,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
    state: watch::Sender<WorkerState>,
}

impl Driver {
    async fn run(mut self, mut connection: Connection) {
        loop {
            match self.serve(&mut connection).await {
                Ended::Closed => {
                    info!("worker drained and closed");
                    break;
                }
                Ended::Abandoned => {
                    // Hand-backs of tasks nobody took must reach the server.
                    self.collect_replies(&mut connection).await;
                    break;
                }
                Ended::Stopped(reason) => {
                    info!(reason = reason.as_str(), "the server ended the worker");
                    self.collect_replies(&mut connection).await;
                    break;
                }
                Ended::Lost(why) => {
                    warn!(%why, "connection lost; reconnecting");
                    self.state.send_modify(|s| s.connected = false);
                    // Unanswered operations go again on the next connection.
                    while let Some(mut op) = self.awaiting_reply.pop_back() {
                        if op.reply.is_some() || op.settles.is_some() {
                            op.resent = true;
                            self.queued.push_front(op);
                        }
                    }
                    match self.reconnect().await {
                        Some(next) => connection = next,
                        None => break,
                    }
                }
            }
        }
        self.stop();
    }

    /// Registers on a new connection (resuming when it can) and opens the
    /// control channel.
    async fn open(&mut self) -> Result<Connection, ClientError> {
        let mut client = ContactClient::new(dial(&self.settings.endpoint).await?);
        let resume = self.session_id.clone().filter(|_| self.own_id);
        let held = match resume {
            Some(_) => self
                .held
                .iter()
                .map(|(task_id, h)| proto::HeldTask {
                    task_id: task_id.clone(),
                    attempt: h.attempt,
                })
                .collect(),
            None => Vec::new(),
        };
        let resuming = resume.is_some();
        let mut request = Request::new(proto::Empty {
            resume_session_id: resume.unwrap_or_default(),
            held,
        });
        *request.metadata_mut() = self.registration.clone();
        // Registration needs a credit of at least 1; a draining or paused
        // worker asks for 1 and pauses at once.
        let credit = if self.draining { 1 } else { self.credit.max(1) };
        request
            .metadata_mut()
            .insert(MAX_IN_FLIGHT_KEY, MetadataValue::from(credit));
        let response = client.get_task(request).await?;
        let header = |key: &str| {
            response
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.client_id = header(CLIENT_ID_KEY).or(self.client_id.take());
        self.session_id = header(SESSION_ID_KEY);
        let resumed = header(RESUMED_KEY)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if !resuming || resumed == 0 {
            // A new session (the old one could not be resumed): the server
            // gives what this worker held to others, or to it again as new
            // attempts. A partial resume keeps every entry: the server does
            // not say which it kept, and acks of the others are refused.
            for (_, held) in self.held.drain() {
                held.cancelled.cancel();
            }
        }
        let stream = response.into_inner();

        let (control, outgoing) = mpsc::unbounded_channel();
        let mut status_request = Request::new(UnboundedReceiverStream::new(outgoing));
        if let Some(id) = self
            .client_id
            .as_deref()
            .and_then(|id| MetadataValue::try_from(id).ok())
        {
            status_request.metadata_mut().insert(CLIENT_ID_KEY, id);
        }
        let replies = client.send_status(status_request).await?.into_inner();
        if self.draining || self.credit == 0 {
            // Registration needs a credit of at least 1; pause at once.
            self.queued
                .push_front(PendingOp::unanswered(credit_message(0)));
        }
        let (client_id, session_id) = (
            self.client_id.clone().unwrap_or_default(),
            self.session_id.clone().unwrap_or_default(),
        );
        info!(client.id = %client_id, session.id = %session_id, resumed, "worker registered");
        let held = self.held.len();
        self.state.send_modify(|s| {
            s.client_id = client_id;
            s.session_id = session_id;
            s.connected = true;
            s.connections += 1;
            s.resumed = resumed;
            s.held = held;
        });
        Ok(Connection {
            control,
            replies,
            stream,
        })
    }

    /// One connection's life.
    async fn serve(&mut self, connection: &mut Connection) -> Ended {
        while let Some(op) = self.queued.pop_front() {
            self.send(connection, op);
        }
        loop {
            if self.draining
                && self.held.is_empty()
                && self.awaiting_reply.is_empty()
                && self.queued.is_empty()
            {
                // A task pushed just before the pause took effect may have
                // arrived: take it rather than leave it to the resume grace.
                match connection.stream.message().now_or_never() {
                    Some(Ok(Some(message))) => {
                        self.on_message(connection, message);
                        continue;
                    }
                    _ => return Ended::Closed,
                }
            }
            let worker_dropped = self.tasks.clone();
            tokio::select! {
                message = connection.stream.message() => match message {
                    Ok(Some(message)) => self.on_message(connection, message),
                    Ok(None) => return Ended::Lost("getTask ended".into()),
                    Err(status) => return match end_reason(&status) {
                        Some(reason) if reason.is_final() => Ended::Stopped(reason),
                        _ => Ended::Lost(format!("getTask ended: {status}")),
                    },
                },
                reply = connection.replies.message() => match reply {
                    Ok(Some(reply)) => self.on_reply(reply),
                    Ok(None) => return Ended::Lost("sendStatus ended".into()),
                    Err(status) => return Ended::Lost(format!("sendStatus ended: {status}")),
                },
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(Some(connection), command),
                    None => return Ended::Abandoned,
                },
                () = worker_dropped.closed(), if !self.draining => {
                    debug!("the Worker was dropped; draining");
                    self.start_drain(Some(connection));
                }
            }
        }
    }

    fn on_message(&mut self, connection: &Connection, message: proto::ServerMsg) {
        // A kind this library does not know is ignored, not taken for a task.
        let Ok(kind) = Kind::try_from(message.kind) else {
            debug!(kind = message.kind, "a message of an unknown kind ignored");
            return;
        };
        if message.task_id.is_empty() && kind != Kind::Keepalive {
            // Never acked: an empty id would mean "my oldest task".
            warn!("a message without a task id ignored");
            return;
        }
        match kind {
            Kind::Task => {
                let cancelled = CancellationToken::new();
                let held = Held {
                    attempt: message.attempt,
                    cancelled: cancelled.clone(),
                };
                // The same task again, on a later attempt: the old one is void.
                if let Some(old) = self.held.insert(message.task_id.clone(), held) {
                    old.cancelled.cancel();
                }
                if message.receipt_required {
                    let receipt = proto::ClientMsg {
                        op: Some(Op::Ack(proto::Result {
                            task_id: message.task_id.clone(),
                            attempt: message.attempt,
                            receipt: true,
                            ..Default::default()
                        })),
                        ..Default::default()
                    };
                    self.send(connection, PendingOp::unanswered(receipt));
                }
                self.publish_held();
                let Some(commands) = self.command_tx.upgrade() else {
                    return;
                };
                let task = Task {
                    id: message.task_id,
                    attempt: message.attempt,
                    text: message.task,
                    payload: message.payload,
                    queue: message.queue,
                    priority: message.priority,
                    lease: Duration::from_millis(message.lease_ms),
                    broadcast_id: message.broadcast_id,
                    cancelled,
                    commands,
                    finished: false,
                };
                // With the Worker gone the task drops here and goes back.
                let _ = self.tasks.send(task);
            }
            Kind::Keepalive => {
                let heartbeat = proto::ClientMsg {
                    running: u32::try_from(self.held.len()).unwrap_or(u32::MAX),
                    ..Default::default()
                };
                self.send(connection, PendingOp::unanswered(heartbeat));
                self.state.send_modify(|s| s.keepalives += 1);
            }
            Kind::Cancel => {
                let current = self
                    .held
                    .get(&message.task_id)
                    .is_some_and(|h| message.attempt == 0 || h.attempt == message.attempt);
                if current && let Some(held) = self.held.remove(&message.task_id) {
                    debug!(task.id = %message.task_id, "the server took the task back");
                    held.cancelled.cancel();
                    self.publish_held();
                }
            }
        }
    }

    fn on_reply(&mut self, reply: proto::Result) {
        let Some(op) = self.awaiting_reply.pop_front() else {
            warn!("an answer to nothing on sendStatus");
            return;
        };
        if let Some((task_id, attempt)) = &op.settles
            && self
                .held
                .get(task_id)
                .is_some_and(|h| h.attempt == *attempt)
        {
            // Applied or refused, the task is no longer this worker's.
            self.held.remove(task_id);
            self.publish_held();
        }
        let answer = match reply.code {
            0 => {
                if let Some(credit) = op.credit {
                    self.credit = credit;
                }
                Ok(())
            }
            // Sent again after a drop: the first copy may have been applied
            // (then this one finds the task no longer held) or not.
            code if op.resent && op.settles.is_some() => Err(ClientError::Unconfirmed {
                message: reply.error,
                code: Code::from_i32(code),
            }),
            code => Err(ClientError::Refused {
                code: Code::from_i32(code),
                message: reply.error,
            }),
        };
        match op.reply {
            Some(waiting) => {
                let _ = waiting.send(answer);
            }
            None => {
                if let Err(error) = answer {
                    debug!(%error, "an operation nobody waits for was refused");
                }
            }
        }
    }

    fn on_command(&mut self, connection: Option<&Connection>, command: Command) {
        match command {
            Command::Op(op) => self.send_or_queue(connection, *op),
            Command::Credit {
                max_in_flight,
                reply,
            } => {
                if self.draining {
                    let _ = reply.send(Err(ClientError::Refused {
                        code: Code::FailedPrecondition,
                        message: "the worker is draining; it stays paused".into(),
                    }));
                    return;
                }
                let mut op = PendingOp::new(credit_message(max_in_flight), None, Some(reply));
                op.credit = Some(max_in_flight);
                self.send_or_queue(connection, op);
            }
            Command::Drain { done } => {
                self.drained.push(done);
                self.start_drain(connection);
            }
        }
    }

    fn start_drain(&mut self, connection: Option<&Connection>) {
        if self.draining {
            return;
        }
        info!(held = self.held.len(), "draining");
        self.draining = true;
        self.state.send_modify(|s| s.draining = true);
        // Without a connection, the next registration pauses itself.
        if let Some(connection) = connection {
            self.send(connection, PendingOp::unanswered(credit_message(0)));
        }
    }

    fn send_or_queue(&mut self, connection: Option<&Connection>, op: PendingOp) {
        match connection {
            Some(connection) => self.send(connection, op),
            None => self.queued.push_back(op),
        }
    }

    fn send(&mut self, connection: &Connection, op: PendingOp) {
        match connection.control.send(op.message.clone()) {
            Ok(()) => self.awaiting_reply.push_back(op),
            // The call is gone; the stream will say so, and this goes again.
            Err(_) => self.queued.push_back(op),
        }
    }

    /// Waits (a little) for the answers of operations already sent, so a
    /// last ack before the server's final status is reported as applied.
    async fn collect_replies(&mut self, connection: &mut Connection) {
        let until = Instant::now() + Duration::from_secs(2);
        while !self.awaiting_reply.is_empty() {
            match tokio::time::timeout_at(until, connection.replies.message()).await {
                Ok(Ok(Some(reply))) => self.on_reply(reply),
                _ => break,
            }
        }
    }

    /// Waits with backoff and dials again, taking commands meanwhile.
    /// `None` when there is nothing left to reconnect for.
    async fn reconnect(&mut self) -> Option<Connection> {
        let mut backoff = self.settings.backoff_initial;
        loop {
            let until = Instant::now() + backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    command = self.commands.recv() => match command {
                        Some(command) => self.on_command(None, command),
                        None => return None,
                    },
                }
            }
            if self.draining && self.held.is_empty() && self.queued.is_empty() {
                return None;
            }
            match self.open().await {
                Ok(connection) => return Some(connection),
                Err(ClientError::Status(status)) if is_permanent(status.code()) => {
                    warn!(%status, "the server refuses this worker; stopping");
                    return None;
                }
                Err(error) => debug!(%error, "reconnect failed"),
            }
            backoff = backoff.saturating_mul(2).min(self.settings.backoff_max);
        }
    }

    fn publish_held(&self) {
        let held = self.held.len();
        self.state.send_modify(|s| s.held = held);
    }

    /// Stops for good: pending operations fail, waiters are told, and the
    /// task stream ends.
    fn stop(mut self) {
        for op in self.queued.drain(..).chain(self.awaiting_reply.drain(..)) {
            if let Some(waiting) = op.reply {
                let _ = waiting.send(Err(ClientError::Stopped));
            }
        }
        for held in self.held.values() {
            held.cancelled.cancel();
        }
        for done in self.drained.drain(..) {
            let _ = done.send(());
        }
        self.state.send_modify(|s| {
            s.connected = false;
            s.stopped = true;
        });
    }
}

fn credit_message(max_in_flight: u32) -> proto::ClientMsg {
    proto::ClientMsg {
        op: Some(Op::Credit(proto::Credit { max_in_flight })),
        ..Default::default()
    }
}

/// Why the server ended getTask, when it said.
fn end_reason(status: &Status) -> Option<EndReason> {
    status
        .metadata()
        .get(END_REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(EndReason::parse)
}

/// Refusals that another try will not change.
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}
