//! `Contact`: the seed's worker-facing service. getTask opens a session,
//! tellResult feeds acknowledgements to it, sendStatus feeds the registry.

use std::pin::pin;

use futures_util::FutureExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::{Core, MAX_STREAM_BATCH};
use crate::{
    domain::{self, Ack, CLIENT_ID_KEY, Registration, TaskState},
    error::Error,
    proto::{self, contact_server::Contact},
    session::{AckRejection, SessionHandle, StreamItem},
};

/// Replies buffered per sendStatus call before the handler waits for the
/// worker to read them.
const STATUS_REPLY_BUFFER: usize = 16;

/// The Contact service facade.
#[derive(Clone, Debug)]
pub struct ContactService {
    core: Core,
}

impl ContactService {
    /// A facade over the server's actors.
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    /// Turns a session's refusal of an ack into the status the worker gets,
    /// asking the queue what became of the task when that tells more.
    async fn rejection_status(&self, session: &SessionHandle, rejection: AckRejection) -> Status {
        let error = match rejection {
            AckRejection::NothingHeld => Error::FailedPrecondition(
                "this worker holds no unacknowledged task for an ack without task_id".into(),
            ),
            AckRejection::SessionEnded => Error::FailedPrecondition(
                "this worker's getTask stream has ended; its tasks were handed back".into(),
            ),
            AckRejection::NotHeld(id) => match self.core.queue.get(id).await {
                Err(error) => error,
                Ok(info)
                    if info.state == TaskState::Done
                        && info.worker.as_ref() == Some(session.client()) =>
                {
                    Error::AlreadyExists(format!("task {id} was already acknowledged"))
                }
                Ok(_) => Error::FailedPrecondition(format!("task {id} is not held by this worker")),
            },
        };
        error.into()
    }
}

#[tonic::async_trait]
impl Contact for ContactService {
    type sendStatusStream = ReceiverStream<Result<proto::Result, Status>>;
    type getTaskStream = ReceiverStream<StreamItem>;

    async fn send_status(
        &self,
        request: Request<Streaming<proto::ClientMsg>>,
    ) -> Result<Response<Self::sendStatusStream>, Status> {
        let named = domain::client_id_from_metadata(request.metadata())?;
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let (replies, replies_rx) = mpsc::channel(STATUS_REPLY_BUFFER);
        let core = self.core.clone();
        self.core.calls.spawn(async move {
            loop {
                let message = tokio::select! {
                    () = core.stopping.cancelled() => break,
                    message = inbound.message() => message,
                };
                let status = match message {
                    Ok(Some(message)) => domain::StatusReport::from(message),
                    Ok(None) => break,
                    Err(status) => {
                        debug!(%status, "sendStatus stream ended with an error");
                        break;
                    }
                };
                let ret = match core.index.resolve(named.as_ref(), peer) {
                    Some(session) => {
                        let client = session.client().clone();
                        let answer = format!("status recorded for worker {client}");
                        if core.registry.status_reported(client, status).await.is_err() {
                            break;
                        }
                        answer
                    }
                    None => "status not recorded: no worker is registered for this call \
                             (open getTask first, on the same channel or with contact-client-id)"
                        .to_owned(),
                };
                let reply = proto::Result {
                    ret,
                    ..Default::default()
                };
                if replies.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(replies_rx)))
    }

    async fn get_task(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<Self::getTaskStream>, Status> {
        let workers = &self.core.workers;
        let registration = Registration::from_metadata(
            request.metadata(),
            workers.default_max_in_flight,
            workers.max_in_flight_cap,
        )?;
        // Subscribe before the check, so a drain that starts after the check
        // is still seen by the new session.
        let notices = self.core.notices.activate_cloned();
        if self.core.draining.is_cancelled() {
            return Err(Error::ShuttingDown.into());
        }
        let client = registration.client_id.clone();
        // One slot per task the worker may hold, plus one for the final status.
        let (stream_tx, stream_rx) = mpsc::channel(registration.max_in_flight as usize + 1);
        SessionHandle::start(
            registration,
            request.remote_addr(),
            stream_tx,
            notices,
            &self.core.session_deps(),
        )
        .await?;
        let mut response = Response::new(ReceiverStream::new(stream_rx));
        // Client ids are checked to be ASCII, so this always parses.
        if let Ok(value) = client.as_str().parse() {
            response.metadata_mut().insert(CLIENT_ID_KEY, value);
        }
        Ok(response)
    }

    async fn tell_result(
        &self,
        request: Request<Streaming<proto::Result>>,
    ) -> Result<Response<proto::Empty>, Status> {
        let named = domain::client_id_from_metadata(request.metadata())?;
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        // Bound to one session at the first ack: acks still in flight when
        // that session ends must not land on the worker's next session.
        let mut session: Option<SessionHandle> = None;
        loop {
            let first = tokio::select! {
                () = self.core.stopping.cancelled() => return Err(Error::ShuttingDown.into()),
                message = inbound.message() => message?,
            };
            let Some(first) = first else { break };
            // Take what has already arrived too, without waiting, so a fast
            // worker's acks travel to its session in batches.
            let mut acks = Vec::new();
            let mut bad_input = None;
            let mut ended = false;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match Ack::try_from(message) {
                    Ok(ack) => acks.push(ack),
                    Err(error) => {
                        bad_input = Some(Status::from(error));
                        break;
                    }
                }
                if acks.len() >= MAX_STREAM_BATCH {
                    break;
                }
                match pin!(inbound.message()).now_or_never() {
                    Some(Ok(Some(message))) => next = Some(message),
                    Some(Ok(None)) => ended = true,
                    Some(Err(status)) => bad_input = Some(status),
                    None => {}
                }
            }
            if !acks.is_empty() {
                let session = match &session {
                    Some(session) => session,
                    None => session.insert(
                        self.core.index.resolve(named.as_ref(), peer).ok_or(
                            Error::FailedPrecondition(
                                "no worker is registered for this call: open getTask first, \
                             on the same channel or with contact-client-id"
                                    .into(),
                            ),
                        )?,
                    ),
                };
                if let Err(rejection) = session.ack(acks).await {
                    return Err(self.rejection_status(session, rejection).await);
                }
            }
            if let Some(status) = bad_input {
                return Err(status);
            }
            if ended {
                break;
            }
        }
        Ok(Response::new(proto::Empty {}))
    }
}
