//! sendStatus: one Result per ClientMsg, in order and as they come, and the
//! registry records the worker's status.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestWorker, WorkerOptions, within};
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
            op: None,
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
