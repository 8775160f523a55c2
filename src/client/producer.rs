//! The producer side: submitting tasks and following them to their end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tonic::transport::Channel;

use super::{AuthChannel, ClientError, Credentials, address::dial};
use crate::proto::v1::{self, tasks_client::TasksClient};

/// A task to submit, built up from [`Submission::to_queue`] or
/// [`Submission::to_worker`].
#[derive(Clone, Debug, Default)]
pub struct Submission {
    request: v1::SubmitRequest,
}

impl Submission {
    /// A task for any worker of `queue`.
    pub fn to_queue(queue: impl Into<String>) -> Self {
        Self {
            request: v1::SubmitRequest {
                queue: queue.into(),
                ..Default::default()
            },
        }
    }

    /// A task for one worker, by its client id.
    pub fn to_worker(client_id: impl Into<String>) -> Self {
        Self {
            request: v1::SubmitRequest {
                target_client_id: client_id.into(),
                ..Default::default()
            },
        }
    }

    /// The task's text (all a seed client sees).
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.request.text = text.into();
        self
    }

    /// The task's binary payload.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.request.payload = payload.into();
        self
    }

    /// Higher runs first.
    pub fn priority(mut self, priority: i32) -> Self {
        self.request.priority = priority;
        self
    }

    /// Deliver no sooner than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        // A delay past what the clock can name is the furthest future.
        self.request.not_before_unix_ms = match SystemTime::now().checked_add(delay) {
            Some(at) => at.duration_since(UNIX_EPOCH).map_or(0, millis),
            None => u64::MAX,
        };
        self
    }

    /// Dead-letter it if no worker starts it within `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.request.ttl_ms = millis(ttl);
        self
    }

    /// Resubmitting the same key within the server's window returns the
    /// first task's id instead of making a new task.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.request.idempotency_key = key.into();
        self
    }

    /// The execution lease of each delivery.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.request.lease_ms = millis(lease);
        self
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A producer's connection to the server's `contact.v1.Tasks` service.
/// Cloning it shares the connection.
#[derive(Clone, Debug)]
pub struct Producer {
    tasks: TasksClient<AuthChannel>,
}

impl Producer {
    /// Connects to the server at `endpoint`, in any form
    /// [`endpoint_url`](super::endpoint_url) accepts (e.g. `127.0.0.1:50051`
    /// or `http://127.0.0.1:50051`).
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, Credentials::none()).await
    }

    /// [`Producer::connect`], sending `credentials` on every call.
    pub async fn connect_with(
        endpoint: &str,
        credentials: Credentials,
    ) -> Result<Self, ClientError> {
        Ok(Self::from_channel_with(
            dial(endpoint, &credentials).await?,
            credentials,
        ))
    }

    /// A producer on a channel you already have.
    pub fn from_channel(channel: Channel) -> Self {
        Self::from_channel_with(channel, Credentials::none())
    }

    /// A producer on a channel you already have, with credentials.
    pub fn from_channel_with(channel: Channel, credentials: Credentials) -> Self {
        Self {
            tasks: TasksClient::new(credentials.channel(channel))
                .max_decoding_message_size(crate::client::MAX_MESSAGE_BYTES),
        }
    }

    /// Submits one task; its id.
    pub async fn submit(&mut self, submission: Submission) -> Result<String, ClientError> {
        let reply = self.tasks.submit(submission.request).await?.into_inner();
        Ok(reply.task_id)
    }

    /// Submits many tasks on one pipelined stream: one answer per task, in
    /// order, each its id or why it was refused (a refusal does not stop
    /// the rest).
    pub async fn submit_all(
        &mut self,
        submissions: impl Stream<Item = Submission> + Send + 'static,
    ) -> Result<Vec<Result<String, ClientError>>, ClientError> {
        let requests = submissions.map(|s| s.request);
        let mut replies = self.tasks.submit_stream(requests).await?.into_inner();
        let mut answers = Vec::new();
        while let Some(reply) = replies.message().await? {
            answers.push(match reply.error {
                Some(error) => Err(ClientError::Refused {
                    code: tonic::Code::from_i32(error.code),
                    message: error.message,
                }),
                None => Ok(reply.task_id),
            });
        }
        Ok(answers)
    }

    /// A task as it is now.
    pub async fn get(&mut self, task_id: &str) -> Result<v1::TaskInfo, ClientError> {
        let request = v1::GetRequest {
            task_id: task_id.to_owned(),
        };
        Ok(self.tasks.get(request).await?.into_inner())
    }

    /// Waits until the task is done, dead-lettered or cancelled, up to
    /// `timeout` (then DEADLINE_EXCEEDED).
    pub async fn wait(
        &mut self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<v1::TaskInfo, ClientError> {
        let request = v1::WaitRequest {
            task_id: task_id.to_owned(),
            timeout_ms: millis(timeout).max(1),
        };
        Ok(self.tasks.wait(request).await?.into_inner())
    }

    /// Cancels a task that is not finished; a worker holding it is told.
    pub async fn cancel(&mut self, task_id: &str) -> Result<v1::TaskInfo, ClientError> {
        let request = v1::CancelRequest {
            task_id: task_id.to_owned(),
        };
        Ok(self.tasks.cancel(request).await?.into_inner())
    }

    /// Sends a copy of a task to every worker of `queue` connected now. The
    /// reply has the broadcast's id and names every copy (task and worker),
    /// all of which exist by then: wait for each, or follow them together
    /// with [`Producer::broadcast_copies`].
    pub async fn broadcast(
        &mut self,
        queue: &str,
        text: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<v1::BroadcastReply, ClientError> {
        let request = v1::BroadcastRequest {
            queue: queue.to_owned(),
            text: text.into(),
            payload: payload.into(),
        };
        Ok(self.tasks.broadcast(request).await?.into_inner())
    }

    /// The copies of a broadcast, one per worker that took it.
    pub async fn broadcast_copies(
        &mut self,
        broadcast_id: &str,
    ) -> Result<Vec<v1::TaskInfo>, ClientError> {
        let request = v1::GetBroadcastRequest {
            broadcast_id: broadcast_id.to_owned(),
        };
        Ok(self.tasks.get_broadcast(request).await?.into_inner().copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_too_far_for_the_clock_is_the_furthest_future() {
        let submission = Submission::to_queue("q").delay(Duration::MAX);
        assert_eq!(submission.request.not_before_unix_ms, u64::MAX);
        let soon = Submission::to_queue("q").delay(Duration::from_secs(60));
        assert!(soon.request.not_before_unix_ms > 0);
        assert!(soon.request.not_before_unix_ms < u64::MAX);
    }
}
