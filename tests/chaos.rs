//! A randomized run with a fixed seed: workers that ack, fail, ask to retry,
//! fail for good, stall past their lease, or crash and reconnect, at random.
//! At the end every task is done or dead-lettered exactly as its policy says,
//! none is lost, and a task ran more than once only where a worker failed it,
//! asked to retry it, stalled past its lease, or crashed holding it.
//!
//! The seed is printed and can be replayed with `CONTACT_CHAOS_SEED=<n>`.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{TestServer, TestWorker, WorkerOptions, test_config, within};
use contact_server::proto::{
    self, Kind, Outcome,
    client_msg::Op,
    v1::{self, TaskState},
};
use tokio_util::sync::CancellationToken;

const DEFAULT_SEED: u64 = 0x5eed_2026;
const TASKS: usize = 120;
const WORKERS: u64 = 5;
const MAX_ATTEMPTS: u32 = 4;
const LEASE_MS: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Done,
    Failed,
    Retry,
    FailedPermanently,
    /// Never answered: the lease must run out.
    Stall,
    /// Dropped the connection while holding the task.
    Crash,
    /// Answered, but the server refused the answer (its lease had run out).
    Refused,
}

fn pick(rng: &mut fastrand::Rng) -> Action {
    match rng.u32(0..100) {
        0..55 => Action::Done,
        55..65 => Action::Failed,
        65..72 => Action::Retry,
        72..77 => Action::FailedPermanently,
        77..89 => Action::Stall,
        _ => Action::Crash,
    }
}

type Journal = Arc<Mutex<HashMap<String, Vec<(u32, Action)>>>>;

/// One worker slot: connects, takes tasks one at a time (credit 1, so every
/// delivery is read), does what the dice say, reconnects after a crash.
async fn run_worker(
    server: &TestServer,
    index: u64,
    seed: u64,
    journal: Journal,
    stop: CancellationToken,
) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(index));
    let id = format!("chaos-{index}");
    'sessions: while !stop.is_cancelled() {
        // After a crash the old session may not be seen as gone yet.
        let mut worker = loop {
            let options = WorkerOptions::id(&id).max_in_flight(1);
            match TestWorker::try_connect(server, options).await {
                Ok(worker) => break worker,
                Err(status) if status.code() == tonic::Code::AlreadyExists => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(status) if stop.is_cancelled() => {
                    let _ = status;
                    return;
                }
                Err(status) => panic!("seed {seed}: connect failed: {status:?}"),
            }
        };
        let mut control = worker.control().await;
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = worker.stream.message() => message,
            };
            let Ok(Some(task)) = message else {
                continue 'sessions;
            };
            if task.kind() != Kind::Task {
                continue;
            }
            let mut action = pick(&mut rng);
            let outcome = match action {
                Action::Done => Some(Outcome::Done),
                Action::Failed => Some(Outcome::Failed),
                Action::Retry => Some(Outcome::Retry),
                Action::FailedPermanently => Some(Outcome::FailedPermanently),
                _ => None,
            };
            if let Some(outcome) = outcome {
                let reply = control
                    .op(Op::Ack(proto::Result {
                        task_id: task.task_id.clone(),
                        attempt: task.attempt,
                        outcome: outcome.into(),
                        retry_after_ms: if outcome == Outcome::Retry { 10 } else { 0 },
                        error: format!("{action:?}"),
                        ..Default::default()
                    }))
                    .await;
                if reply.code != 0 {
                    action = Action::Refused;
                }
            }
            journal
                .lock()
                .unwrap()
                .entry(task.task_id.clone())
                .or_default()
                .push((task.attempt, action));
            if action == Action::Crash {
                drop(control);
                drop(worker);
                continue 'sessions;
            }
        }
    }
}

/// Every task ends as its policy says, none is lost, and every extra
/// delivery is explained by what a worker did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_misbehaviour_loses_nothing() {
    let seed = std::env::var("CONTACT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("chaos seed: {seed} (replay with CONTACT_CHAOS_SEED={seed})");
    let mut config = test_config();
    config.tasks.max_attempts = MAX_ATTEMPTS;
    config.tasks.retry_initial_delay_ms = 5;
    config.tasks.retry_max_delay_ms = 20;
    let server = Arc::new(TestServer::with_config(config).await);
    let journal: Journal = Arc::default();
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for index in 0..WORKERS {
        let (server, journal, stop) = (server.clone(), journal.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            run_worker(&server, index, seed, journal, stop).await;
        }));
    }

    let mut ids = Vec::new();
    for i in 0..TASKS {
        let request = v1::SubmitRequest {
            text: format!("chaos {i}"),
            lease_ms: LEASE_MS,
            ..Default::default()
        };
        let reply = within("submit", server.tasks().await.submit(request))
            .await
            .unwrap();
        ids.push(reply.into_inner().task_id);
    }
    let mut tasks = server.tasks().await;
    let mut finished = Vec::new();
    for id in &ids {
        let request = v1::WaitRequest {
            task_id: id.clone(),
            timeout_ms: 60_000,
        };
        let Ok(waited) = tokio::time::timeout(Duration::from_secs(30), tasks.wait(request)).await
        else {
            let info = server.get(id).await;
            let runs = journal.lock().unwrap().get(id).cloned();
            let workers = server
                .admin()
                .await
                .list_workers(v1::ListWorkersRequest {})
                .await
                .unwrap()
                .into_inner()
                .workers;
            panic!(
                "seed {seed}: task {id} never finished: {info:?}\nruns: {runs:?}\nworkers: {workers:?}"
            );
        };
        let info = waited
            .unwrap_or_else(|status| panic!("seed {seed}: task {id}: {status:?}"))
            .into_inner();
        finished.push(info);
    }
    stop.cancel();
    for worker in workers {
        within("worker to stop", worker).await.unwrap();
    }

    let journal = journal.lock().unwrap().clone();
    let mut dead = 0;
    for info in &finished {
        let id = &info.task_id;
        let mut runs = journal.get(id).cloned().unwrap_or_default();
        runs.sort_by_key(|(attempt, _)| *attempt);
        let attempts: Vec<u32> = runs.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            attempts,
            (1..=info.attempts).collect::<Vec<_>>(),
            "seed {seed}: task {id}: every delivery was seen once: {runs:?}"
        );
        let (last_attempt, last) = *runs.last().unwrap();
        for (attempt, action) in &runs[..runs.len() - 1] {
            assert!(
                !matches!(action, Action::Done | Action::FailedPermanently),
                "seed {seed}: task {id} ran again after attempt {attempt} ended it: {runs:?}"
            );
        }
        match info.state() {
            TaskState::Done => assert_eq!(last, Action::Done, "seed {seed}: task {id}: {runs:?}"),
            TaskState::DeadLettered => {
                dead += 1;
                let expected = if last == Action::FailedPermanently {
                    "failed_permanently"
                } else {
                    assert_eq!(
                        last_attempt, MAX_ATTEMPTS,
                        "seed {seed}: task {id}: {runs:?}"
                    );
                    "max_attempts"
                };
                assert_eq!(
                    info.dead_letter_reason, expected,
                    "seed {seed}: task {id}: {runs:?}"
                );
            }
            other => panic!("seed {seed}: task {id} ended {other:?}"),
        }
    }
    eprintln!("chaos: {} tasks, {dead} dead-lettered", finished.len());
    match Arc::try_unwrap(server) {
        Ok(server) => server.stop().await,
        Err(_) => panic!("the server is still shared"),
    }
}
