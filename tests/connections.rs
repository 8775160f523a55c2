//! Limits a stranger cannot get past, at the connection level: a cap on
//! open connections, a deadline for a new connection's HTTP/2 preface,
//! connections that do not speak HTTP/2 closed at once, and idle
//! connections (no call open) closed, while a worker's stays. Each is
//! counted, and real clients keep being served.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestWorker, WorkerOptions, sample, test_config, within};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Waits until the server closes `stream` (a read sees the end, or a
/// reset), bounded.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match within("the server to close the connection", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn counter(server: &TestServer, series: &str) -> f64 {
    sample(&server.scrape().await, series).unwrap_or(0.0)
}

/// Past `server.max_connections` a new connection is closed at once and
/// counted; once a slot is free, clients get in again.
#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let mut config = test_config();
    config.server.max_connections = 3;
    let server = TestServer::with_config(config).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.grpc_addr).await.unwrap());
    }
    // The three hold every slot: the server accepts in arrival order, so
    // it takes them before the fourth. (The open-connections gauge is
    // shared by every server of this test process, so it is not read.)
    let mut over = TcpStream::connect(server.grpc_addr).await.unwrap();
    closed_by_server(&mut over).await;
    let refused = counter(
        &server,
        r#"contact_connections_refused_total{reason="limit"}"#,
    )
    .await;
    assert!(refused >= 1.0, "{refused}");

    drop(silent);
    common::eventually("a submit once slots are free", || async {
        let mut tasks = contact_server::proto::v1::tasks_client::TasksClient::connect(server.url())
            .await
            .ok()?;
        tasks
            .submit(contact_server::proto::v1::SubmitRequest::default())
            .await
            .ok()
    })
    .await;
    server.stop().await;
}

/// A connection that says nothing is closed after
/// `server.handshake_timeout_secs`, and one that speaks something other
/// than HTTP/2 at once; both are counted and the server keeps serving.
#[tokio::test]
async fn silent_and_foreign_connections_are_closed() {
    let mut config = test_config();
    config.server.handshake_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut silent = TcpStream::connect(server.grpc_addr).await.unwrap();
    let mut foreign = TcpStream::connect(server.grpc_addr).await.unwrap();
    foreign
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .await
        .unwrap();
    closed_by_server(&mut foreign).await;
    closed_by_server(&mut silent).await;
    let text = server.scrape().await;
    let timed_out = sample(
        &text,
        r#"contact_connections_closed_total{reason="handshake_timeout"}"#,
    );
    assert!(timed_out.unwrap_or(0.0) >= 1.0, "{timed_out:?}");
    let foreign = sample(
        &text,
        r#"contact_connections_closed_total{reason="not_http2"}"#,
    );
    assert!(foreign.unwrap_or(0.0) >= 1.0, "{foreign:?}");
    server.submit("default", "still serving").await;
    server.stop().await;
}

/// A connection with no call open for `server.idle_timeout_secs` is
/// closed (its client redials on the next call); a worker, whose getTask
/// call stays open, keeps its connection.
#[tokio::test]
async fn idle_connections_are_closed_and_workers_stay() {
    let mut config = test_config();
    config.server.idle_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("stays")).await;
    // A producer's connection goes idle after its call.
    let mut tasks = server.tasks().await;
    within(
        "a first submit",
        tasks.submit(contact_server::proto::v1::SubmitRequest {
            queue: "elsewhere".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    common::eventually("the idle connection to be closed", || async {
        let closed = sample(
            &server.scrape().await,
            r#"contact_connections_closed_total{reason="idle"}"#,
        );
        (closed.unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    // Its two calls are open (the gauge counts every server of this test
    // process, so at least these).
    let calls = sample(&server.scrape().await, "contact_calls_open").unwrap_or(0.0);
    assert!(calls >= 2.0, "{calls}");
    // The worker's connection outlived it: a task still reaches it.
    let id = server.submit("default", "for the worker").await;
    assert_eq!(worker.next_task().await.task_id, id);
    // The producer's channel redials by itself.
    within(
        "a submit after the close",
        tasks.submit(contact_server::proto::v1::SubmitRequest::default()),
    )
    .await
    .unwrap();
    server.stop().await;
}

/// The defaults bound what a stranger can hold: a handshake deadline of at
/// most 10 s, a connection cap, an idle timeout.
#[test]
fn the_defaults_are_bounded() {
    let config = contact_server::Config::default();
    assert!(config.server.handshake_timeout_secs <= 10);
    assert!(config.server.max_connections <= 65_536);
    assert!(config.server.idle_timeout_secs > 0);
    assert!(config.server.max_concurrent_streams < u32::MAX);
}

/// With authentication on, a stranger's open health watch does not keep
/// its connection busy: it is closed as idle like a silent one.
#[tokio::test]
async fn an_anonymous_health_watch_does_not_hold_a_connection() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut config = test_config();
    config.server.idle_timeout_secs = 1;
    config.auth.principals = vec![common::principal(
        "p",
        "ct_p",
        &[contact_server::auth::Role::Producer],
    )];
    let server = TestServer::with_config(config).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = within(
        "a health watch",
        health.watch(HealthCheckRequest::default()),
    )
    .await
    .unwrap()
    .into_inner();
    // The first answer, then the stream ends when the server closes the
    // idle connection.
    within("the first status", watch.message()).await.unwrap();
    while let Ok(Some(_)) = within("the watch to end", watch.message()).await {}
    server.stop().await;
}

/// The HTTP listener closes a connection that sends nothing within
/// `server.handshake_timeout_secs`, and keeps serving scrapes.
#[tokio::test]
async fn a_silent_http_connection_is_closed() {
    let mut config = test_config();
    config.server.handshake_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut silent = TcpStream::connect(server.metrics_addr).await.unwrap();
    closed_by_server(&mut silent).await;
    assert!(server.scrape().await.contains("contact_connections_open"));
    server.stop().await;
}

/// A call whose stream is reset before its end is counted: here a
/// worker's getTask and tellResult, dropped by the worker.
#[tokio::test]
async fn reset_calls_are_counted() {
    let server = TestServer::start().await;
    let before = counter(&server, "contact_calls_reset_total").await;
    let worker = TestWorker::connect(&server, WorkerOptions::id("leaves")).await;
    drop(worker);
    common::eventually("the reset calls counted", || async {
        (counter(&server, "contact_calls_reset_total").await >= before + 2.0).then_some(())
    })
    .await;
    server.stop().await;
}
