//! getTask: tasks are pushed to connected workers, within their credit,
//! shared fairly, and never lost when a worker goes away.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{TestServer, TestWorker, WorkerOptions, until_disconnected, within, workers};
use contact_server::proto::{
    Outcome,
    v1::{self, TaskState},
};

/// A submitted task is pushed to a waiting worker with its id, text, queue
/// and attempt number, in submission order.
#[tokio::test]
async fn pushes_tasks_to_a_worker_in_order() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w1")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(server.submit("default", &format!("task {i}")).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let task = worker.next_task().await;
        assert_eq!(&task.task_id, id);
        assert_eq!(task.task, format!("task {i}"));
        assert_eq!(task.queue, "default");
        assert_eq!(task.attempt, 1);
    }
    assert_eq!(server.get(&ids[0]).await.state(), TaskState::Delivered);
    assert_eq!(server.get(&ids[0]).await.worker_id, "w1");
    server.stop().await;
}

/// A worker never holds more unacknowledged tasks than its in-flight limit;
/// an ack frees credit and the next task follows.
#[tokio::test]
async fn respects_the_in_flight_limit() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").max_in_flight(2)).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(server.submit("default", &format!("t{i}")).await);
    }
    let first = worker.next_task().await;
    let second = worker.next_task().await;
    assert_eq!(
        (first.task_id.as_str(), second.task_id.as_str()),
        (ids[0].as_str(), ids[1].as_str())
    );
    // With no other worker, the third task can only be pending: the worker has no credit.
    assert_eq!(server.get(&ids[2]).await.state(), TaskState::Pending);
    worker.ack(&first.task_id, Outcome::Done, "ok").await;
    assert_eq!(worker.next_task().await.task_id, ids[2]);
    assert_eq!(server.get(&ids[3]).await.state(), TaskState::Pending);
    server.stop().await;
}

/// Several workers on one queue share it fairly: each worker with credit 1
/// gets tasks in turn, so no worker starves.
#[tokio::test]
async fn shares_a_queue_fairly_across_workers() {
    let server = TestServer::start().await;
    let mut workers = workers(&server, 3, 1).await;
    const TASKS: usize = 30;
    let mut submitted = Vec::new();
    for i in 0..TASKS {
        submitted.push(server.submit("default", &format!("t{i}")).await);
    }
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    let mut done = 0;
    // Round-robin over the workers: each takes its task, acks it, and the
    // next task goes to whoever asked first.
    while done < TASKS {
        for worker in &mut workers {
            if done == TASKS {
                break;
            }
            let task = worker.next_task().await;
            worker.ack(&task.task_id, Outcome::Done, "ok").await;
            *per_worker.entry(worker.id.clone()).or_default() += 1;
            done += 1;
        }
    }
    for id in &submitted {
        assert_eq!(server.wait_finished(id).await.state(), TaskState::Done);
    }
    assert_eq!(per_worker.len(), 3, "{per_worker:?}");
    assert!(
        per_worker.values().all(|n| *n == TASKS / 3),
        "{per_worker:?}"
    );
    server.stop().await;
}

/// A worker that disconnects while holding a task loses nothing: the task
/// goes at once to another worker, as attempt 2, and completes there.
#[tokio::test]
async fn a_dropped_worker_task_completes_on_another() {
    let server = TestServer::start().await;
    let mut first = TestWorker::connect(&server, WorkerOptions::id("first")).await;
    let id = server.submit("default", "survive me").await;
    let task = first.next_task().await;
    assert_eq!(task.task_id, id);
    drop(first);

    let mut second = TestWorker::connect(&server, WorkerOptions::id("second")).await;
    let again = second.next_task().await;
    assert_eq!(again.task_id, id);
    assert_eq!(again.attempt, 2);
    second.ack(&id, Outcome::Done, "done by second").await;
    let info = server.wait_finished(&id).await;
    assert_eq!(info.state(), TaskState::Done);
    assert_eq!(info.worker_id, "second");
    assert_eq!(info.ret, "done by second");
    assert_eq!(info.attempts, 2);
    server.stop().await;
}

/// A worker already waiting when another drops its task gets the task
/// without anyone resubmitting it.
#[tokio::test]
async fn a_waiting_worker_takes_over_a_dropped_task() {
    let server = TestServer::start().await;
    let mut holder = TestWorker::connect(&server, WorkerOptions::id("holder")).await;
    let id = server.submit("default", "x").await;
    assert_eq!(holder.next_task().await.task_id, id);
    let mut waiter = TestWorker::connect(&server, WorkerOptions::id("waiter")).await;
    drop(holder);
    let task = waiter.next_task().await;
    assert_eq!((task.task_id.as_str(), task.attempt), (id.as_str(), 2));
    server.stop().await;
}

/// Workers only get tasks from the queues they subscribe to.
#[tokio::test]
async fn workers_get_only_their_queues() {
    let server = TestServer::start().await;
    let mut images = TestWorker::connect(&server, WorkerOptions::id("img").queues("images")).await;
    let mut both =
        TestWorker::connect(&server, WorkerOptions::id("both").queues("mail,images")).await;
    let mail = server.submit("mail", "send it").await;
    assert_eq!(both.next_task().await.task_id, mail);
    let image = server.submit("images", "resize").await;
    let got = images.next_task().await;
    assert_eq!(
        (got.task_id.as_str(), got.queue.as_str()),
        (image.as_str(), "images")
    );
    server.stop().await;
}

/// A task for one worker by id goes only to it; if it is offline the task
/// waits for it, and an id no worker ever registered is refused.
#[tokio::test]
async fn targets_one_worker_and_waits_for_it() {
    let server = TestServer::start().await;
    let mut tasks = server.tasks().await;
    let unknown = within(
        "submit to unknown",
        tasks.submit(v1::SubmitRequest {
            target_client_id: "nobody".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    let target = TestWorker::connect(&server, WorkerOptions::id("target")).await;
    let mut other = TestWorker::connect(&server, WorkerOptions::id("other")).await;
    drop(target);
    until_disconnected(&server, "target").await;
    let id = within(
        "submit to target",
        tasks.submit(v1::SubmitRequest {
            target_client_id: "target".into(),
            text: "only for target".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .task_id;
    assert_eq!(server.get(&id).await.state(), TaskState::Pending);
    // A queued task submitted after it reaches the other worker first.
    let queued = server.submit("default", "anyone").await;
    assert_eq!(other.next_task().await.task_id, queued);

    let mut target = TestWorker::connect(&server, WorkerOptions::id("target")).await;
    let task = target.next_task().await;
    assert_eq!(
        (task.task_id.as_str(), task.queue.as_str()),
        (id.as_str(), "")
    );
    server.stop().await;
}
