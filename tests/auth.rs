//! Only the right clients get in: with principals configured, every call
//! but health needs a known bearer token; each method needs its role; a
//! producer or worker scoped to queues stays in them; a worker id pinned to
//! a principal is that principal's alone. Refusals are UNAUTHENTICATED or
//! PERMISSION_DENIED, counted, and never echo the token.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    TestServer, TestWorker, WorkerOptions, authorize, principal, sample, test_config, within,
};
use contact_server::{
    auth::Role,
    proto::{Outcome, v1},
};
use tonic::{Code, Request};

const WORKER: &str = "ct_worker-token";
const ANY_WORKER: &str = "ct_any-worker-token";
const OTHER_WORKER: &str = "ct_other-worker-token";
const PRODUCER: &str = "ct_producer-token";
const SCOPED: &str = "ct_scoped-producer-token";
const ADMIN: &str = "ct_admin-token";

async fn secured() -> TestServer {
    let mut config = test_config();
    let mut worker = principal("images-worker", WORKER, &[Role::Worker]);
    worker.queues = vec!["images".into()];
    worker.client_id = Some("img-1".into());
    let mut scoped = principal("images-producer", SCOPED, &[Role::Producer]);
    scoped.queues = vec!["images".into()];
    config.auth.principals = vec![
        worker,
        principal("any-worker", ANY_WORKER, &[Role::Worker]),
        principal("other-worker", OTHER_WORKER, &[Role::Worker]),
        principal("producer", PRODUCER, &[Role::Producer]),
        scoped,
        principal("ops", ADMIN, &[Role::Admin, Role::Producer]),
    ];
    TestServer::with_config(config).await
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    authorize(&mut request, token);
    request
}

fn submit_to(queue: &str) -> v1::SubmitRequest {
    v1::SubmitRequest {
        queue: queue.into(),
        text: "t".into(),
        ..Default::default()
    }
}

async fn submit(
    server: &TestServer,
    queue: &str,
    token: Option<&str>,
) -> Result<String, tonic::Status> {
    within(
        "submit",
        server
            .tasks()
            .await
            .submit(with_token(submit_to(queue), token)),
    )
    .await
    .map(|r| r.into_inner().task_id)
}

/// No token, or one the server does not know: UNAUTHENTICATED, without
/// the token in the message; health stays open for probes.
#[tokio::test]
async fn strangers_are_unauthenticated_and_health_stays_open() {
    let server = secured().await;
    let missing = submit(&server, "images", None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    assert!(missing.message().contains("Bearer"), "{missing:?}");
    let wrong = submit(&server, "images", Some("ct_guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    assert!(!wrong.message().contains("ct_guess"), "{wrong:?}");

    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = within(
        "health",
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .unwrap();
    assert_eq!(status.into_inner().status, 1, "SERVING");

    let refused = server
        .tasks()
        .await
        .get(v1::GetRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let text = server.scrape().await;
    let missing = sample(
        &text,
        r#"contact_auth_refusals_total{reason="missing_credentials"}"#,
    );
    assert!(missing.unwrap_or(0.0) >= 2.0, "{missing:?}");
    let bad = sample(
        &text,
        r#"contact_auth_refusals_total{reason="bad_credentials"}"#,
    );
    assert!(bad.unwrap_or(0.0) >= 1.0, "{bad:?}");
    assert!(!text.contains("ct_guess"));
    server.stop().await;
}

/// Each method needs its role: a producer cannot use Admin, dead letters
/// or the Contact service; an admin can.
#[tokio::test]
async fn each_method_needs_its_role() {
    let server = secured().await;
    let id = submit(&server, "images", Some(PRODUCER)).await.unwrap();
    let mut admin = server.admin().await;
    let denied = within(
        "list workers as a producer",
        admin.list_workers(with_token(
            v1::ListWorkersRequest::default(),
            Some(PRODUCER),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("admin"), "{denied:?}");
    let mut tasks = server.tasks().await;
    let denied = within(
        "dead letters as a producer",
        tasks.list_dead_letters(with_token(
            v1::ListDeadLettersRequest::default(),
            Some(PRODUCER),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let as_worker = TestWorker::try_connect(&server, WorkerOptions::id("p").token(PRODUCER))
        .await
        .err()
        .unwrap();
    assert_eq!(as_worker.code(), Code::PermissionDenied);

    within(
        "list workers as admin",
        admin.list_workers(with_token(v1::ListWorkersRequest::default(), Some(ADMIN))),
    )
    .await
    .unwrap();
    let info = within(
        "get as producer",
        tasks.get(with_token(v1::GetRequest { task_id: id }, Some(PRODUCER))),
    )
    .await
    .unwrap();
    assert_eq!(info.into_inner().queue, "images");
    let no_role = sample(
        &server.scrape().await,
        r#"contact_auth_refusals_total{reason="missing_role"}"#,
    );
    assert!(no_role.unwrap_or(0.0) >= 3.0, "{no_role:?}");
    server.stop().await;
}

/// A producer scoped to queues submits only there, cannot target a worker
/// or broadcast, and cannot see or cancel tasks of other queues.
#[tokio::test]
async fn a_scoped_producer_stays_in_its_queues() {
    let server = secured().await;
    submit(&server, "images", Some(SCOPED)).await.unwrap();
    let other = submit(&server, "mail", Some(SCOPED)).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(other.message().contains("mail"), "{other:?}");
    let default = submit(&server, "", Some(SCOPED)).await.unwrap_err();
    assert_eq!(default.code(), Code::PermissionDenied);
    let targeted = within(
        "a targeted submit",
        server.tasks().await.submit(with_token(
            v1::SubmitRequest {
                target_client_id: "img-1".into(),
                ..Default::default()
            },
            Some(SCOPED),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(targeted.code(), Code::PermissionDenied);
    let broadcast = within(
        "broadcast",
        server.tasks().await.broadcast(with_token(
            v1::BroadcastRequest {
                queue: "images".into(),
                ..Default::default()
            },
            Some(SCOPED),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(broadcast.code(), Code::PermissionDenied);

    // Another producer's task in another queue does not exist for it.
    let mail = submit(&server, "mail", Some(PRODUCER)).await.unwrap();
    let mut tasks = server.tasks().await;
    let get = within(
        "get out of scope",
        tasks.get(with_token(
            v1::GetRequest {
                task_id: mail.clone(),
            },
            Some(SCOPED),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let cancel = within(
        "cancel out of scope",
        tasks.cancel(with_token(
            v1::CancelRequest {
                task_id: mail.clone(),
            },
            Some(SCOPED),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(cancel.code(), Code::NotFound);
    let info = within(
        "still pending",
        tasks.get(with_token(v1::GetRequest { task_id: mail }, Some(PRODUCER))),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(info.state(), v1::TaskState::Pending);
    server.stop().await;
}

/// A worker pinned to an id registers as it even without naming it, may
/// not name another, and no other principal may act as it; a worker scoped
/// to queues subscribes only to those.
#[tokio::test]
async fn a_pinned_worker_id_is_its_principals_alone() {
    let server = secured().await;
    let wrong_id = TestWorker::try_connect(
        &server,
        WorkerOptions::id("img-2").queues("images").token(WORKER),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(wrong_id.code(), Code::PermissionDenied, "{wrong_id:?}");
    let wrong_queue = TestWorker::try_connect(
        &server,
        WorkerOptions::default().queues("images,mail").token(WORKER),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        wrong_queue.code(),
        Code::PermissionDenied,
        "{wrong_queue:?}"
    );
    assert!(wrong_queue.message().contains("mail"), "{wrong_queue:?}");
    let impostor = TestWorker::try_connect(
        &server,
        WorkerOptions::id("img-1")
            .queues("images")
            .token(ANY_WORKER),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(impostor.code(), Code::PermissionDenied, "{impostor:?}");

    let mut worker = TestWorker::connect(
        &server,
        WorkerOptions::default().queues("images").token(WORKER),
    )
    .await;
    assert_eq!(worker.id, "img-1", "the pinned id, unasked");
    let id = submit(&server, "images", Some(PRODUCER)).await.unwrap();
    assert_eq!(worker.next_task().await.task_id, id);

    // Another principal cannot ack, or change the credit of, the worker.
    let mut forged = Request::new(tokio_stream::iter(vec![v1_ack(&id)]));
    forged
        .metadata_mut()
        .insert("contact-client-id", "img-1".parse().unwrap());
    authorize(&mut forged, Some(ANY_WORKER));
    let refused = within("a forged ack", worker.client.clone().tell_result(forged))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    worker.ack(&id, Outcome::Done, "mine").await;
    let info = server_get(&server, &id).await;
    assert_eq!(info.ret, "mine");
    let pinned = sample(
        &server.scrape().await,
        r#"contact_auth_refusals_total{reason="worker_id"}"#,
    );
    assert!(pinned.unwrap_or(0.0) >= 3.0, "{pinned:?}");
    server.stop().await;
}

fn v1_ack(task_id: &str) -> contact_server::proto::Result {
    contact_server::proto::Result {
        task_id: task_id.into(),
        ret: "forged".into(),
        ..Default::default()
    }
}

async fn server_get(server: &TestServer, id: &str) -> v1::TaskInfo {
    common::eventually("the task to finish", || async move {
        let request = with_token(v1::GetRequest { task_id: id.into() }, Some(PRODUCER));
        let info = server.tasks().await.get(request).await.ok()?.into_inner();
        (info.state() == v1::TaskState::Done).then_some(info)
    })
    .await
}

const BIN: &str = env!("CARGO_BIN_EXE_contact-server");

/// `contact-server token` prints a token and an entry to paste into the
/// config; the server configured with that entry lets the token in, with
/// the role it names and no other.
#[tokio::test]
async fn a_printed_token_and_entry_work_together() {
    let output = std::process::Command::new(BIN)
        .args(["token", "--name", "ci-producer", "--role", "producer"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let secret = text
        .lines()
        .find_map(|line| line.strip_prefix("token: "))
        .unwrap()
        .to_owned();
    let entry = &text[text.find("[[auth.principals]]").unwrap()..];
    assert!(!entry.contains(&secret), "the entry keeps only the hash");
    let mut config = test_config();
    let parsed = contact_server::Config::from_toml(entry, "printed").unwrap();
    config.auth = parsed.auth;
    let server = TestServer::with_config(config).await;
    submit(&server, "default", Some(&secret)).await.unwrap();
    let admin = within(
        "admin with a producer token",
        server
            .admin()
            .await
            .list_queues(with_token(v1::ListQueuesRequest::default(), Some(&secret))),
    )
    .await
    .unwrap_err();
    assert_eq!(admin.code(), Code::PermissionDenied);
    server.stop().await;
}

/// Protected mode, as the daemon shows it: asked to listen on every
/// address with no principal configured, it refuses to start (exit 64) and
/// says how to go on.
#[tokio::test]
async fn an_open_daemon_refuses_to_listen_beyond_loopback() {
    let dir = common::TempDir::new("protected");
    let output = within(
        "the daemon to refuse",
        tokio::process::Command::new(BIN)
            .args(["--grpc-addr", "0.0.0.0:0", "--metrics-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&dir.0)
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("protected mode"), "{stderr}");
    assert!(stderr.contains("contact-server token"), "{stderr}");
}

/// The Rust client library speaks it: a worker with a token registers as
/// its pinned id and takes a task a producer with a token submitted; the
/// same producer without its token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_sends_its_token() {
    use contact_server::client::{ClientError, Credentials, Producer, Submission, WorkerBuilder};
    let server = secured().await;
    let mut worker = within(
        "the worker to connect",
        WorkerBuilder::new(server.url())
            .queues(["images"])
            .token(WORKER)
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(worker.client_id(), "img-1");
    let mut producer =
        Producer::connect_with(&server.url(), Credentials::bearer(PRODUCER).unwrap())
            .await
            .unwrap();
    let id = producer
        .submit(Submission::to_queue("images").text("with a token"))
        .await
        .unwrap();
    let task = within("the task", worker.next_task()).await.unwrap();
    task.done("done with a token").await.unwrap();
    let info = producer
        .wait(&id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(info.ret, "done with a token");

    let mut anonymous = Producer::connect(&server.url()).await.unwrap();
    match anonymous.submit(Submission::to_queue("images")).await {
        Err(ClientError::Status(status)) => assert_eq!(status.code(), Code::Unauthenticated),
        other => panic!("{other:?}"),
    }
    let refused = WorkerBuilder::new(server.url())
        .queues(["images"])
        .connect()
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Status(s)) if s.code() == Code::Unauthenticated),
        "{refused:?}"
    );
    drop(worker);
    server.stop().await;
}

/// contactctl takes the token from CONTACT_TOKEN (or --token).
#[tokio::test]
async fn contactctl_sends_its_token() {
    let server = secured().await;
    let run = |token: Option<&'static str>, args: &'static [&'static str]| {
        let url = server.url();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_contactctl"));
            command.args(["--server", &url]).args(args);
            command.env_remove("CONTACT_TOKEN");
            if let Some(token) = token {
                command.env("CONTACT_TOKEN", token);
            }
            within("contactctl", command.output()).await.unwrap()
        }
    };
    let submitted = run(Some(PRODUCER), &["submit", "hello", "--queue", "images"]).await;
    assert!(submitted.status.success(), "{submitted:?}");
    let anonymous = run(None, &["submit", "hello", "--queue", "images"]).await;
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("credentials"),
        "{anonymous:?}"
    );
    let workers = run(Some(ADMIN), &["workers"]).await;
    assert!(workers.status.success(), "{workers:?}");
    let as_producer = run(Some(PRODUCER), &["workers"]).await;
    assert!(!as_producer.status.success());
    server.stop().await;
}

/// Every RPC against every role, with this test's own table of who may
/// call what: allowed calls are not refused by authentication (they may
/// still fail on the empty request), a caller without a token is
/// UNAUTHENTICATED, a principal without the role PERMISSION_DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_against_every_role() {
    use common::raw::call_code;
    const W: u8 = 1;
    const P: u8 = 2;
    const A: u8 = 4;
    const ANY: u8 = W | P | A;
    const OPEN: u8 = 8;
    let table: [(&str, u8); 21] = [
        ("/Contact/sendStatus", W),
        ("/Contact/getTask", W),
        ("/Contact/tellResult", W),
        ("/contact.v1.Tasks/Submit", P),
        ("/contact.v1.Tasks/SubmitStream", P),
        ("/contact.v1.Tasks/Get", P),
        ("/contact.v1.Tasks/Wait", P),
        ("/contact.v1.Tasks/Cancel", P),
        ("/contact.v1.Tasks/ListDeadLetters", A),
        ("/contact.v1.Tasks/Requeue", A),
        ("/contact.v1.Tasks/Broadcast", P),
        ("/contact.v1.Tasks/GetBroadcast", P),
        ("/contact.v1.Admin/ListWorkers", A),
        ("/contact.v1.Admin/ListQueues", A),
        ("/contact.v1.Admin/DrainWorker", A),
        ("/contact.v1.Admin/DisconnectWorker", A),
        ("/contact.v1.Admin/PurgeDeadLetters", A),
        ("/grpc.health.v1.Health/Check", OPEN),
        ("/grpc.health.v1.Health/Watch", OPEN),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            ANY,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ANY,
        ),
    ];
    let mut config = test_config();
    config.auth.principals = vec![
        principal("w", "ct_matrix-worker", &[Role::Worker]),
        principal("p", "ct_matrix-producer", &[Role::Producer]),
        principal("a", "ct_matrix-admin", &[Role::Admin]),
    ];
    let server = TestServer::with_config(config).await;
    let callers: [(Option<&str>, u8); 4] = [
        (None, 0),
        (Some("ct_matrix-worker"), W),
        (Some("ct_matrix-producer"), P),
        (Some("ct_matrix-admin"), A),
    ];
    let mut failures = Vec::new();
    for (path, allowed) in table {
        for (token, role) in callers {
            let code = call_code(server.channel().await, path, token, Vec::new()).await;
            let expected = if allowed & (OPEN | role) != 0 {
                None
            } else if token.is_none() {
                Some(Code::Unauthenticated)
            } else {
                Some(Code::PermissionDenied)
            };
            let ok = match expected {
                None => !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                Some(expected) => code == expected,
            };
            if !ok {
                failures.push(format!(
                    "{path} as {token:?}: {code:?}, expected {expected:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    server.stop().await;
}

/// The README's worked set-up is a config the daemon takes (with real
/// hashes where it shows "…").
#[test]
fn the_readmes_worked_set_up_is_a_valid_config() {
    use contact_server::auth::token;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("**A worked set-up**").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let mut text = String::new();
    for (i, piece) in block.split('…').enumerate() {
        if i > 0 {
            text.push_str(&token::hex(&token::sha256(format!("token {i}").as_bytes())));
        }
        text.push_str(piece);
    }
    let config = contact_server::Config::from_toml(&text, "README.md").unwrap();
    assert!(config.auth.enabled() && config.tls.enabled());
    assert_eq!(config.auth.principals.len(), 3);
}

/// A worker session belongs to the principal that registered it: another
/// principal's calls on the same connection (a shared proxy, one process
/// with two tokens) without a worker id do not reach it, and another
/// principal cannot register an unpinned id that is in use.
#[tokio::test]
async fn a_session_belongs_to_its_principal_even_on_a_shared_connection() {
    let server = secured().await;
    let mut worker = TestWorker::connect(
        &server,
        WorkerOptions::default().queues("images").token(WORKER),
    )
    .await;
    let id = submit(&server, "images", Some(PRODUCER)).await.unwrap();
    assert_eq!(worker.next_task().await.task_id, id);
    // Same connection (the worker's own client), another token, no id.
    let mut forged = Request::new(tokio_stream::iter(vec![v1_ack(&id)]));
    authorize(&mut forged, Some(ANY_WORKER));
    let refused = within(
        "an id-less ack from another principal",
        worker.client.clone().tell_result(forged),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    worker.ack(&id, Outcome::Done, "mine").await;
    assert_eq!(server_get(&server, &id).await.ret, "mine");

    let _free = TestWorker::connect(&server, WorkerOptions::id("free-1").token(ANY_WORKER)).await;
    let taken = TestWorker::try_connect(&server, WorkerOptions::id("free-1").token(OTHER_WORKER))
        .await
        .err()
        .unwrap();
    assert_eq!(taken.code(), Code::PermissionDenied, "{taken:?}");
    server.stop().await;
}
