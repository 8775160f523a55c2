//! Deterministic tests of the queue actor as a whole: handlers are called
//! directly, and timers are fired with a synthetic clock. This file holds
//! the helpers; the tests are split by theme: `delivery.rs` (who gets which
//! task and when, and what becomes of a task its worker fails or hands
//! back) and `admin.rs` (what submission refuses, idempotency keys, and the
//! operator's actions: cancel, dead letters, requeue, drain). Each part of
//! the actor's state also tests itself in its own file.

#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    Completion, LeaseRequest, QueueMsg, QueuePolicy, Release, ReleaseReason,
    actor::Queue,
    policy::{QueueLimits, RetryPolicy},
};

mod admin;
mod delivery;
use crate::{
    domain::{
        ClientId, DeadLetterReason, Delivery, NewTask, Outcome, QueueName, SessionId, Target,
        TaskId, TaskResult, TaskState,
    },
    error::Error,
};

/// The unit-test policy with room for many tasks and retries at once.
fn policy(max_attempts: u32) -> QueuePolicy {
    let base = QueuePolicy::for_tests(max_attempts);
    QueuePolicy {
        max_pending_tasks: 10_000,
        default_limits: QueueLimits {
            max_depth: 1000,
            retry: RetryPolicy {
                initial: Duration::ZERO,
                factor: 2.0,
                max: Duration::ZERO,
            },
            ..base.default_limits
        },
        ..base
    }
}

fn queue_with(policy: QueuePolicy) -> Queue {
    let (_tx, rx) = mpsc::channel(1);
    Queue::new(rx, policy, crate::journal::Journal::memory())
}

fn queue(max_attempts: u32) -> Queue {
    queue_with(policy(max_attempts))
}

fn task() -> NewTask {
    NewTask {
        text: "t".into(),
        ..Default::default()
    }
}

fn for_client(client: &ClientId) -> NewTask {
    NewTask {
        target: Some(Target::Client(client.clone())),
        ..task()
    }
}

fn submit(queue: &mut Queue, tasks: Vec<NewTask>) -> Vec<Result<TaskId, Error>> {
    let (respond_to, mut answer) = oneshot::channel();
    queue.handle(QueueMsg::Submit { tasks, respond_to });
    queue.dispatch();
    answer.try_recv().unwrap()
}

fn submit_n(queue: &mut Queue, n: usize) -> Vec<TaskId> {
    let tasks = (0..n).map(|_| task()).collect();
    submit(queue, tasks)
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

struct Worker {
    session: SessionId,
    client: ClientId,
}

fn worker(name: &str) -> Worker {
    Worker {
        session: SessionId::generate(),
        client: ClientId::parse(name).unwrap(),
    }
}

fn lease(queue: &mut Queue, worker: &Worker, max: u32) -> oneshot::Receiver<Vec<Delivery>> {
    let (respond_to, answer) = oneshot::channel();
    queue.handle(QueueMsg::Lease(LeaseRequest {
        session: worker.session,
        client: worker.client.clone(),
        queues: Arc::new([QueueName::default_queue()]),
        max,
        respond_to,
        ticket: 0,
        turn: 0,
    }));
    queue.dispatch();
    answer
}

fn ids(answer: &mut oneshot::Receiver<Vec<Delivery>>) -> Vec<TaskId> {
    answer
        .try_recv()
        .unwrap()
        .iter()
        .map(|d| d.task_id)
        .collect()
}

fn state(queue: &Queue, id: TaskId) -> (TaskState, u32) {
    let info = queue.info(id).unwrap();
    (info.state, info.attempts)
}

fn release(worker: &Worker, delivered: Vec<(TaskId, u32)>, reason: ReleaseReason) -> QueueMsg {
    QueueMsg::Release(Release {
        session: worker.session,
        worker: worker.client.clone(),
        delivered,
        reason,
        undelivered: vec![],
        session_ended: None,
    })
}

fn complete(worker: &Worker, task: TaskId, attempt: u32, outcome: Outcome) -> QueueMsg {
    QueueMsg::Complete {
        worker: worker.client.clone(),
        acks: vec![Completion {
            task,
            attempt,
            outcome,
            result: TaskResult {
                ret: "r".into(),
                ..Default::default()
            },
            retry_after: None,
        }],
    }
}
