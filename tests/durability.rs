//! Durable by default: what a submit answered OK survives a restart, a
//! graceful stop with work queued and `kill -9` of the real binary (the
//! randomized crash test is `tests/crash.rs`); a worker resumes across a
//! restart; a damaged journal refuses to start, naming the file and
//! offset; one server per directory; a full disk refuses and recovers; a
//! journal that cannot be written stops the daemon (the writer's own
//! fault-injection tests, failed syncs among them, are in
//! `src/journal/writer.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TempDir, TestServer, TestWorker, WorkerOptions, daemon::Daemon, test_config, within};
use contact_server::{
    client::WorkerBuilder,
    proto::{
        Outcome,
        v1::{self, TaskState},
    },
};
use tonic::Code;

fn config_on(dir: &TempDir) -> contact_server::Config {
    let mut config = test_config();
    config.storage.dir = dir.0.clone();
    config
}

/// Every kind of state a task can be in comes back after a graceful stop
/// and a start on the same journal: queued, delayed, done with its result,
/// dead-lettered with its reason, handed back by a worker that held it,
/// and an idempotency key within its window.
#[tokio::test]
async fn a_restart_keeps_every_state() {
    let dir = TempDir::new("restart");
    let server = TestServer::with_config(config_on(&dir)).await;
    let mut tasks = server.tasks().await;
    let queued = server.submit("later", "waits for a worker").await;
    let in_an_hour = contact_server::clock::unix_ms_now() + 3_600_000;
    let delayed = within(
        "a delayed submit",
        tasks.submit(v1::SubmitRequest {
            queue: "later".into(),
            not_before_unix_ms: in_an_hour,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .task_id;
    let keyed = v1::SubmitRequest {
        queue: "later".into(),
        text: "once".into(),
        idempotency_key: "order-1".into(),
        ..Default::default()
    };
    let keyed_id = within("keyed submit", tasks.submit(keyed.clone()))
        .await
        .unwrap()
        .into_inner()
        .task_id;

    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").queues("work")).await;
    let done = server.submit("work", "finish me").await;
    assert_eq!(worker.next_task().await.task_id, done);
    worker.ack(&done, Outcome::Done, "the result").await;
    server.wait_finished(&done).await;
    let dead = server.submit("work", "fail me").await;
    assert_eq!(worker.next_task().await.task_id, dead);
    worker.ack(&dead, Outcome::FailedPermanently, "no").await;
    server.wait_finished(&dead).await;
    let held = server.submit("work", "held at the stop").await;
    assert_eq!(worker.next_task().await.task_id, held);
    // The worker never finishes it: the drain times out and hands it back.
    server.stop().await;
    drop(worker);

    let server = TestServer::with_config(config_on(&dir)).await;
    assert_eq!(server.get(&queued).await.state(), TaskState::Pending);
    let info = server.get(&delayed).await;
    assert_eq!(
        (info.state(), info.not_before_unix_ms),
        (TaskState::Pending, in_an_hour)
    );
    let info = server.get(&done).await;
    assert_eq!(
        (info.state(), info.ret.as_str()),
        (TaskState::Done, "the result")
    );
    let info = server.get(&dead).await;
    assert_eq!(
        (info.state(), info.dead_letter_reason.as_str()),
        (TaskState::DeadLettered, "failed_permanently")
    );
    let listed = within(
        "dead letters",
        server
            .tasks()
            .await
            .list_dead_letters(v1::ListDeadLettersRequest::default()),
    )
    .await
    .unwrap()
    .into_inner()
    .tasks;
    assert_eq!(listed.len(), 1);
    let info = server.get(&held).await;
    assert_eq!((info.state(), info.attempts), (TaskState::Pending, 1));
    let mut tasks = server.tasks().await;
    let again = within("keyed submit again", tasks.submit(keyed))
        .await
        .unwrap()
        .into_inner()
        .task_id;
    assert_eq!(again, keyed_id, "the key is remembered across the restart");

    // The queue serves them as before: the handed-back task first, as attempt 2.
    let mut worker =
        TestWorker::connect(&server, WorkerOptions::id("w2").queues("work,later")).await;
    let first = worker.next_task().await;
    assert_eq!((first.task_id.as_str(), first.attempt), (held.as_str(), 2));
    worker.ack(&held, Outcome::Done, "after the restart").await;
    assert_eq!(server.wait_finished(&held).await.ret, "after the restart");
    server.stop().await;
}

/// A graceful SIGTERM of the daemon with tasks still queued keeps them for
/// the next start (it used to drop them and exit 0).
#[tokio::test]
async fn sigterm_keeps_the_queue() {
    let dir = TempDir::new("sigterm");
    let daemon = Daemon::start(&dir.0, &[]).await;
    let mut tasks = daemon.tasks().await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let reply = within(
            "submit",
            tasks.submit(v1::SubmitRequest {
                text: format!("task {i}"),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        ids.push(reply.into_inner().task_id);
    }
    assert_eq!(daemon.terminate().await, Some(0));
    let daemon = Daemon::start(&dir.0, &[]).await;
    assert_all_pending(&daemon, &ids).await;
    assert_eq!(daemon.terminate().await, Some(0));
}

/// Every task of `ids` is on the daemon, waiting in line.
async fn assert_all_pending(daemon: &Daemon, ids: &[String]) {
    let mut tasks = daemon.tasks().await;
    for id in ids {
        let request = v1::GetRequest {
            task_id: id.clone(),
        };
        let info = within("get", tasks.get(request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.state(), TaskState::Pending, "{id}");
    }
}

/// A damaged segment (a flipped bit before its end) stops the daemon at
/// start with exit code 65 and a message naming the file and the offset,
/// and how to move it aside; moved aside, the daemon starts.
#[tokio::test]
async fn a_damaged_journal_refuses_to_start_and_says_where() {
    let dir = TempDir::new("damaged");
    let daemon = Daemon::start(&dir.0, &[]).await;
    let mut tasks = daemon.tasks().await;
    for i in 0..20 {
        within(
            "submit",
            tasks.submit(v1::SubmitRequest {
                text: format!("task number {i}"),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    }
    assert_eq!(daemon.terminate().await, Some(0));
    let segment = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let (code, log) = Daemon::refused(&dir.0).await;
    assert_eq!(code, Some(65), "{log}");
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        log.contains(name) && log.contains("damaged at byte"),
        "{log}"
    );
    assert!(log.contains("mv "), "{log}");

    let aside = segment.with_extension("journal.damaged");
    std::fs::rename(&segment, &aside).unwrap();
    let daemon = Daemon::start(&dir.0, &[]).await;
    assert_eq!(daemon.terminate().await, Some(0));
}

/// One server per journal directory: a second one on the same directory
/// is refused, with a message saying why.
#[tokio::test]
async fn one_server_per_directory() {
    let dir = TempDir::new("locked");
    let first = Daemon::start(&dir.0, &[]).await;
    let (code, log) = Daemon::refused(&dir.0).await;
    assert_eq!(code, Some(65), "{log}");
    assert!(log.contains("in use by another contact-server"), "{log}");
    assert_eq!(first.terminate().await, Some(0));
}

/// ★ A restart does not have to mean redelivery: a worker (the Rust client,
/// which redials by itself) that was holding a task when the server was
/// killed resumes its session once the server is back on its port, keeps
/// the task at the same attempt, and its result lands: no second execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resumes_across_a_restart_and_keeps_its_task() {
    let dir = TempDir::new("resume");
    keeps_its_task_across_a_crash(&dir.0, &[], async |_| {}).await;
}

/// ★ The same after compaction has carried the delivered task's record
/// forward (its first segment deleted while the worker held it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_its_task_across_a_restart_after_compaction() {
    let dir = TempDir::new("resume-compacted");
    let data = dir.0.join("journal");
    let config = dir.0.join("small.toml");
    std::fs::write(
        &config,
        "[storage]\nsegment_bytes = 1048576\n[tasks]\nmax_finished_tasks = 100\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let first_segment = data.join("00000000000000000001.journal");
    keeps_its_task_across_a_crash(&data, &["--config", &config], async |daemon| {
        assert!(first_segment.exists());
        churn(&daemon.url(), 20_000).await;
        common::eventually("the held task's first segment to be compacted away", || {
            std::future::ready((!first_segment.exists()).then_some(()))
        })
        .await;
    })
    .await;
}

/// A worker takes a task; `meanwhile` runs; the daemon is killed and
/// started again on its port; the worker's ack of the task it held lands,
/// at attempt 1.
async fn keeps_its_task_across_a_crash(
    data: &std::path::Path,
    extra: &[&str],
    meanwhile: impl AsyncFnOnce(&Daemon),
) {
    let daemon = Daemon::start(data, extra).await;

    let addr = daemon.grpc_addr.clone();
    let mut worker = within(
        "the worker to connect",
        WorkerBuilder::new(addr.clone())
            .client_id("steady")
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .connect(),
    )
    .await
    .unwrap();
    let mut tasks = daemon.tasks().await;
    let id = within(
        "submit",
        tasks.submit(v1::SubmitRequest {
            text: "run me once".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .task_id;
    let task = within("the task", worker.next_task()).await.unwrap();
    assert_eq!((task.id.as_str(), task.attempt), (id.as_str(), 1));

    meanwhile(&daemon).await;
    daemon.kill9().await;
    let daemon = Daemon::start_at(data, &addr, extra).await;
    // The worker finishes the task it held through the crash: its ack is
    // applied once it has resumed, which only works if it kept the task.
    within("the ack after the restart", task.done("ran once"))
        .await
        .unwrap();
    let mut tasks = daemon.tasks().await;
    let info = within(
        "wait",
        tasks.wait(v1::WaitRequest {
            task_id: id.clone(),
            timeout_ms: 5_000,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        (info.state(), info.attempts, info.ret.as_str()),
        (TaskState::Done, 1, "ran once"),
        "{}",
        daemon.log()
    );
    drop(worker);
    assert_eq!(daemon.terminate().await, Some(0));
}

/// A worker that does not come back within the resume grace after a
/// restart has its tasks redelivered, with the attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_worker_that_does_not_resume_are_redelivered_after_the_grace() {
    let dir = TempDir::new("grace");
    let config = dir.0.join("grace.toml");
    std::fs::write(&config, "[workers]\nresume_grace_secs = 1\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let daemon = Daemon::start(&dir.0, &["--config", &config]).await;
    let mut worker = within(
        "a worker",
        WorkerBuilder::new(daemon.grpc_addr.clone())
            .client_id("gone")
            .connect(),
    )
    .await
    .unwrap();
    let mut tasks = daemon.tasks().await;
    let id = within("submit", tasks.submit(v1::SubmitRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .task_id;
    let _held = within("the task", worker.next_task()).await.unwrap();
    daemon.kill9().await;
    drop(worker);
    let daemon = Daemon::start(&dir.0, &["--config", &config]).await;
    let mut other = within(
        "another worker",
        WorkerBuilder::new(daemon.grpc_addr.clone())
            .client_id("other")
            .connect(),
    )
    .await
    .unwrap();
    let again = within("the redelivery", other.next_task()).await.unwrap();
    assert_eq!((again.id.as_str(), again.attempt), (id.as_str(), 2));
    within("the ack", again.done("second run")).await.unwrap();
    drop(other);
    assert_eq!(daemon.terminate().await, Some(0));
}

/// A tmpfs of `size` mounted for one test (the test runs as root, as CI
/// does), unmounted when dropped.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = TempDir::new("small-disk");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs failed: the full-disk test needs root, as CI has"
        );
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.dir.0)
            .status();
    }
}

/// A full disk refuses new work with RESOURCE_EXHAUSTED and loses nothing
/// it answered OK; when space returns, work is taken again, and after a
/// crash every task answered OK is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_work_and_recovers() {
    let disk = SmallDisk::mount("3m");
    let data = disk.dir.0.join("journal");
    std::fs::create_dir_all(&data).unwrap();
    let config = disk.dir.0.join("small.toml");
    std::fs::write(&config, "[storage]\nsegment_bytes = 1048576\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let daemon = Daemon::start(&data, &["--config", &config]).await;
    // Leave the journal a little room.
    let filler = disk.dir.0.join("filler");
    std::fs::write(&filler, vec![0u8; 2_400_000]).unwrap();

    let mut tasks = daemon.tasks().await;
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let request = v1::SubmitRequest {
            text: format!("task {i}"),
            payload: vec![7u8; 8192].into(),
            ..Default::default()
        };
        // A submit whose record waits for space has no answer yet: give up
        // on it (it is not answered OK) and look at the next one.
        match tokio::time::timeout(Duration::from_millis(500), tasks.submit(request)).await {
            Ok(Ok(reply)) => accepted.push(reply.into_inner().task_id),
            Ok(Err(status)) => {
                refused = Some(status);
                break;
            }
            Err(_) => tasks = daemon.tasks().await,
        }
    }
    let refused = refused.unwrap_or_else(|| {
        panic!(
            "the disk never filled: {} accepted\n{}",
            accepted.len(),
            daemon.log()
        )
    });
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("disk is full"), "{refused:?}");
    assert!(!accepted.is_empty());

    // Space returns: new work is taken again.
    std::fs::remove_file(&filler).unwrap();
    let taken = common::eventually("submits to be taken again", || {
        let mut tasks = tasks.clone();
        async move {
            tasks
                .submit(v1::SubmitRequest::default())
                .await
                .ok()
                .map(|reply| reply.into_inner().task_id)
        }
    })
    .await;
    accepted.push(taken);

    daemon.kill9().await;
    let daemon = Daemon::start(&data, &["--config", &config]).await;
    assert_all_pending(&daemon, &accepted).await;
    assert_eq!(daemon.terminate().await, Some(0));
}

/// A journal that can no longer be written (here: its directory moved away
/// under the daemon, so the next segment cannot be created) stops the
/// daemon with a non-zero exit for its supervisor to restart it, after
/// answering nothing more as recorded; put back, the journal holds every
/// task that was answered OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_cannot_be_written_stops_the_daemon() {
    let dir = TempDir::new("unwritable");
    let data = dir.0.join("journal");
    let moved = dir.0.join("moved");
    let config = dir.0.join("small.toml");
    std::fs::write(&config, "[storage]\nsegment_bytes = 1048576\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let daemon = Daemon::start(&data, &["--config", &config]).await;
    let mut tasks = daemon.tasks().await;
    let mut accepted = Vec::new();
    let submit = async |tasks: &mut v1::tasks_client::TasksClient<_>| {
        let request = v1::SubmitRequest {
            payload: vec![7u8; 64 * 1024].into(),
            ..Default::default()
        };
        within("submit", tasks.submit(request))
            .await
            .map(|reply| reply.into_inner().task_id)
    };
    for _ in 0..4 {
        accepted.push(submit(&mut tasks).await.unwrap());
    }
    std::fs::rename(&data, &moved).unwrap();
    // 64 KiB each: the segment fills and the next one cannot be made.
    let mut failed = None;
    for _ in 0..64 {
        match submit(&mut tasks).await {
            Ok(id) => accepted.push(id),
            Err(status) => {
                failed = Some(status);
                break;
            }
        }
    }
    let failed = failed.expect("a submit failed once the journal could not be written");
    assert_ne!(failed.code(), Code::Ok);
    common::eventually("the writer's error in the log", || {
        std::future::ready(
            daemon
                .log()
                .contains("creating segment 2 failed")
                .then_some(()),
        )
    })
    .await;
    assert_eq!(daemon.exit_code().await, Some(1));

    std::fs::rename(&moved, &data).unwrap();
    let daemon = Daemon::start(&data, &["--config", &config]).await;
    assert_all_pending(&daemon, &accepted).await;
    assert_eq!(daemon.terminate().await, Some(0));
}

/// Pushes `total` tasks of 200 bytes through queue `work` and a worker of
/// its own: several megabytes of records, for compaction to act on.
async fn churn(url: &str, total: u64) {
    let url = url.to_owned();
    let consumer = tokio::spawn({
        let url = url.clone();
        async move {
            let mut worker = WorkerBuilder::new(url)
                .client_id("busy")
                .queues(["work"])
                .max_in_flight(256)
                .connect()
                .await
                .unwrap();
            for _ in 0..total {
                let task = worker.next_task().await.unwrap();
                task.done("").await.unwrap();
            }
        }
    });
    let mut tasks = within("connect", v1::tasks_client::TasksClient::connect(url))
        .await
        .unwrap();
    let batch: Vec<v1::SubmitRequest> = (0..total)
        .map(|_| v1::SubmitRequest {
            queue: "work".into(),
            payload: vec![1u8; 200].into(),
            ..Default::default()
        })
        .collect();
    let mut replies = within("submit", tasks.submit_stream(tokio_stream::iter(batch)))
        .await
        .unwrap()
        .into_inner();
    while let Some(reply) = within("replies", replies.message()).await.unwrap() {
        assert!(reply.error.is_none());
    }
    tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the busy worker finished")
        .unwrap();
}

/// A dead letter requeued starts a new life, and keeps it across a restart:
/// an expired task, requeued, is not expired again by the replay of its
/// old TTL.
#[tokio::test]
async fn a_requeued_expired_task_stays_requeued_after_a_restart() {
    let dir = TempDir::new("requeued");
    let server = TestServer::with_config(config_on(&dir)).await;
    let mut tasks = server.tasks().await;
    let id = within(
        "submit with a short ttl",
        tasks.submit(v1::SubmitRequest {
            queue: "nobody".into(),
            ttl_ms: 50,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .task_id;
    let info = server.wait_finished(&id).await;
    assert_eq!(info.dead_letter_reason, "expired");
    let requeued = within(
        "requeue",
        tasks.requeue(v1::RequeueRequest {
            task_id: id.clone(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(requeued.state(), TaskState::Pending);
    server.stop().await;

    let server = TestServer::with_config(config_on(&dir)).await;
    let info = server.get(&id).await;
    assert_eq!(
        (info.state(), info.attempts),
        (TaskState::Pending, 0),
        "{info:?}"
    );
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("late").queues("nobody")).await;
    assert_eq!(worker.next_task().await.task_id, id);
    server.stop().await;
}

/// Compaction keeps what is live: with small segments and many tasks come
/// and gone, the journal stays near its live data, and after a restart a
/// dead letter from the start (with its error), a task still queued and a
/// worker id known from the start are all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_what_is_live_across_a_restart() {
    let dir = TempDir::new("compaction");
    let mut config = config_on(&dir);
    config.storage.segment_bytes = 1024 * 1024;
    config.tasks.max_finished_tasks = 100;
    let server = TestServer::with_config(config.clone()).await;
    // A worker id known from the start; it leaves.
    drop(TestWorker::connect(&server, WorkerOptions::id("known").queues("none")).await);
    common::until_disconnected(&server, "known").await;
    let queued = server.submit("idle", "waits through it all").await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").queues("doomed")).await;
    let dead = server.submit("doomed", "fails at once").await;
    assert_eq!(worker.next_task().await.task_id, dead);
    worker.ack(&dead, Outcome::FailedPermanently, "kept").await;
    server.wait_finished(&dead).await;
    drop(worker);

    // Many tasks come and go: well past several segments of records.
    churn(&server.url(), 20_000).await;
    server.stop().await;
    let on_disk: u64 = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // About 6 MB went through the journal; what is left is a few segments.
    assert!(on_disk < 4 * 1024 * 1024, "{on_disk} bytes left on disk");

    let server = TestServer::with_config(config).await;
    let info = server.get(&dead).await;
    assert_eq!(
        (info.state(), info.error.as_str()),
        (TaskState::DeadLettered, "kept failed")
    );
    assert_eq!(server.get(&queued).await.state(), TaskState::Pending);
    let targeted = within(
        "submit to the known worker",
        server.tasks().await.submit(v1::SubmitRequest {
            target_client_id: "known".into(),
            ..Default::default()
        }),
    )
    .await;
    assert!(targeted.is_ok(), "{targeted:?}");
    server.stop().await;
}
