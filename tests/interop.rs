//! Workers in other processes and languages against a real contact-server:
//! the Python worker (grpcio, stubs from proto/), the seed tutorial's own
//! Python client (stubs from the seed's unchanged proto), and the Rust
//! worker_client example, each completing tasks submitted from Rust. The
//! Python environment is made once by tests/common/python.rs.
//!
//! Every child process is started here, killed on drop, and stopped by its
//! own PID.

#![allow(clippy::unwrap_used)]

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use common::{TestServer, daemon::Daemon, eventually, proxy::Proxy, python, test_config, within};
use contact_server::{
    client::{Producer, Submission},
    proto::v1::{self, TaskState, admin_client::AdminClient},
};
use tokio::process::{Child, Command};

async fn producer(server: &TestServer) -> Producer {
    within("producer", Producer::connect(&server.url()))
        .await
        .unwrap()
}

async fn submit(producer: &mut Producer, queue: &str, text: &str) -> String {
    within(
        "submit",
        producer.submit(Submission::to_queue(queue).text(text)),
    )
    .await
    .unwrap()
}

async fn finished(producer: &mut Producer, id: &str) -> v1::TaskInfo {
    within(
        "the task to finish",
        producer.wait(id, Duration::from_secs(30)),
    )
    .await
    .unwrap()
}

/// Starts a child whose output goes to `target/tmp/interop-logs/NAME.log`
/// (named in the test's own output, which is shown when it fails).
fn spawn(name: &str, command: &mut Command) -> Child {
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    eprintln!("{name}: output in {}", log.display());
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits (bounded, polling ListWorkers) until a worker is as `wanted`;
/// status reports have no event to wait on.
async fn worker_until(server: &TestServer, wanted: impl Fn(&v1::Worker) -> bool) -> v1::Worker {
    let admin = server.admin().await;
    eventually("a worker's report", || {
        let mut admin = admin.clone();
        let wanted = &wanted;
        async move {
            let workers = admin
                .list_workers(v1::ListWorkersRequest {})
                .await
                .unwrap()
                .into_inner()
                .workers;
            workers.into_iter().find(wanted)
        }
    })
    .await
}

/// Sends `signal` (e.g. "-TERM") to a child this test started.
fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("the child is still running");
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for a child to exit; its exit code.
async fn exit_code(child: &mut Child) -> Option<i32> {
    within("the process to exit", child.wait())
        .await
        .unwrap()
        .code()
}

/// The committed Python stubs are what gen_stubs.py makes from the protos.
#[tokio::test]
async fn python_stubs_match_the_protos() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stubs-check");
    let _ = std::fs::remove_dir_all(&scratch);
    let made = within(
        "gen_stubs.py",
        Command::new(&python)
            .arg(python::examples().join("gen_stubs.py"))
            .arg(&scratch)
            .output(),
    )
    .await
    .unwrap();
    assert!(made.status.success(), "{}", python::text(&made));
    for file in [
        "seed/contact/contact_pb2.py",
        "seed/contact/contact_pb2_grpc.py",
        "seed/contact/__init__.py",
    ] {
        let fresh = std::fs::read(scratch.join(file)).unwrap();
        let committed = std::fs::read(python::examples().join(file)).unwrap();
        assert!(
            fresh == committed,
            "{file} is stale: run python examples/python/gen_stubs.py"
        );
    }
}

/// The Python worker completes tasks submitted from Rust: receipts are
/// confirmed in time (every task done on its first attempt though it works
/// longer than the receipt timeout), a failing task is retried then
/// dead-lettered, its status reaches operators, and SIGTERM drains it.
#[tokio::test]
async fn python_worker_completes_tasks_from_rust() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let mut config = test_config();
    config.workers.receipt_timeout_ms = 200;
    config.tasks.max_attempts = 2;
    config.tasks.retry_initial_delay_ms = 10;
    let server = TestServer::with_config(config).await;
    let mut producer = producer(&server).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit(&mut producer, "jobs", &format!("job {i}")).await);
    }
    let failing = submit(&mut producer, "jobs", "fail on purpose").await;

    let mut worker = spawn(
        "python-worker",
        Command::new(&python)
            .arg(python::examples().join("worker.py"))
            // A URL, which the Python tools take as the Rust ones do.
            .args(["--server", &server.url()])
            .args(["--id", "py-1", "--queues", "jobs", "--max-in-flight", "4"])
            .args(["--work-ms", "400", "--status-every", "0.1"]),
    );
    for id in &ids {
        let info = finished(&mut producer, id).await;
        assert_eq!(
            (info.state(), info.attempts, info.worker_id.as_str()),
            (TaskState::Done, 1, "py-1"),
            "{info:?}"
        );
        assert!(info.ret.starts_with("processed 'job"), "{info:?}");
    }
    let info = finished(&mut producer, &failing).await;
    assert_eq!(
        (info.state(), info.attempts, info.error.as_str()),
        (
            TaskState::DeadLettered,
            2,
            "RuntimeError: the task asked to fail"
        )
    );
    let status = worker_until(&server, |w| w.last_status == "idle").await;
    assert_eq!(status.client_id, "py-1");

    signal(&worker, "-TERM");
    assert_eq!(
        exit_code(&mut worker).await,
        Some(0),
        "a drained worker exits 0"
    );
    server.stop().await;
}

/// The Python worker's connection drops while it works on a task: it
/// redials, resumes its session with the task, and its ack lands.
#[tokio::test]
async fn python_worker_resumes_after_a_dropped_connection() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let mut config = test_config();
    config.workers.resume_grace_secs = 30;
    let server = TestServer::with_config(config).await;
    let proxy = Proxy::start(server.grpc_addr).await;
    let mut producer = producer(&server).await;
    let id = submit(&mut producer, "default", "outlive the drop").await;
    let _worker = spawn(
        "python-resumer",
        Command::new(&python)
            .arg(python::examples().join("worker.py"))
            .args(["--server", &proxy.addr.to_string()])
            .args(["--id", "py-resumer", "--work-ms", "1500"])
            .args(["--status-every", "0.05"]),
    );
    // Delivered is not enough: the task must have reached the worker, which
    // says so in its status reports.
    worker_until(&server, |w| w.reported_running == 1).await;
    proxy.cut();
    let info = finished(&mut producer, &id).await;
    assert_eq!(
        (info.state(), info.attempts, info.worker_id.as_str()),
        (TaskState::Done, 1, "py-resumer"),
        "{info:?}"
    );
    server.stop().await;
}

/// The seed tutorial's client, as written (stubs from the seed's proto):
/// it takes tasks on getTask and acks each on tellResult, on one channel.
#[tokio::test]
async fn the_seed_tutorial_client_completes_tasks() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let server = TestServer::start().await;
    let mut producer = producer(&server).await;
    let _client = spawn(
        "seed-client",
        Command::new(&python)
            .current_dir(python::examples().join("seed"))
            .arg("contact_client.py")
            .arg(server.grpc_addr.to_string()),
    );
    for i in 0..3 {
        let text = format!("任务:{i}");
        let id = submit(&mut producer, "default", &text).await;
        let info = finished(&mut producer, &id).await;
        assert_eq!(info.state(), TaskState::Done);
        assert_eq!(info.ret, format!("客户端接收到任务:{text}"));
    }
    server.stop().await;
}

/// A Rust example's binary: `cargo test` builds examples beside the test
/// binaries (target/<profile>/examples).
fn example(name: &str) -> PathBuf {
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(name);
    let built = std::fs::metadata(&example)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is not built", example.display()));
    // `cargo test` builds examples; `cargo test --test interop` alone may
    // leave an old one, which must not be what is tested.
    // What the example is built from: the library, and its own file.
    let own = python::root().join("examples").join(format!("{name}.rs"));
    let newest = newest_rs(&python::root().join("src"))
        .into_iter()
        .chain(std::fs::metadata(own).and_then(|m| m.modified()).ok())
        .max();
    assert!(
        newest.is_none_or(|newest| newest <= built),
        "{} is older than the sources: run the whole `cargo test` (or `cargo build --examples`)",
        example.display()
    );
    example
}

/// The newest modification time of a `.rs` file below `dir`. Unit-test
/// files (`tests.rs`, and `tests/` folders) are left out: they are not part
/// of what an example links, so changing one rebuilds no example.
fn newest_rs(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            if path.file_stem().is_some_and(|stem| stem == "tests") {
                None
            } else if path.is_dir() {
                newest_rs(&path)
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                entry.metadata().and_then(|m| m.modified()).ok()
            } else {
                None
            }
        })
        .max()
}

/// The README's dozen-line workers are the files tested here, verbatim.
#[test]
fn the_readme_shows_the_mini_workers_verbatim() {
    let readme = std::fs::read_to_string(python::root().join("README.md")).unwrap();
    for file in ["examples/mini_worker.rs", "examples/python/mini_worker.py"] {
        let code = std::fs::read_to_string(python::root().join(file)).unwrap();
        assert!(
            readme.contains(&code),
            "README.md does not show {file} as it is"
        );
    }
}

/// The dozen-line workers of the README, Rust and Python, each complete a
/// task submitted from Rust.
#[tokio::test]
async fn the_mini_workers_complete_tasks() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let server = TestServer::start().await;
    let mut producer = producer(&server).await;
    let runs = [
        (
            "rust-mini",
            Command::new(example("mini_worker")),
            // A bare host:port, the form the Python tools use.
            server.grpc_addr.to_string(),
        ),
        (
            "py-mini",
            Command::new(&python),
            // The Rust tools' URL form, which the Python ones take too.
            server.url(),
        ),
    ];
    for (name, mut command, address) in runs {
        if name == "py-mini" {
            command.arg(python::examples().join("mini_worker.py"));
        }
        let worker = spawn(name, command.env("CONTACT_SERVER", address));
        let id = submit(&mut producer, "default", &format!("hello from {name}")).await;
        let info = finished(&mut producer, &id).await;
        assert_eq!(
            (info.state(), info.worker_id.as_str(), info.ret),
            (
                TaskState::Done,
                name,
                format!("HELLO FROM {}", name.to_uppercase())
            )
        );
        // The next worker must not race this one for the next task.
        drop(worker);
        common::until_disconnected(&server, name).await;
    }
    server.stop().await;
}

/// The Rust worker_client example completes tasks and drains on Ctrl-C.
#[tokio::test]
async fn the_rust_worker_example_completes_tasks() {
    let example = example("worker_client");
    let server = TestServer::start().await;
    let mut producer = producer(&server).await;
    let mut worker = spawn(
        "rust-example",
        Command::new(example)
            .args(["--server", &server.url()])
            .args(["--id", "rust-example", "--work-ms", "10"]),
    );
    for i in 0..3 {
        let id = submit(&mut producer, "default", &format!("job {i}")).await;
        let info = finished(&mut producer, &id).await;
        assert_eq!(
            (info.state(), info.worker_id.as_str()),
            (TaskState::Done, "rust-example")
        );
    }
    signal(&worker, "-INT");
    assert_eq!(exit_code(&mut worker).await, Some(0));
    server.stop().await;
}

/// SIGTERM (what systemd and Kubernetes send) drains the Rust worker
/// example: the task it holds is finished, then it exits 0.
#[tokio::test]
async fn the_rust_worker_example_drains_on_sigterm() {
    let example = example("worker_client");
    let server = TestServer::start().await;
    let mut producer = producer(&server).await;
    let mut worker = spawn(
        "rust-example-term",
        Command::new(example)
            .args(["--server", &server.grpc_addr.to_string()])
            .args([
                "--id",
                "rust-term",
                "--work-ms",
                "3000",
                "--status-every",
                "1",
            ]),
    );
    let id = submit(&mut producer, "default", "finish me").await;
    // The task has reached the worker's code: its reports say it holds one.
    worker_until(&server, |w| {
        w.client_id == "rust-term" && w.reported_running == 1
    })
    .await;
    signal(&worker, "-TERM");
    let info = finished(&mut producer, &id).await;
    assert_eq!(
        (info.state(), info.attempts, info.worker_id.as_str()),
        (TaskState::Done, 1, "rust-term"),
        "{info:?}"
    );
    assert_eq!(exit_code(&mut worker).await, Some(0));
    server.stop().await;
}

/// The Python worker, holding a task when the server is killed with
/// SIGKILL, redials the restarted server (same port, same journal),
/// resumes its session and finishes the task on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_resumes_across_a_server_restart() {
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let dir = common::TempDir::new("py-restart");
    let daemon = Daemon::start(&dir.0, &[]).await;
    let addr = daemon.grpc_addr.clone();
    let mut producer = within("connect", Producer::connect(&daemon.url()))
        .await
        .unwrap();
    let id = submit(&mut producer, "default", "outlive the crash").await;
    let _worker = spawn(
        "python-restart",
        Command::new(&python)
            .arg(python::examples().join("worker.py"))
            .args(["--server", &addr])
            .args(["--id", "py-steady", "--work-ms", "2000"])
            .args(["--status-every", "0.05"]),
    );
    // The task has reached the worker's code: its reports say it runs one.
    let admin = within("connect", AdminClient::connect(daemon.url()))
        .await
        .unwrap();
    eventually("the worker to run the task", || {
        let mut admin = admin.clone();
        async move {
            let workers = admin
                .list_workers(v1::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers;
            workers
                .iter()
                .any(|w| w.client_id == "py-steady" && w.reported_running == 1)
                .then_some(())
        }
    })
    .await;
    daemon.kill9().await;
    let daemon = Daemon::start_at(&dir.0, &addr, &[]).await;
    let mut producer = within("connect", Producer::connect(&daemon.url()))
        .await
        .unwrap();
    let info = finished(&mut producer, &id).await;
    assert_eq!(
        (info.state(), info.attempts, info.worker_id.as_str()),
        (TaskState::Done, 1, "py-steady"),
        "{info:?}\n{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate().await, Some(0));
}

/// The Python worker speaks authentication: with `--token` (a worker
/// principal pinned to its id) it takes and finishes a task on a server
/// that requires tokens.
#[tokio::test]
async fn python_worker_sends_its_token() {
    use contact_server::{auth::Role, client::Credentials};
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let mut config = test_config();
    let mut worker = common::principal("py-worker", "ct_py-worker", &[Role::Worker]);
    worker.client_id = Some("py-auth".into());
    config.auth.principals = vec![
        worker,
        common::principal("producer", "ct_py-producer", &[Role::Producer]),
    ];
    let server = TestServer::with_config(config).await;
    let credentials = Credentials::bearer("ct_py-producer").unwrap();
    let mut producer = within(
        "producer",
        Producer::connect_with(&server.url(), credentials),
    )
    .await
    .unwrap();
    let id = submit(&mut producer, "default", "behind a token").await;
    let mut child = spawn(
        "python-token",
        Command::new(&python)
            .arg(python::examples().join("worker.py"))
            .args(["--server", &server.url(), "--id", "py-auth"])
            .args(["--work-ms", "10", "--status-every", "0.2"])
            .env("CONTACT_TOKEN", "ct_py-worker"),
    );
    let info = finished(&mut producer, &id).await;
    assert_eq!(
        (info.state(), info.worker_id.as_str()),
        (TaskState::Done, "py-auth"),
        "{info:?}"
    );
    signal(&child, "-TERM");
    assert_eq!(exit_code(&mut child).await, Some(0));
    server.stop().await;
}

/// The Python worker speaks TLS, mutual TLS and its token at once: with
/// `--ca-file`, a client certificate (which this server requires) and
/// `--token`, it takes and finishes a task.
#[tokio::test]
async fn python_worker_speaks_mutual_tls() {
    use common::certs::Ca;
    use contact_server::{auth::Role, client::Credentials};
    let python = tokio::task::spawn_blocking(python::python).await.unwrap();
    let dir = common::TempDir::new("py-tls");
    let ca = Ca::new("test CA");
    let (client_cert, client_key) = ca.leaf(&["py-1.workers.example"]).write(&dir.0, "client");
    let mut config = test_config();
    let ca_file = ca.serve_tls(&dir.0, &mut config);
    config.tls.client_ca_file = Some(ca_file.clone());
    config.tls.require_client_certificate = true;
    let mut worker = common::principal("py-worker", "ct_py-tls-worker", &[Role::Worker]);
    worker.tls_identity = Some("py-1.workers.example".into());
    config.auth.principals = vec![
        worker,
        common::principal("producer", "ct_py-tls-producer", &[Role::Producer]),
    ];
    let server = TestServer::with_config(config).await;
    let (producer_cert, producer_key) = ca.leaf(&["producer.example"]).write(&dir.0, "producer");
    let credentials = Credentials::none()
        .with_tls(ca.pem(), Some("localhost"))
        .with_client_certificate(
            std::fs::read(&producer_cert).unwrap(),
            std::fs::read(&producer_key).unwrap(),
        )
        .with_bearer("ct_py-tls-producer")
        .unwrap();
    let mut producer = within(
        "producer",
        Producer::connect_with(&server.url(), credentials),
    )
    .await
    .unwrap();
    let id = submit(&mut producer, "default", "over mutual TLS").await;
    let mut child = spawn(
        "python-mtls",
        Command::new(&python)
            .arg(python::examples().join("worker.py"))
            .args(["--server", &server.grpc_addr.to_string(), "--id", "py-tls"])
            .args(["--work-ms", "10", "--status-every", "0.2"])
            .args(["--tls-domain", "localhost"])
            .env("CONTACT_TOKEN", "ct_py-tls-worker")
            .arg("--ca-file")
            .arg(&ca_file)
            .arg("--cert-file")
            .arg(&client_cert)
            .arg("--key-file")
            .arg(&client_key),
    );
    let info = finished(&mut producer, &id).await;
    assert_eq!(
        (info.state(), info.worker_id.as_str()),
        (TaskState::Done, "py-tls"),
        "{info:?}"
    );
    signal(&child, "-TERM");
    assert_eq!(exit_code(&mut child).await, Some(0));
    server.stop().await;
}

/// The Rust worker example speaks TLS and its token: `--ca-file` and
/// `CONTACT_TOKEN` against a server that requires both.
#[tokio::test]
async fn the_rust_worker_example_speaks_tls_with_a_token() {
    use common::certs::Ca;
    use contact_server::{auth::Role, client::Credentials};
    let example = example("worker_client");
    let dir = common::TempDir::new("example-tls");
    let ca = Ca::new("test CA");
    let mut config = test_config();
    let ca_file = ca.serve_tls(&dir.0, &mut config);
    config.auth.principals = vec![
        common::principal("example", "ct_example-worker", &[Role::Worker]),
        common::principal("producer", "ct_example-producer", &[Role::Producer]),
    ];
    let server = TestServer::with_config(config).await;
    let credentials = Credentials::none()
        .with_tls(ca.pem(), Some("localhost"))
        .with_bearer("ct_example-producer")
        .unwrap();
    let mut producer = within(
        "producer",
        Producer::connect_with(&server.url(), credentials),
    )
    .await
    .unwrap();
    let mut worker = spawn(
        "rust-example-tls",
        Command::new(example)
            .args(["--server", &format!("https://{}", server.grpc_addr)])
            .args(["--id", "rust-tls", "--work-ms", "10"])
            .arg("--ca-file")
            .arg(&ca_file)
            .env("CONTACT_TOKEN", "ct_example-worker"),
    );
    let id = submit(&mut producer, "default", "over TLS").await;
    let info = finished(&mut producer, &id).await;
    assert_eq!(
        (info.state(), info.worker_id.as_str()),
        (TaskState::Done, "rust-tls")
    );
    signal(&worker, "-INT");
    assert_eq!(exit_code(&mut worker).await, Some(0));
    server.stop().await;
}
