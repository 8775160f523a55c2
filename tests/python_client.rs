//! The `contact-client` Python package (clients/python) against the real
//! server: its committed stubs are what its generator makes; a producer's
//! calls round-trip; a worker runs tasks through a handler, retries and
//! dead-letters by the handler's exceptions, and drains on `stop()`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{TestServer, python, test_config, within};
use contact_server::proto::v1::TaskState;

/// Runs `script` with the virtualenv's Python (the package installed),
/// with `CONTACT_SERVER` set; its stdout, or a panic with its output.
async fn run_python(server: &TestServer, script: &str) -> String {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let output = within(
        "the Python script",
        tokio::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .env("CONTACT_SERVER", server.url())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let text = python::text(&output);
    assert!(output.status.success(), "the script failed:\n{text}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The committed stubs are what gen_stubs.py makes from the protos.
#[tokio::test]
async fn the_packages_stubs_match_the_protos() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("package-stubs-check");
    let _ = std::fs::remove_dir_all(&scratch);
    let output = std::process::Command::new(&python)
        .arg(python::package().join("gen_stubs.py"))
        .arg(&scratch)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", python::text(&output));
    let committed = python::package().join("src/contact_client/_proto");
    let fresh = scratch.join("contact_client/_proto");
    for entry in walk(&fresh) {
        let relative = entry.strip_prefix(&fresh).unwrap();
        let want = std::fs::read(&entry).unwrap();
        let have = std::fs::read(committed.join(relative))
            .unwrap_or_else(|_| panic!("{} is not committed", relative.display()));
        assert!(
            want == have,
            "{} differs from what gen_stubs.py makes: run `python clients/python/gen_stubs.py`",
            relative.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                files.extend(walk(&path));
            }
        } else {
            files.push(path);
        }
    }
    files
}

/// Every Producer call round-trips: submit (with options), submit_many,
/// get, wait (and its timeout), cancel, and a refusal as ContactError.
#[tokio::test]
async fn the_producer_round_trips() {
    let server = TestServer::start().await;
    let out = run_python(
        &server,
        r#"
import os, grpc
from contact_client import Producer, ContactError
p = Producer(os.environ["CONTACT_SERVER"])
one = p.submit("hello", queue="py", priority=3, payload=b"\x00\x01", idempotency_key="k1")
assert p.submit("hello", queue="py", priority=3, payload=b"\x00\x01", idempotency_key="k1") == one
info = p.get(one)
assert (info.state, info.queue, info.attempts) == ("pending", "py", 0), info
ids = p.submit_many(["a", {"text": "b", "priority": 1}, {"text": "c", "delay": 60}], queue="py")
assert len(ids) == 3 and all(isinstance(i, str) for i in ids), ids
try:
    p.wait(ids[2], timeout=0.2)
    raise SystemExit("wait did not time out")
except ContactError as e:
    assert e.code == grpc.StatusCode.DEADLINE_EXCEEDED, e
cancelled = p.cancel(ids[2])
assert cancelled.state == "cancelled", cancelled
try:
    p.get("not-a-task-id")
    raise SystemExit("a bad id was accepted")
except ContactError as e:
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
bad = p.submit_many([{"text": "x", "target": "nobody-ever"}])
assert isinstance(bad[0], ContactError) and bad[0].code == grpc.StatusCode.NOT_FOUND, bad
print(one)
"#,
    )
    .await;
    let id = out.trim();
    assert_eq!(server.get(id).await.state(), TaskState::Pending);
    server.stop().await;
}

/// A package worker runs tasks through its handler: a returned value is
/// the result; Retry retries; PermanentFailure, and any exception on the
/// last attempt, dead-letter with the error; `stop()` drains and `run`
/// returns; the producer's wait sees each outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_handlers_and_drains() {
    let mut config = test_config();
    config.tasks.max_attempts = 2;
    config.tasks.retry_initial_delay_ms = 10;
    let server = TestServer::with_config(config).await;
    let out = run_python(
        &server,
        r#"
import os, threading
from contact_client import Producer, Worker, Retry, PermanentFailure
address = os.environ["CONTACT_SERVER"]
seen = {}
def handler(task):
    seen.setdefault(task.text, []).append(task.attempt)
    if task.text == "retry once" and task.attempt == 1:
        raise Retry(after=0.01)
    if task.text == "never":
        raise PermanentFailure("cannot be done")
    if task.text == "crash":
        raise ValueError("boom")
    return task.text.upper()
worker = Worker(address, client_id="py-pkg", queues=["jobs"], credit=4)
thread = threading.Thread(target=worker.run, args=(handler,), daemon=True)
thread.start()
p = Producer(address)
ids = {t: p.submit(t, queue="jobs") for t in ["hello", "retry once", "never", "crash"]}
infos = {t: p.wait(i, timeout=20) for t, i in ids.items()}
assert (infos["hello"].state, infos["hello"].ret, infos["hello"].worker) == ("done", "HELLO", "py-pkg"), infos["hello"]
assert (infos["retry once"].state, infos["retry once"].attempts) == ("done", 2), infos["retry once"]
assert infos["never"].state == "dead_lettered" and "cannot be done" in infos["never"].error, infos["never"]
assert infos["crash"].state == "dead_lettered" and infos["crash"].attempts == 2, infos["crash"]
assert "ValueError: boom" in infos["crash"].error, infos["crash"]
dead = {d.id for d in p.dead_letters(queue="jobs")}
assert {ids["never"], ids["crash"]} <= dead, dead
copies = p.broadcast("to everyone", queue="jobs")
assert list(copies) == ["py-pkg"], copies
assert p.wait(copies["py-pkg"], timeout=20).ret == "TO EVERYONE"
worker.set_credit(0)
requeued = p.requeue(ids["never"])
assert (requeued.state, requeued.attempts) == ("pending", 0), requeued
worker.stop()
thread.join(timeout=20)
assert not thread.is_alive(), "run did not return after stop()"
print("ok")
"#,
    )
    .await;
    assert_eq!(out.trim(), "ok");
    // The server saw the worker leave.
    common::until_disconnected(&server, "py-pkg").await;
    server.stop().await;
}

/// The package's own unit tests pass under pytest, and mypy --strict finds
/// its types sound (py.typed promises them).
#[tokio::test]
async fn the_package_passes_pytest_and_mypy() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    for (what, args) in [
        (
            "pytest",
            vec!["-m", "pytest", "-q", "-p", "no:cacheprovider"],
        ),
        ("mypy", vec!["-m", "mypy", "--no-incremental"]),
    ] {
        let output = within(
            what,
            tokio::process::Command::new(&python)
                .args(&args)
                .current_dir(python::package())
                .output(),
        )
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "{what} failed:\n{}",
            python::text(&output)
        );
    }
}

/// Starts `script` with the virtualenv's Python in the background (its
/// output in the test's log folder).
async fn spawn_python(name: &str, script: &str, server_url: &str) -> tokio::process::Child {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-client-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
    eprintln!(
        "{name}: output in {}",
        logs.join(format!("{name}.log")).display()
    );
    tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .env("CONTACT_SERVER", server_url)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A worker that runs its handler slowly, in the main thread so that
/// SIGTERM drains it.
const SLOW_WORKER: &str = r#"
import logging, os, time
from contact_client import Worker
logging.basicConfig(level=logging.INFO)
def handler(task):
    # Tells the test the task reached the handler (delivered is not yet received).
    if os.environ.get("STARTED_FILE"):
        with open(os.environ["STARTED_FILE"], "a") as started:
            started.write(task.text + "\n")
    time.sleep(float(os.environ.get("WORK_SECS", "1")))
    if os.environ.get("FINISHED_FILE"):
        open(os.environ["FINISHED_FILE"], "w").close()
    return "finished " + task.text
Worker(os.environ["CONTACT_SERVER"], client_id=os.environ["WORKER_ID"], credit=2,
       keepalive=float(os.environ.get("KEEPALIVE", "1"))).run(handler)
"#;

/// [`SLOW_WORKER`] with its settings (`WORKER_ID`, `WORK_SECS`, `KEEPALIVE`,
/// `STARTED_FILE`, `FINISHED_FILE`) set in its environment.
fn slow_worker(settings: &[(&str, &str)]) -> String {
    let mut script = String::from("import os\n");
    for (key, value) in settings {
        script.push_str(&format!("os.environ[{key:?}] = {value:?}\n"));
    }
    script + SLOW_WORKER
}

fn path(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// SIGTERM drains a package worker run from the main thread: the task it
/// holds is finished and acknowledged, then it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_worker() {
    let server = TestServer::start().await;
    let id = server.submit("default", "held at SIGTERM").await;
    let dir = common::TempDir::new("py-sigterm");
    let started = dir.0.join("started");
    let script = slow_worker(&[("WORKER_ID", "py-term"), ("STARTED_FILE", &path(&started))]);
    let mut child = spawn_python("sigterm", &script, &server.url()).await;
    common::eventually("the handler to start", || {
        std::future::ready(started.exists().then_some(()))
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = within("the worker to exit", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    let info = server.get(&id).await;
    assert_eq!(
        (info.state(), info.ret.as_str()),
        (TaskState::Done, "finished held at SIGTERM")
    );
    server.stop().await;
}

/// A slow package worker behind the cuttable proxy, on a server that keeps
/// a dropped worker's tasks for 30 s: `texts` are queued first, and once
/// `started` handlers have begun it is the test's to cut.
struct BehindProxy {
    server: TestServer,
    proxy: common::proxy::Proxy,
    ids: Vec<String>,
    /// The handler touches it when it returns.
    finished: PathBuf,
    _dir: common::TempDir,
    _child: tokio::process::Child,
}

impl BehindProxy {
    async fn start(name: &str, texts: &[&str], settings: &[(&str, &str)], started: usize) -> Self {
        let mut config = test_config();
        config.workers.resume_grace_secs = 30;
        let server = TestServer::with_config(config).await;
        let proxy = common::proxy::Proxy::start(server.grpc_addr).await;
        let mut ids = Vec::new();
        for text in texts {
            ids.push(server.submit("default", text).await);
        }
        let dir = common::TempDir::new(&format!("py-{name}"));
        let (started_file, finished) = (dir.0.join("started"), dir.0.join("finished"));
        let worker_id = format!("py-{name}");
        let (started_path, finished_path) = (path(&started_file), path(&finished));
        let mut all = vec![
            ("WORKER_ID", worker_id.as_str()),
            ("STARTED_FILE", started_path.as_str()),
            ("FINISHED_FILE", finished_path.as_str()),
        ];
        all.extend_from_slice(settings);
        let child = spawn_python(name, &slow_worker(&all), &proxy.url()).await;
        // The worker holds the tasks (their handlers run), not just the
        // server having sent them.
        common::eventually("the handlers to start", || {
            std::future::ready((started_count(&started_file) >= started).then_some(()))
        })
        .await;
        Self {
            server,
            proxy,
            ids,
            finished,
            _dir: dir,
            _child: child,
        }
    }

    /// Every task finished once, at attempt 1, as the handler returned it.
    async fn all_done_at_first_attempt(self, texts: &[&str]) {
        for (id, text) in self.ids.iter().zip(texts) {
            let info = self.server.wait_finished(id).await;
            assert_eq!(
                (info.state(), info.attempts, info.ret.as_str()),
                (TaskState::Done, 1, format!("finished {text}").as_str()),
                "{info:?}"
            );
        }
        self.server.stop().await;
    }
}

/// How many handlers have started, by the lines of a `STARTED_FILE`.
fn started_count(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// The connection drops while the package worker runs a task: it redials,
/// resumes its session with the task, and its result lands at attempt 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_resumes_after_a_cut_connection() {
    let texts = ["outlive the cut"];
    let run = BehindProxy::start("resume", &texts, &[("WORK_SECS", "2")], 1).await;
    run.proxy.cut();
    run.all_done_at_first_attempt(&texts).await;
}

/// An outage longer than the first redial: the worker's attempts fail
/// while its handler runs, and once the server is reachable again it
/// resumes with the task it held (failed attempts do not give it up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_resumes_after_an_outage() {
    let texts = ["outlive the outage"];
    let run = BehindProxy::start("outage", &texts, &[("WORK_SECS", "3")], 1).await;
    run.proxy.block();
    common::eventually("two failed redials", || {
        std::future::ready((run.proxy.refused() >= 2).then_some(()))
    })
    .await;
    run.proxy.unblock();
    run.all_done_at_first_attempt(&texts).await;
}

/// An ack sent as the connection goes, and lost with it, is sent again once
/// the worker is back: it claims the task on resume, so the task is not run
/// twice and its result lands at attempt 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_lost_with_the_connection_is_sent_again() {
    let texts = ["ack lost"];
    let run = BehindProxy::start("lost-ack", &texts, &[], 1).await;
    run.proxy.hold_upstream();
    common::eventually("the handler to finish", || {
        std::future::ready(run.finished.exists().then_some(()))
    })
    .await;
    common::eventually("the ack to be sent (and held)", || {
        std::future::ready((run.proxy.held_bytes() > 0).then_some(()))
    })
    .await;
    run.proxy.cut();
    run.all_done_at_first_attempt(&texts).await;
}

/// The connection drops while every handler thread of the worker is busy,
/// so none of them is reading getTask: the worker still notices, redials,
/// resumes with both tasks, and both results land at attempt 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_while_every_handler_is_busy_is_noticed() {
    let texts = ["busy one", "busy two"];
    let run = BehindProxy::start("all-busy", &texts, &[("WORK_SECS", "2")], 2).await;
    run.proxy.cut();
    run.all_done_at_first_attempt(&texts).await;
}

/// A handler that runs longer than the server's liveness timeout, on a
/// worker whose every thread is busy: the worker is still heard from (its
/// heartbeats do not wait for a free thread), so it is not expired and the
/// task finishes at attempt 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_is_still_heard() {
    let mut config = test_config();
    config.workers.liveness_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let ids = [
        server.submit("default", "long one").await,
        server.submit("default", "long two").await,
    ];
    let script = slow_worker(&[
        ("WORKER_ID", "py-long"),
        ("WORK_SECS", "3"),
        ("KEEPALIVE", "0.3"),
    ]);
    let _child = spawn_python("long", &script, &server.url()).await;
    for id in &ids {
        let info = server.wait_finished(id).await;
        assert_eq!(
            (info.state(), info.attempts, info.ret.as_str()),
            (TaskState::Done, 1, info.ret.as_str()),
            "{info:?}"
        );
        assert!(info.ret.starts_with("finished long"), "{info:?}");
    }
    server.stop().await;
}

/// 10,000 submits on one pipelined stream, each answered with its id.
#[tokio::test]
async fn ten_thousand_pipelined_submits() {
    let server = TestServer::start().await;
    let out = run_python(
        &server,
        r#"
import os
from contact_client import Producer
p = Producer(os.environ["CONTACT_SERVER"])
ids = p.submit_many((f"task {i}" for i in range(10000)), queue="bulk")
assert len(ids) == 10000 and len(set(ids)) == 10000, len(ids)
assert all(isinstance(i, str) for i in ids)
print(ids[-1])
"#,
    )
    .await;
    assert_eq!(server.get(out.trim()).await.queue, "bulk");
    server.stop().await;
}

/// The package over TLS with tokens: a producer and a worker with
/// `ca_file` and `token` against a server that requires both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_worker_speak_tls_with_tokens() {
    use contact_server::auth::Role;
    let dir = common::TempDir::new("py-package-tls");
    let ca = common::certs::Ca::new("test CA");
    let mut config = test_config();
    let ca_file = ca.serve_tls(&dir.0, &mut config);
    config.auth.principals = vec![
        common::principal("worker", "ct_pkg-worker", &[Role::Worker]),
        common::principal("producer", "ct_pkg-producer", &[Role::Producer]),
    ];
    let server = TestServer::with_config(config).await;
    let script = format!(
        r#"
import threading
from contact_client import Producer, Worker, ContactError
address = "https://{addr}"
ca = {ca:?}
worker = Worker(address, client_id="py-tls-pkg", token="ct_pkg-worker", ca_file=ca)
thread = threading.Thread(target=worker.run, args=(lambda t: "secure " + t.text,), daemon=True)
thread.start()
p = Producer(address, token="ct_pkg-producer", ca_file=ca)
info = p.wait(p.submit("hello"), timeout=20)
assert (info.state, info.ret) == ("done", "secure hello"), info
try:
    Producer(address, ca_file=ca).submit("no token")
    raise SystemExit("a submit without a token was accepted")
except ContactError as e:
    assert e.code.name == "UNAUTHENTICATED", e
worker.stop()
thread.join(timeout=20)
print("ok")
"#,
        addr = server.grpc_addr,
        ca = ca_file.display().to_string(),
    );
    assert_eq!(run_python(&server, &script).await.trim(), "ok");
    server.stop().await;
}

/// A handler that runs longer than its task's lease keeps the task: the
/// worker extends the lease in the background, so it is not redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_extended_while_the_handler_runs() {
    let server = TestServer::start().await;
    let out = run_python(
        &server,
        r#"
import os, threading, time
from contact_client import Producer, Worker
address = os.environ["CONTACT_SERVER"]
runs = []
def handler(task):
    runs.append(task.attempt)
    assert 0 < task.lease <= 1, task.lease
    time.sleep(2.5)
    return "outlived its lease"
worker = Worker(address, client_id="py-lease")
thread = threading.Thread(target=worker.run, args=(handler,), daemon=True)
thread.start()
p = Producer(address)
info = p.wait(p.submit("slow", lease=1), timeout=20)
assert (info.state, info.attempts, info.ret) == ("done", 1, "outlived its lease"), info
assert runs == [1], runs
worker.stop()
thread.join(timeout=20)
print("ok")
"#,
    )
    .await;
    assert_eq!(out.trim(), "ok");
    server.stop().await;
}

/// A task that waits for a free handler thread longer than its lease keeps
/// it too: the read-ahead thread takes it while every thread is busy, and
/// its lease is extended from then on. One thread, credit 2, two tasks of
/// 1.5 s with 1 s leases: each runs once, at attempt 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_a_thread_keeps_its_lease() {
    let server = TestServer::start().await;
    let out = run_python(
        &server,
        r#"
import os, threading, time
from contact_client import Producer, Worker
address = os.environ["CONTACT_SERVER"]
runs = []
def handler(task):
    runs.append((task.text, task.attempt))
    time.sleep(1.5)
    return "done " + task.text
worker = Worker(address, client_id="py-waiting", credit=2, threads=1)
thread = threading.Thread(target=worker.run, args=(handler,), daemon=True)
thread.start()
p = Producer(address)
ids = [p.submit(text, lease=1) for text in ("first", "second")]
infos = [p.wait(i, timeout=20) for i in ids]
assert [(i.state, i.attempts) for i in infos] == [("done", 1), ("done", 1)], infos
assert sorted(runs) == [("first", 1), ("second", 1)], runs
worker.stop()
thread.join(timeout=20)
print("ok")
"#,
    )
    .await;
    assert_eq!(out.trim(), "ok");
    server.stop().await;
}

/// The asyncio API: an async producer, and an async worker run with an
/// async handler (results, a retry, a dead letter) and then iterated
/// (`async for task in worker`), draining on `await stop()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asyncio_worker_and_producer() {
    let mut config = test_config();
    config.tasks.max_attempts = 2;
    config.tasks.retry_initial_delay_ms = 10;
    let server = TestServer::with_config(config).await;
    let out = run_python(
        &server,
        r#"
import asyncio, os
from contact_client import Retry, PermanentFailure
from contact_client.aio import Producer, Worker
address = os.environ["CONTACT_SERVER"]

async def handler(task):
    await asyncio.sleep(0.01)
    if task.text == "retry once" and task.attempt == 1:
        raise Retry(after=0.01)
    if task.text == "never":
        raise PermanentFailure("cannot be done")
    return task.text.upper()

async def main():
    producer = Producer(address)
    worker = Worker(address, client_id="py-aio", queues=["jobs"], credit=4)
    running = asyncio.ensure_future(worker.run(handler))
    ids = {t: await producer.submit(t, queue="jobs") for t in ["hello", "retry once", "never"]}
    infos = {t: await producer.wait(i, timeout=20) for t, i in ids.items()}
    assert (infos["hello"].state, infos["hello"].ret) == ("done", "HELLO"), infos["hello"]
    assert (infos["retry once"].state, infos["retry once"].attempts) == ("done", 2), infos
    assert infos["never"].state == "dead_lettered", infos["never"]
    await worker.stop()
    await asyncio.wait_for(running, 20)

    iterated = Worker(address, client_id="py-aio-iter", queues=["iter"])
    many = await producer.submit_many(["x", "y"], queue="iter")
    seen = []
    async for task in iterated:
        seen.append(task.text)
        await task.done(ret="got " + task.text)
        if len(seen) == 2:
            await iterated.stop()
    assert sorted(seen) == ["x", "y"], seen
    for i in many:
        assert (await producer.get(i)).ret.startswith("got "), i
    await producer.close()
    print("ok")

asyncio.run(main())
"#,
    )
    .await;
    assert_eq!(out.trim(), "ok");
    server.stop().await;
}

/// The package's benchmark script runs (small numbers; no speed asserted):
/// both workers drain their tasks and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_script_runs() {
    let server = TestServer::start().await;
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let output = within(
        "bench.py",
        tokio::process::Command::new(python)
            .arg(python::package().join("bench.py"))
            .args(["--server", &server.grpc_addr.to_string(), "--tasks", "200"])
            .args(["--rounds", "2"])
            .output(),
    )
    .await
    .unwrap();
    let text = python::text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("round 2: ratio, package to seed-style"),
        "{text}"
    );
    assert!(text.contains("median ratio over 2 rounds"), "{text}");
    server.stop().await;
}
