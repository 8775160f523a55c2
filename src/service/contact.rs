//! `Contact`: the seed's worker-facing service. getTask opens a session,
//! tellResult and sendStatus feed operations to it, sendStatus also feeds
//! the registry.

use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, adapters::Map, wrappers::ReceiverStream};
use tonic::{
    Request, Response, Status, Streaming,
    metadata::{MetadataMap, MetadataValue},
};
use tracing::debug;

use super::{Core, StreamEnd, next_batch};
use crate::{
    domain::{
        self, Ack, CLIENT_ID_KEY, ClientId, RESUMED_KEY, Registration, SESSION_ID_KEY,
        StatusReport, WorkerOp,
    },
    error::Error,
    proto::{self, contact_server::Contact},
    session::{Rejection, SessionHandle, StreamItem},
};

/// What tonic streams on getTask.
type StreamResult = Result<proto::ServerMsg, Status>;

/// How long a tellResult call the server ends while stopping waits for a
/// last ack already on its way, or for the worker to close its side.
const LAST_ACKS_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// Replies buffered per sendStatus call before the handler waits for the
/// worker to read them.
const STATUS_REPLY_BUFFER: usize = 64;

/// How long a sendStatus call stays silent before the server confirms the
/// quiet messages it applied: long enough that a worker acking steadily
/// gets no confirmation between its acks, short enough that one finishing
/// its last task hears of it at once.
const QUIET_CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_millis(5);

/// The most quiet messages one confirmation covers, which bounds what a
/// worker keeps until it is sure they were applied.
const QUIET_CONFIRM_EVERY: u32 = 256;

/// The Contact service facade.
#[derive(Clone, Debug)]
pub(crate) struct ContactService {
    core: Core,
}

impl ContactService {
    /// A facade over the server's actors.
    pub(crate) fn new(core: Core) -> Self {
        Self { core }
    }
}

fn op_attempt(op: &WorkerOp) -> Option<u32> {
    match op {
        WorkerOp::Ack(ack) => ack.attempt,
        WorkerOp::Extend { attempt, .. } => *attempt,
        WorkerOp::Credit(_) => None,
    }
}

fn op_task(op: &WorkerOp) -> String {
    match op {
        WorkerOp::Ack(ack) => ack.task_id.map(|t| t.to_string()).unwrap_or_default(),
        WorkerOp::Extend { task_id, .. } => task_id.to_string(),
        WorkerOp::Credit(_) => String::new(),
    }
}

/// Answers one ClientMsg: applies its operation, records its status.
async fn answer_status(
    core: &Core,
    named: Option<&ClientId>,
    peer: Option<std::net::SocketAddr>,
    owner: Option<&str>,
    message: proto::ClientMsg,
) -> proto::Result {
    let session = core.index.resolve_for(named, peer, owner);
    let op = match WorkerOp::from_message(message.op, core.workers.max_in_flight_cap) {
        Ok(op) => op,
        Err(error) => return refused(String::new(), error),
    };
    let Some(session) = session else {
        return refused(
            op.as_ref().map(op_task).unwrap_or_default(),
            Error::FailedPrecondition(
                "no worker of this caller is registered for this call (open getTask first, on \
                 the same channel or with contact-client-id); status not recorded"
                    .into(),
            ),
        );
    };
    let client = session.client().clone();
    if op.is_none() || !message.msg.is_empty() {
        let report = StatusReport::new(message.msg, message.running);
        let _ = core.registry.status_reported(client.clone(), report).await;
        session.heard().await;
    }
    let Some(op) = op else {
        return proto::Result {
            ret: format!("status recorded for worker {client}"),
            in_flight: session.in_flight(),
            ..Default::default()
        };
    };
    let is_credit = matches!(op, WorkerOp::Credit(_));
    let task_id = op_task(&op);
    let attempt = op_attempt(&op);
    let answer = match session.apply(vec![op], false).await {
        Ok(mut answers) => answers.pop().unwrap_or(Err(Rejection::SessionEnded)),
        Err(rejection) => Err(rejection),
    };
    match answer {
        Ok(()) => proto::Result {
            ret: "applied".into(),
            task_id,
            in_flight: if is_credit { session.in_flight() } else { 0 },
            ..Default::default()
        },
        Err(rejection) => refused(
            task_id,
            rejection.explain(&core.queue, &client, attempt).await,
        ),
    }
}

/// Answers a batch of pure operations (no status text) with one trip to
/// the session; one reply per message, in order.
async fn answer_ops(
    core: &Core,
    named: Option<&ClientId>,
    peer: Option<std::net::SocketAddr>,
    owner: Option<&str>,
    batch: Vec<proto::ClientMsg>,
) -> Vec<proto::Result> {
    let Some(session) = core.index.resolve_for(named, peer, owner) else {
        let mut answers = Vec::with_capacity(batch.len());
        for message in batch {
            answers.push(answer_status(core, named, peer, owner, message).await);
        }
        return answers;
    };
    let cap = core.workers.max_in_flight_cap;
    let parsed: Vec<Result<WorkerOp, Error>> = batch
        .into_iter()
        .map(|m| {
            WorkerOp::from_message(m.op, cap)
                .and_then(|op| op.ok_or(Error::InvalidArgument("no operation".into())))
        })
        .collect();
    let tasks: Vec<String> = parsed
        .iter()
        .map(|p| p.as_ref().map(op_task).unwrap_or_default())
        .collect();
    let attempts: Vec<Option<u32>> = parsed
        .iter()
        .map(|p| p.as_ref().ok().and_then(op_attempt))
        .collect();
    let mut errors: Vec<Option<Error>> = Vec::with_capacity(parsed.len());
    let mut ops = Vec::with_capacity(parsed.len());
    for op in parsed {
        match op {
            Ok(op) => {
                ops.push(op);
                errors.push(None);
            }
            Err(error) => errors.push(Some(error)),
        }
    }
    let mut applied = match session.apply(ops, false).await {
        Ok(answers) => answers.into_iter(),
        Err(rejection) => vec![Err(rejection); errors.len()].into_iter(),
    };
    let mut replies = Vec::with_capacity(errors.len());
    for ((error, task_id), attempt) in errors.into_iter().zip(tasks).zip(attempts) {
        let outcome = match error {
            Some(error) => Err(error),
            None => match applied.next().unwrap_or(Err(Rejection::SessionEnded)) {
                Ok(()) => Ok(()),
                Err(rejection) => Err(rejection
                    .explain(&core.queue, session.client(), attempt)
                    .await),
            },
        };
        replies.push(match outcome {
            Ok(()) => proto::Result {
                ret: "applied".into(),
                task_id,
                ..Default::default()
            },
            Err(error) => refused(task_id, error),
        });
    }
    replies
}

/// The quiet messages of one sendStatus call applied and not yet
/// confirmed, and where their confirmation goes among the answers.
#[derive(Debug, Default)]
struct QuietRun {
    unconfirmed: u32,
}

impl QuietRun {
    /// Queues the answer to one message: none for an applied quiet one
    /// (counted, confirmed later), otherwise the answer, after the
    /// confirmation of the quiet ones before it.
    fn answer(&mut self, reply: proto::Result, quiet: bool, out: &mut Vec<proto::Result>) {
        if quiet && reply.code == 0 {
            self.unconfirmed += 1;
            if self.unconfirmed >= QUIET_CONFIRM_EVERY {
                self.confirm(out);
            }
            return;
        }
        self.confirm(out);
        out.push(reply);
    }

    /// Queues the confirmation of what is unconfirmed, if anything.
    fn confirm(&mut self, out: &mut Vec<proto::Result>) {
        let count = std::mem::take(&mut self.unconfirmed);
        if count > 0 {
            out.push(proto::Result {
                ret: format!("{count} applied"),
                quiet_applied: count,
                ..Default::default()
            });
        }
    }

    fn is_empty(&self) -> bool {
        self.unconfirmed == 0
    }
}

fn refused(task_id: String, error: Error) -> proto::Result {
    let status = Status::from(error);
    proto::Result {
        task_id,
        code: status.code() as i32,
        error: status.message().to_owned(),
        ..Default::default()
    }
}

fn insert_header(metadata: &mut MetadataMap, key: &'static str, value: &str) {
    // Ids are checked ASCII and counts are digits, so this always parses.
    if let Ok(value) = MetadataValue::try_from(value) {
        metadata.insert(key, value);
    }
}

#[tonic::async_trait]
impl Contact for ContactService {
    type sendStatusStream = ReceiverStream<Result<proto::Result, Status>>;
    type getTaskStream = Map<ReceiverStream<StreamItem>, fn(StreamItem) -> StreamResult>;

    async fn send_status(
        &self,
        request: Request<Streaming<proto::ClientMsg>>,
    ) -> Result<Response<Self::sendStatusStream>, Status> {
        let named = domain::client_id_from_metadata(request.metadata())?;
        let peer = crate::transport::peer_addr(&request);
        let owner = crate::auth::owner_of(request.extensions());
        let mut inbound = request.into_inner();
        let (replies, replies_rx) = mpsc::channel(STATUS_REPLY_BUFFER);
        let core = self.core.clone();
        self.core.calls.spawn(async move {
            let mut quiet_run = QuietRun::default();
            loop {
                let batch = if quiet_run.is_empty() {
                    next_batch(&mut inbound, &core.stopping).await
                } else {
                    // Reading a message is cancel-safe: a timeout loses none.
                    match tokio::time::timeout(
                        QUIET_CONFIRM_AFTER,
                        next_batch(&mut inbound, &core.stopping),
                    )
                    .await
                    {
                        Ok(batch) => batch,
                        Err(_silent) => {
                            let mut confirmation = Vec::with_capacity(1);
                            quiet_run.confirm(&mut confirmation);
                            for reply in confirmation {
                                if replies.send(Ok(reply)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                    }
                };
                let quiet: Vec<bool> = batch.items.iter().map(|m| m.quiet).collect();
                let answers = if batch.items.len() > 1
                    && batch
                        .items
                        .iter()
                        .all(|m| m.msg.is_empty() && m.op.is_some())
                {
                    answer_ops(&core, named.as_ref(), peer, owner.as_deref(), batch.items).await
                } else {
                    let mut answers = Vec::with_capacity(batch.items.len());
                    for message in batch.items {
                        answers.push(
                            answer_status(&core, named.as_ref(), peer, owner.as_deref(), message)
                                .await,
                        );
                    }
                    answers
                };
                let mut outgoing = Vec::with_capacity(answers.len());
                for (reply, quiet) in answers.into_iter().zip(quiet) {
                    quiet_run.answer(reply, quiet, &mut outgoing);
                }
                if batch.end.is_some() {
                    quiet_run.confirm(&mut outgoing);
                }
                for reply in outgoing {
                    if replies.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                match batch.end {
                    None => {}
                    Some(StreamEnd::Finished | StreamEnd::Stopping) => break,
                    Some(StreamEnd::Failed(status)) => {
                        debug!(%status, "sendStatus stream ended with an error");
                        let _ = replies.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(replies_rx)))
    }

    async fn get_task(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<Self::getTaskStream>, Status> {
        let peer = crate::transport::peer_addr(&request);
        let owner = crate::auth::owner_of(request.extensions());
        let (metadata, _, body) = request.into_parts();
        let registration = Registration::from_request(&metadata, body, &self.core.workers)?;
        // Subscribe before the check, so a drain that starts after the check
        // is still seen by the new session.
        let notices = self.core.notices.activate_cloned();
        if self.core.draining.is_cancelled() {
            return Err(Error::ShuttingDown.into());
        }
        // A slot per task the worker may ever hold (credit can rise to the
        // cap), plus one for a control message and one for the final status.
        let capacity = self.core.workers.max_in_flight_cap as usize + 2;
        let (stream_tx, stream_rx) = mpsc::channel(capacity);
        let started = SessionHandle::start(
            registration,
            peer,
            owner,
            stream_tx,
            notices,
            &self.core.session_deps(),
        )
        .await?;
        let stream: Self::getTaskStream =
            ReceiverStream::new(stream_rx).map(StreamItem::into_result as fn(_) -> _);
        let mut response = Response::new(stream);
        let headers = response.metadata_mut();
        insert_header(headers, CLIENT_ID_KEY, started.client.as_str());
        insert_header(headers, SESSION_ID_KEY, &started.session.to_string());
        insert_header(headers, RESUMED_KEY, &started.resumed.to_string());
        Ok(response)
    }

    async fn tell_result(
        &self,
        request: Request<Streaming<proto::Result>>,
    ) -> Result<Response<proto::Empty>, Status> {
        let named = domain::client_id_from_metadata(request.metadata())?;
        let peer = crate::transport::peer_addr(&request);
        let owner = crate::auth::owner_of(request.extensions());
        let mut inbound = request.into_inner();
        // Bound to one session at the first ack: acks still in flight when
        // that session ends must not land on the worker's next session.
        let mut session: Option<SessionHandle> = None;
        loop {
            let batch = next_batch(&mut inbound, &self.core.stopping).await;
            // The acks before a malformed one stand; the call ends with its status.
            let mut ops = Vec::with_capacity(batch.items.len());
            let mut bad_input = None;
            for message in batch.items {
                match Ack::try_from(message) {
                    Ok(ack) => ops.push(WorkerOp::Ack(ack)),
                    Err(error) => {
                        bad_input = Some(Status::from(error));
                        break;
                    }
                }
            }
            if !ops.is_empty() {
                let session = match &session {
                    Some(session) => session,
                    None => session.insert(
                        self.core
                            .index
                            .resolve_for(named.as_ref(), peer, owner.as_deref())
                            .ok_or(Error::FailedPrecondition(
                                "no worker is registered for this call: open getTask first, \
                             on the same channel or with contact-client-id"
                                    .into(),
                            ))?,
                    ),
                };
                let attempts: Vec<Option<u32>> = ops.iter().map(op_attempt).collect();
                let answers = session
                    .apply(ops, true)
                    .await
                    .map_err(|rejection| rejection.into_error())?;
                for (answer, attempt) in answers.into_iter().zip(attempts) {
                    if let Err(rejection) = answer {
                        let error = rejection
                            .explain(&self.core.queue, session.client(), attempt)
                            .await;
                        return Err(error.into());
                    }
                }
            }
            if let Some(status) = bad_input {
                return Err(status);
            }
            match batch.end {
                None => {}
                Some(StreamEnd::Finished) => break,
                Some(StreamEnd::Failed(status)) => return Err(status),
                // Every ack read so far was applied (a refused one returned
                // above). An ack may still be on its way: give the worker a
                // moment to send it or to close its side, as a worker whose
                // getTask stream just ended does. One that arrives is
                // answered like any other (its session has ended, so it is
                // refused); with none, the call ends OK: its acks landed.
                Some(StreamEnd::Stopping) => {
                    match tokio::time::timeout(LAST_ACKS_GRACE, inbound.message()).await {
                        Ok(Ok(Some(late))) => {
                            let error = match Ack::try_from(late) {
                                Err(error) => error,
                                Ok(_) => Error::ShuttingDown,
                            };
                            return Err(error.into());
                        }
                        Ok(Err(status)) => return Err(status),
                        Ok(Ok(None)) | Err(_) => break,
                    }
                }
            }
        }
        Ok(Response::new(proto::Empty::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied() -> proto::Result {
        proto::Result::default()
    }

    fn refusal() -> proto::Result {
        proto::Result {
            code: tonic::Code::NotFound as i32,
            ..Default::default()
        }
    }

    /// Answers keep the order of the messages they answer: a refusal or a
    /// loud answer comes after the confirmation of the quiet ones before it.
    #[test]
    fn confirmations_keep_the_order_of_what_they_answer() {
        let mut run = QuietRun::default();
        let mut out = Vec::new();
        run.answer(applied(), true, &mut out);
        run.answer(applied(), true, &mut out);
        run.answer(refusal(), true, &mut out);
        run.answer(applied(), false, &mut out);
        run.answer(applied(), true, &mut out);
        assert!(!run.is_empty());
        run.confirm(&mut out);
        let shape: Vec<(u32, i32)> = out.iter().map(|r| (r.quiet_applied, r.code)).collect();
        assert_eq!(
            shape,
            vec![(2, 0), (0, tonic::Code::NotFound as i32), (0, 0), (1, 0)]
        );
        assert!(run.is_empty());
        run.confirm(&mut out);
        assert_eq!(out.len(), 4, "nothing to confirm, nothing sent");
    }

    #[test]
    fn one_confirmation_covers_at_most_256() {
        let mut run = QuietRun::default();
        let mut out = Vec::new();
        for _ in 0..600 {
            run.answer(applied(), true, &mut out);
        }
        run.confirm(&mut out);
        let counts: Vec<u32> = out.iter().map(|r| r.quiet_applied).collect();
        assert_eq!(counts, vec![256, 256, 88]);
    }
}
