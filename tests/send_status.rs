//! sendStatus: one Result per ClientMsg, in order and as they come (quiet
//! ones confirmed by a count), and the registry records the worker's status.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestWorker, WorkerOptions, ack_op, within};
use contact_server::{
    domain::CLIENT_ID_KEY,
    proto::{self, contact_client::ContactClient, v1},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

/// Replies stream back one at a time (ping-pong), so a worker can use the
/// call interactively, and the last status is what the registry shows.
#[tokio::test]
async fn answers_each_status_as_it_arrives() {
    let server = TestServer::start().await;
    let worker = TestWorker::connect(&server, WorkerOptions::id("pinger")).await;
    // A different connection: the worker is found by its id in metadata.
    let mut client = ContactClient::new(server.channel().await);
    let (tx, rx) = mpsc::channel(1);
    let mut request = Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert(CLIENT_ID_KEY, "pinger".parse().unwrap());
    let mut replies = within("sendStatus", client.send_status(request))
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        tx.send(proto::ClientMsg {
            msg: format!("busy {i}"),
            running: i,
            ..Default::default()
        })
        .await
        .unwrap();
        let reply = within("one reply", replies.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.ret, "status recorded for worker pinger");
    }
    // An empty message is a heartbeat: it is answered and keeps the text.
    tx.send(proto::ClientMsg::default()).await.unwrap();
    within("heartbeat reply", replies.message())
        .await
        .unwrap()
        .unwrap();
    drop(tx);
    assert!(
        within("end of replies", replies.message())
            .await
            .unwrap()
            .is_none()
    );

    let workers = within(
        "list workers",
        server.admin().await.list_workers(v1::ListWorkersRequest {}),
    )
    .await
    .unwrap()
    .into_inner()
    .workers;
    let pinger = workers.iter().find(|w| w.client_id == worker.id).unwrap();
    assert_eq!(pinger.last_status, "busy 4");
    assert_eq!(
        pinger.reported_running, 0,
        "the heartbeat reported 0 running"
    );
    assert!(pinger.last_heard_unix_ms >= pinger.connected_unix_ms);
    assert_eq!(pinger.queues, vec!["default".to_owned()]);
    server.stop().await;
}

/// A call with no registered worker still gets one reply per message, each
/// refused with a code saying the status was not recorded; a malformed
/// client id is refused.
#[tokio::test]
async fn unregistered_callers_are_answered_not_recorded() {
    let server = TestServer::start().await;
    let mut client = ContactClient::new(server.channel().await);
    let messages = (0..3).map(|i| proto::ClientMsg {
        msg: format!("m{i}"),
        ..Default::default()
    });
    let replies = within(
        "sendStatus",
        client.send_status(tokio_stream::iter(messages)),
    )
    .await
    .unwrap()
    .into_inner();
    let replies: Vec<proto::Result> = within("replies", async {
        use tokio_stream::StreamExt as _;
        replies.collect::<Result<Vec<_>, _>>().await
    })
    .await
    .unwrap();
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|r| {
        r.code == tonic::Code::FailedPrecondition as i32 && r.error.contains("status not recorded")
    }));

    let mut request = Request::new(tokio_stream::iter(Vec::<proto::ClientMsg>::new()));
    request
        .metadata_mut()
        .insert(CLIENT_ID_KEY, "bad id!".parse().unwrap());
    let status = within("bad id", client.send_status(request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // And the server still serves.
    assert!(!server.submit("default", "still up").await.is_empty());
    server.stop().await;
}

/// Quiet messages are answered only when refused. The applied ones are
/// confirmed by count, before any later answer and once the call falls
/// silent, so every answer still comes in the order of what it answers.
#[tokio::test]
async fn quiet_messages_are_confirmed_by_count() {
    let server = TestServer::start().await;
    let mut worker =
        TestWorker::connect(&server, WorkerOptions::id("quiet").max_in_flight(3)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(server.submit("default", &format!("t{i}")).await);
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        let task = worker.next_task().await;
        held.push((task.task_id, task.attempt));
    }
    let quiet = |op| proto::ClientMsg {
        op: Some(op),
        quiet: true,
        ..Default::default()
    };
    let mut control = worker.control().await;
    control.queue(quiet(ack_op(&held[0].0, held[0].1))).await;
    control.queue(quiet(ack_op(&held[1].0, held[1].1))).await;
    // A second ack of the first task: refused, so answered in its place.
    control.queue(quiet(ack_op(&held[0].0, held[0].1))).await;
    control.queue(proto::ClientMsg::default()).await;

    let mut confirmed = 0;
    let refusal = loop {
        let reply = control.reply().await;
        if reply.quiet_applied == 0 {
            break reply;
        }
        assert_eq!(reply.code, 0, "{reply:?}");
        confirmed += reply.quiet_applied;
    };
    assert_eq!(confirmed, 2, "both acks confirmed before the refusal");
    assert_ne!(refusal.code, 0, "{refusal:?}");
    assert_eq!(refusal.task_id, held[0].0);
    let heartbeat = control.reply().await;
    assert_eq!(heartbeat.ret, "status recorded for worker quiet");
    assert_eq!(heartbeat.quiet_applied, 0);
    assert_eq!(heartbeat.in_flight, 1, "two of the three acknowledged");

    // The last ack, with nothing after it, is confirmed once the call is silent.
    control.queue(quiet(ack_op(&held[2].0, held[2].1))).await;
    assert_eq!(control.reply().await.quiet_applied, 1);
    assert_eq!(control.send(proto::ClientMsg::default()).await.in_flight, 0);
    for id in &ids {
        assert_eq!(server.get(id).await.state, v1::TaskState::Done as i32);
    }

    // One confirmation covers at most 256 messages.
    for _ in 0..600 {
        control.queue(quiet_heartbeat()).await;
    }
    let mut confirmed = 0;
    while confirmed < 600 {
        let reply = control.reply().await;
        assert!(
            (1..=256).contains(&reply.quiet_applied),
            "{}",
            reply.quiet_applied
        );
        confirmed += reply.quiet_applied;
    }
    assert_eq!(confirmed, 600);
    server.stop().await;
}

fn quiet_heartbeat() -> proto::ClientMsg {
    proto::ClientMsg {
        quiet: true,
        ..Default::default()
    }
}
