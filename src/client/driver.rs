//! The driver: one background task per worker that owns the connection and
//! does the protocol's chores.
//!
//! It is an actor like the server's: [`Task`]s and the
//! [`WorkerHandle`](super::WorkerHandle) send it [`Command`]s; it alone
//! talks to the server. Every operation goes on `sendStatus`, which answers
//! each message in order, so a refused ack is reported to the caller
//! without ending the call. It registers (resuming when it can), confirms
//! receipts, answers keepalives and heartbeats on its own schedule, redials
//! a dropped connection with backoff and jitter, and drains.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use futures_util::FutureExt as _;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Request, Status, Streaming,
    metadata::{MetadataMap, MetadataValue},
};
use tracing::{debug, info, warn};

use super::{
    ClientError, Task, Worker, WorkerBuilder, WorkerState,
    address::dial,
    command::{Command, PendingOp},
};
use crate::{
    domain::{
        CLIENT_ID_KEY, END_REASON_KEY, EndReason, MAX_IN_FLIGHT_KEY, RESUMED_KEY, SESSION_ID_KEY,
    },
    proto::{self, Kind, client_msg::Op, contact_client::ContactClient},
};

/// Starts a worker: registers on a first connection (whose refusal is
/// returned), then spawns the driver.
pub(super) async fn start(
    settings: WorkerBuilder,
    registration: MetadataMap,
) -> Result<Worker, ClientError> {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (tasks_tx, tasks) = mpsc::unbounded_channel();
    let (state_tx, state) = watch::channel(WorkerState::default());
    let mut driver = Driver {
        credit: settings.max_in_flight,
        own_id: settings.client_id.is_some(),
        client_id: settings.client_id.clone(),
        settings,
        registration,
        commands,
        command_tx: commands_tx.downgrade(),
        tasks: tasks_tx,
        held: HashMap::new(),
        awaiting_reply: VecDeque::new(),
        queued: VecDeque::new(),
        session_id: None,
        last_sent: Instant::now(),
        draining: false,
        drained: Vec::new(),
        state: state_tx,
    };
    let connection = driver.open().await?;
    tokio::spawn(driver.run(connection));
    Ok(Worker::new(tasks, commands_tx, state))
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
    /// When this connection last sent the server anything (registration
    /// included): the server hears from the worker with every message.
    last_sent: Instant,
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
        let channel = dial(&self.settings.endpoint, &self.settings.credentials).await?;
        let mut client = ContactClient::new(self.settings.credentials.channel(channel))
            .max_decoding_message_size(crate::client::MAX_MESSAGE_BYTES);
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
        self.last_sent = Instant::now();
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
            // With keepalives on, the worker promised to be heard from; a
            // server whose stream is never idle sends no keepalive to answer.
            let heartbeat_due = self.settings.keepalive.map(|every| self.last_sent + every);
            let heartbeat = async {
                match heartbeat_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
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
                () = heartbeat => self.heartbeat(connection),
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
                // With the Worker gone the task drops here and goes back.
                let _ = self.tasks.send(Task::new(message, cancelled, commands));
            }
            Kind::Keepalive => {
                self.heartbeat(connection);
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

    /// A status message with no text (the server keeps the last one) and
    /// the held count.
    fn heartbeat(&mut self, connection: &Connection) {
        let heartbeat = proto::ClientMsg {
            running: u32::try_from(self.held.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        self.send(connection, PendingOp::unanswered(heartbeat));
    }

    fn send(&mut self, connection: &Connection, op: PendingOp) {
        match connection.control.send(op.message.clone()) {
            Ok(()) => {
                self.last_sent = Instant::now();
                self.awaiting_reply.push_back(op);
            }
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
