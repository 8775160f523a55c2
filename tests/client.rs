//! The Rust client library against a real server: tasks round trip between
//! a `Producer` and a `Worker`; a dropped connection is redialled and the
//! session resumed with the task still held; receipts and keepalives are
//! answered without the worker's code doing anything, and a worker that
//! asked for keepalives is heard from even when none comes; a drain finishes
//! what is held and stops; an operator's disconnect stops the worker.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestServer, proxy::Proxy, test_config, within};
use contact_server::{
    client::{ClientError, Producer, Submission, Worker, WorkerBuilder, WorkerState},
    proto::v1::{self, TaskState},
};
use futures_util::stream;

async fn producer(server: &TestServer) -> Producer {
    within("producer", Producer::connect(&server.url()))
        .await
        .unwrap()
}

async fn connect(builder: WorkerBuilder) -> Worker {
    within("worker registration", builder.connect())
        .await
        .unwrap()
}

async fn next(worker: &mut Worker) -> contact_server::client::Task {
    within("a task", worker.next_task())
        .await
        .expect("the worker stopped")
}

/// Waits (bounded) until the worker's state satisfies `ready`.
async fn state_until(worker: &Worker, ready: impl FnMut(&WorkerState) -> bool) -> WorkerState {
    let mut watch = worker.handle().watch();
    within("worker state", watch.wait_for(ready))
        .await
        .unwrap()
        .clone()
}

/// Submit one by one and pipelined; finish with done, fail (then done on
/// the retry), fail permanently and retry later; extend a lease; each
/// result is what the producer sees.
#[tokio::test]
async fn tasks_round_trip_between_producer_and_worker() {
    let mut config = test_config();
    config.tasks.retry_initial_delay_ms = 10;
    config.tasks.retry_max_delay_ms = 10;
    let server = TestServer::with_config(config).await;
    let mut worker = connect(
        WorkerBuilder::new(server.url())
            .client_id("rust-1")
            .queues(["jobs"])
            .max_in_flight(4),
    )
    .await;
    assert_eq!(worker.client_id(), "rust-1");
    let mut producer = producer(&server).await;

    let first = producer
        .submit(
            Submission::to_queue("jobs")
                .text("first")
                .payload(&b"\x00\x01"[..]),
        )
        .await
        .unwrap();
    let task = next(&mut worker).await;
    assert_eq!(
        (task.id.as_str(), task.text.as_str(), &task.payload[..]),
        (first.as_str(), "first", &b"\x00\x01"[..])
    );
    task.extend(Duration::from_secs(120)).await.unwrap();
    task.done_with_output("ok", &b"out"[..]).await.unwrap();
    let info = producer
        .wait(&first, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (info.state(), info.ret.as_str(), &info.output[..]),
        (TaskState::Done, "ok", &b"out"[..])
    );

    let answers = producer
        .submit_all(stream::iter(vec![
            Submission::to_queue("jobs").text("flaky"),
            Submission::to_queue("jobs").text("broken"),
            Submission::to_queue("no such queue!").text("refused"),
        ]))
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    let flaky = answers[0].as_ref().unwrap().clone();
    let broken = answers[1].as_ref().unwrap().clone();
    assert!(matches!(
        &answers[2],
        Err(ClientError::Refused {
            code: tonic::Code::InvalidArgument,
            ..
        })
    ));
    for _ in 0..2 {
        let task = next(&mut worker).await;
        if task.id == flaky {
            task.fail("try again").await.unwrap();
        } else {
            task.fail_permanently("never").await.unwrap();
        }
    }
    let retried = next(&mut worker).await;
    assert_eq!((retried.id.as_str(), retried.attempt), (flaky.as_str(), 2));
    retried.done("second time lucky").await.unwrap();
    let info = producer
        .wait(&flaky, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((info.state(), info.attempts), (TaskState::Done, 2));
    let info = producer
        .wait(&broken, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(info.state(), TaskState::DeadLettered);

    // To one worker by id; retry later; and a finished task cannot be
    // finished twice (the refusal comes back, the worker goes on).
    let later = producer
        .submit(Submission::to_worker("rust-1").text("later"))
        .await
        .unwrap();
    next(&mut worker)
        .await
        .retry_after(Duration::from_millis(10))
        .await
        .unwrap();
    let again = next(&mut worker).await;
    assert_eq!((again.id.as_str(), again.attempt), (later.as_str(), 2));
    again.done("done").await.unwrap();
    assert_eq!(
        producer
            .wait(&later, Duration::from_secs(10))
            .await
            .unwrap()
            .state(),
        TaskState::Done
    );

    // A broadcast reaches the worker as its own copy.
    let reply = producer
        .broadcast("jobs", "everyone", &b"cfg"[..])
        .await
        .unwrap();
    let broadcast = reply.broadcast_id;
    assert_eq!(reply.copy_count, 1);
    assert_eq!(reply.copies[0].client_id, "rust-1");
    let copy = next(&mut worker).await;
    assert_eq!(copy.id, reply.copies[0].task_id);
    assert_eq!(
        (copy.broadcast_id.as_str(), copy.text.as_str()),
        (broadcast.as_str(), "everyone")
    );
    let copy_id = copy.id.clone();
    copy.done("reloaded").await.unwrap();
    producer
        .wait(&copy_id, Duration::from_secs(10))
        .await
        .unwrap();
    let copies = producer.broadcast_copies(&broadcast).await.unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(
        (copies[0].state(), copies[0].worker_id.as_str()),
        (TaskState::Done, "rust-1")
    );
    server.stop().await;
}

/// Addresses without a scheme reach the server too: `host:port` as the
/// Python tools write it, and `localhost:PORT`.
#[tokio::test]
async fn addresses_without_a_scheme_reach_the_server() {
    let server = TestServer::start().await;
    let bare = server.grpc_addr.to_string();
    let mut worker = connect(WorkerBuilder::new(bare).client_id("bare")).await;
    let localhost = format!("localhost:{}", server.grpc_addr.port());
    let mut producer = within("producer", Producer::connect(&localhost))
        .await
        .unwrap();
    let id = producer
        .submit(Submission::to_queue("default").text("no scheme"))
        .await
        .unwrap();
    next(&mut worker).await.done("reached").await.unwrap();
    let info = producer.wait(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (info.state(), info.ret.as_str()),
        (TaskState::Done, "reached")
    );
    server.stop().await;
}

/// The connection drops under a worker holding a task: it redials, resumes
/// its session with the task, and its ack of the same attempt lands.
#[tokio::test]
async fn a_dropped_connection_is_redialled_and_the_session_resumed() {
    let mut config = test_config();
    config.workers.resume_grace_secs = 30;
    let server = TestServer::with_config(config).await;
    let proxy = Proxy::start(server.grpc_addr).await;
    let mut worker = connect(
        WorkerBuilder::new(proxy.url())
            .client_id("resumer")
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    )
    .await;
    let mut producer = producer(&server).await;
    let id = producer
        .submit(Submission::to_queue("default").text("survive the drop"))
        .await
        .unwrap();
    let task = next(&mut worker).await;
    let first_session = worker.handle().state().session_id;

    proxy.cut();
    let state = state_until(&worker, |s| s.connected && s.connections == 2).await;
    assert_eq!(state.session_id.len(), first_session.len());
    assert_ne!(state.session_id, first_session);
    assert_eq!(state.resumed, 1, "the held task stayed with the worker");
    assert!(!task.is_cancelled());
    task.done("after the drop").await.unwrap();
    let info = producer.wait(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (info.state(), info.attempts, info.worker_id.as_str()),
        (TaskState::Done, 1, "resumer")
    );
    server.stop().await;
}

/// A worker that asked for receipts and keepalives keeps its task past the
/// receipt timeout and its session past the liveness timeout, without its
/// code doing anything but holding the task.
#[tokio::test]
async fn receipts_and_keepalives_are_answered_for_the_worker() {
    let mut config = test_config();
    config.workers.receipt_timeout_ms = 200;
    config.workers.liveness_timeout_secs = 1;
    config.workers.min_keepalive_ms = 50;
    let server = TestServer::with_config(config).await;
    let mut worker = connect(
        WorkerBuilder::new(server.url())
            .client_id("careful")
            .receipts(true)
            .keepalive(Duration::from_millis(100)),
    )
    .await;
    let mut producer = producer(&server).await;
    let id = producer
        .submit(Submission::to_queue("default").text("hold me"))
        .await
        .unwrap();
    let task = next(&mut worker).await;
    // 15 keepalives at 100 ms: well past the 1 s liveness timeout and the
    // 200 ms receipt timeout.
    let state = state_until(&worker, |s| s.keepalives >= 15).await;
    assert_eq!(state.connections, 1, "the session was never expired");
    assert!(!task.is_cancelled(), "the receipt was confirmed in time");
    task.done("held and done").await.unwrap();
    let info = producer.wait(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!((info.state(), info.attempts), (TaskState::Done, 1));
    server.stop().await;
}

/// A worker that asked for keepalives is heard from on its own schedule,
/// not only when it answers one: while tasks come faster than its
/// keepalive interval (so the server, never idle, sends it no keepalive)
/// and its code only holds them, its session outlives the liveness timeout.
#[tokio::test]
async fn a_keepalive_worker_is_heard_from_when_no_keepalive_comes() {
    let mut config = test_config();
    config.workers.liveness_timeout_secs = 1;
    config.workers.min_keepalive_ms = 50;
    let server = TestServer::with_config(config).await;
    let mut worker = connect(
        WorkerBuilder::new(server.url())
            .client_id("heartbeating")
            .max_in_flight(64)
            .keepalive(Duration::from_millis(300)),
    )
    .await;
    let mut producer = producer(&server).await;
    // A push every 50 ms for 2 s: the stream is never idle for the 300 ms
    // a keepalive waits for, and the 1 s liveness timeout passes twice.
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let mut held = Vec::new();
    for i in 0..40 {
        pace.tick().await;
        let submission = Submission::to_queue("default").text(format!("t{i}"));
        producer.submit(submission).await.unwrap();
        held.push(next(&mut worker).await);
    }
    let state = worker.handle().state();
    assert_eq!(
        (state.connected, state.connections),
        (true, 1),
        "the session was expired"
    );
    assert!(held.iter().all(|task| !task.is_cancelled()));
    let listed = within(
        "list workers",
        server.admin().await.list_workers(v1::ListWorkersRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    let listed = &listed.workers[0];
    assert_eq!(listed.in_flight, 40);
    assert!(
        listed.last_heard_unix_ms >= listed.connected_unix_ms + 1000,
        "not heard from after the liveness timeout: {listed:?}"
    );
    for task in held {
        task.done("held and done").await.unwrap();
    }
    server.stop().await;
}

/// A cancelled task's `cancelled()` resolves, and finishing it is refused.
#[tokio::test]
async fn a_cancel_reaches_the_task() {
    let server = TestServer::start().await;
    let mut worker = connect(
        WorkerBuilder::new(server.url())
            .client_id("cancellable")
            .keepalive(Duration::from_secs(5)),
    )
    .await;
    let mut producer = producer(&server).await;
    let id = producer
        .submit(Submission::to_queue("default").text("long job"))
        .await
        .unwrap();
    let task = next(&mut worker).await;
    producer.cancel(&id).await.unwrap();
    within("the cancel", task.cancelled()).await;
    let refused = task.done("too late").await.unwrap_err();
    assert!(
        matches!(refused, ClientError::Refused { .. }),
        "{refused:?}"
    );
    server.stop().await;
}

/// Draining: nothing new comes, held tasks are finished, then the worker
/// stops and its task stream ends; what it did not take goes to others.
#[tokio::test]
async fn drain_finishes_held_tasks_then_stops() {
    let server = TestServer::start().await;
    let mut worker = connect(
        WorkerBuilder::new(server.url())
            .client_id("drained")
            .max_in_flight(2),
    )
    .await;
    let mut producer = producer(&server).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let submission = Submission::to_queue("default").text(format!("t{i}"));
        ids.push(producer.submit(submission).await.unwrap());
    }
    let held = [next(&mut worker).await, next(&mut worker).await];
    let handle = worker.handle();
    let drain = tokio::spawn(async move { handle.drain().await });
    // The pause goes out before the acks (one stream, in order), so the
    // freed credit brings nothing new.
    state_until(&worker, |s| s.draining).await;
    for task in held {
        task.done("finished while draining").await.unwrap();
    }
    within("the drain", drain).await.unwrap();
    assert!(within("end of tasks", worker.next_task()).await.is_none());
    assert!(worker.handle().state().stopped);
    assert_eq!(
        producer.get(&ids[2]).await.unwrap().state(),
        TaskState::Pending
    );
    let mut other = connect(WorkerBuilder::new(server.url()).client_id("other")).await;
    let task = next(&mut other).await;
    assert_eq!(task.id, ids[2]);
    task.done("taken over").await.unwrap();
    server.stop().await;
}

/// Credit changes at runtime: a refused one (over the server's cap) is
/// reported and not kept, so the next registration still works.
#[tokio::test]
async fn credit_changes_and_refusals() {
    let mut config = test_config();
    config.workers.resume_grace_secs = 30;
    let server = TestServer::with_config(config).await;
    let proxy = Proxy::start(server.grpc_addr).await;
    let mut worker = connect(
        WorkerBuilder::new(proxy.url())
            .client_id("credited")
            .max_in_flight(1)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    )
    .await;
    let handle = worker.handle();
    handle.set_credit(2).await.unwrap();
    match handle.set_credit(1_000_000).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, tonic::Code::InvalidArgument),
        other => panic!("{other:?}"),
    }
    let mut producer = producer(&server).await;
    for i in 0..2 {
        let submission = Submission::to_queue("default").text(format!("t{i}"));
        producer.submit(submission).await.unwrap();
    }
    let both = [next(&mut worker).await, next(&mut worker).await];
    // Reconnecting registers with the accepted credit, not the refused one.
    proxy.cut();
    let state = state_until(&worker, |s| s.connected && s.connections == 2).await;
    assert_eq!(state.resumed, 2);
    let listed = within(
        "list workers",
        server.admin().await.list_workers(v1::ListWorkersRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(listed.workers[0].max_in_flight, 2);
    for task in both {
        task.done("ok").await.unwrap();
    }
    server.stop().await;
}

/// An operator's disconnect stops the worker for good (it does not
/// reconnect); its operations then fail with `Stopped`.
#[tokio::test]
async fn an_operator_disconnect_stops_the_worker() {
    let server = TestServer::start().await;
    let mut worker = connect(WorkerBuilder::new(server.url()).client_id("kicked")).await;
    within(
        "disconnect",
        server.admin().await.disconnect_worker(v1::WorkerRequest {
            client_id: "kicked".into(),
        }),
    )
    .await
    .unwrap();
    assert!(within("end of tasks", worker.next_task()).await.is_none());
    let state = worker.handle().state();
    assert_eq!((state.stopped, state.connections), (true, 1));
    assert!(matches!(
        worker.handle().set_credit(3).await,
        Err(ClientError::Stopped)
    ));
    server.stop().await;
}

/// Bad options are refused before anything is sent; a refused
/// registration is returned by `connect`.
#[tokio::test]
async fn bad_options_and_refusals_come_back_from_connect() {
    let server = TestServer::start().await;
    let zero = WorkerBuilder::new(server.url()).max_in_flight(0).connect();
    assert!(matches!(zero.await, Err(ClientError::InvalidOption(_))));
    let bad_queue = WorkerBuilder::new(server.url())
        .queues(["no spaces allowed"])
        .connect();
    match within("bad queue", bad_queue).await {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument)
        }
        other => panic!("{other:?}"),
    }
    let _first = connect(WorkerBuilder::new(server.url()).client_id("twin")).await;
    match within(
        "twin",
        WorkerBuilder::new(server.url()).client_id("twin").connect(),
    )
    .await
    {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::AlreadyExists)
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}
