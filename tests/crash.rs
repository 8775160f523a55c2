//! Crashes at random moments: producers and a worker run against the real
//! daemon while it is killed with SIGKILL and restarted on the same
//! journal, and a model of what the server answered checks that nothing
//! accepted is lost.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{TempDir, daemon::Daemon, within};
use contact_server::{
    client::WorkerBuilder,
    proto::v1::{self, TaskState},
};
use futures_util::{StreamExt as _, stream};
use tonic::Code;

/// What one crash round learned from the server, for the model.
#[derive(Default)]
struct Model {
    /// Every task whose submit was answered OK.
    accepted: Vec<String>,
    /// Results that Wait returned as done.
    done: HashMap<String, String>,
    /// The most attempts seen per task.
    attempts: HashMap<String, u32>,
}

/// Producers and a worker run against the real daemon while it is killed
/// with SIGKILL at random moments and restarted on the same journal. After
/// every restart each task whose submit was answered OK is still there
/// (pending, delivered, done or dead-lettered, never missing), every result
/// Wait returned stays, and attempts never go down. The seed is printed
/// and `CONTACT_CRASH_SEED` replays a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_accepted() {
    let seed = std::env::var("CONTACT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (CONTACT_CRASH_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = TempDir::new("crash");
    let model = Arc::new(Mutex::new(Model::default()));
    for round in 0..6 {
        let daemon = Daemon::start(&dir.0, &[]).await;
        check(&daemon, &model, seed, round).await;
        let url = daemon.url();
        let producer = tokio::spawn(produce(url.clone(), model.clone(), rng.u64(..)));
        let waiter = tokio::spawn(wait_for_results(url.clone(), model.clone()));
        let worker = tokio::spawn(async move {
            let Ok(mut worker) = WorkerBuilder::new(url)
                .client_id("crash-worker")
                .max_in_flight(16)
                .connect()
                .await
            else {
                return;
            };
            while let Some(task) = worker.next_task().await {
                let ret = format!("done {}", task.id);
                if task.done(ret).await.is_err() {
                    return;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.u64(100..700))).await;
        daemon.kill9().await;
        producer.abort();
        waiter.abort();
        worker.abort();
    }
    let daemon = Daemon::start(&dir.0, &[]).await;
    check(&daemon, &model, seed, 6).await;
    let accepted = model.lock().unwrap().accepted.len();
    assert!(accepted > 0, "seed {seed}: no submit was answered at all");
    eprintln!("crash test: {accepted} tasks accepted over 6 crashes, none lost");
    assert_eq!(daemon.terminate().await, Some(0));
}

/// Tasks submitted per round at the most, so the checks stay quick.
const TASKS_PER_ROUND: usize = 400;

/// Submits tasks in small pipelined batches (up to [`TASKS_PER_ROUND`])
/// until aborted, recording each one answered OK.
async fn produce(url: String, model: Arc<Mutex<Model>>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let Ok(mut tasks) = v1::tasks_client::TasksClient::connect(url).await else {
        return;
    };
    let mut sent = 0;
    while sent < TASKS_PER_ROUND {
        // A little time between batches, so the kill lands among them.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
        let batch: Vec<v1::SubmitRequest> = (0..rng.usize(1..32))
            .map(|i| v1::SubmitRequest {
                text: format!("crash task {i}"),
                ..Default::default()
            })
            .collect();
        sent += batch.len();
        let Ok(replies) = tasks.submit_stream(tokio_stream::iter(batch)).await else {
            return;
        };
        let mut replies = replies.into_inner();
        while let Ok(Some(reply)) = replies.message().await {
            if reply.error.is_none() {
                model.lock().unwrap().accepted.push(reply.task_id);
            }
        }
    }
}

/// Waits on recently accepted tasks; records the results Wait returns.
async fn wait_for_results(url: String, model: Arc<Mutex<Model>>) {
    let Ok(mut tasks) = v1::tasks_client::TasksClient::connect(url).await else {
        return;
    };
    loop {
        let last = model.lock().unwrap().accepted.last().cloned();
        let Some(id) = last else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let request = v1::WaitRequest {
            task_id: id.clone(),
            timeout_ms: 200,
        };
        match tasks.wait(request).await {
            Ok(info) => {
                let info = info.into_inner();
                if info.state() == TaskState::Done {
                    model.lock().unwrap().done.insert(id, info.ret);
                }
            }
            Err(status) if status.code() == Code::DeadlineExceeded => {}
            Err(_) => return,
        }
    }
}

/// Every accepted task is there, with every result Wait returned, and no
/// fewer attempts than seen before.
async fn check(daemon: &Daemon, model: &Arc<Mutex<Model>>, seed: u64, round: u32) {
    let (accepted, done) = {
        let model = model.lock().unwrap();
        (model.accepted.clone(), model.done.clone())
    };
    let tasks = daemon.tasks().await;
    let infos: Vec<(&String, Result<v1::TaskInfo, tonic::Status>)> = within(
        "every accepted task",
        stream::iter(&accepted)
            .map(|id| {
                let mut tasks = tasks.clone();
                async move {
                    let info = tasks
                        .get(v1::GetRequest {
                            task_id: id.clone(),
                        })
                        .await;
                    (id, info.map(tonic::Response::into_inner))
                }
            })
            .buffered(32)
            .collect(),
    )
    .await;
    for (id, info) in infos {
        let info = match info {
            Ok(info) => info,
            Err(status) => panic!(
                "seed {seed}, after crash {round}: accepted task {id} is missing: {status:?}\n{}",
                daemon.log()
            ),
        };
        assert!(
            matches!(
                info.state(),
                TaskState::Pending
                    | TaskState::Delivered
                    | TaskState::Done
                    | TaskState::DeadLettered
            ),
            "seed {seed}, round {round}: task {id} is {:?}",
            info.state()
        );
        if let Some(ret) = done.get(id) {
            assert_eq!(
                (info.state(), &info.ret),
                (TaskState::Done, ret),
                "seed {seed}, round {round}: task {id} lost the result Wait returned"
            );
        }
        let mut model = model.lock().unwrap();
        let seen = model.attempts.entry(id.clone()).or_default();
        assert!(
            info.attempts >= *seen,
            "seed {seed}, round {round}: task {id} went from {} attempts to {}",
            seen,
            info.attempts
        );
        *seen = info.attempts;
    }
}
