//! What the server refuses at its limits, and how: a task too big to ever be
//! pushed, a delay past the maximum, a keepalive the worker cannot keep,
//! over-size and undecodable messages on the streaming calls, and inputs
//! too long to quote, unfinished tasks past the server's byte budget. Each
//! refusal is a clear status, and the server keeps serving (rule 3).

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    TestServer, TestWorker, WorkerOptions,
    raw::{read_to_end, streaming_call},
    test_config, within,
};
use contact_server::{
    domain::{CLIENT_ID_KEY, KEEPALIVE_MS_KEY},
    proto::{
        self, Outcome,
        v1::{self, TaskState},
    },
};
use prost::Message as _;
use tonic::{Code, Request};

/// Bytes of a pushed task beyond its text (and queue "default"), at the most:
/// what the server reserves for ids and counters when it checks a submission.
const PUSH_OVERHEAD: usize = 106 + 2 + "default".len();

/// A task whose push would exceed `server.max_message_bytes` is refused at
/// Submit, naming the limit, instead of killing the worker's stream on every
/// delivery until it is dead-lettered; one exactly at the limit is delivered.
#[tokio::test]
async fn a_task_too_big_to_push_is_refused_at_submit() {
    let mut config = test_config();
    config.server.max_message_bytes = 4096;
    let server = TestServer::with_config(config).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w")).await;
    let mut tasks = server.tasks().await;
    // Text of n bytes (n < 2^14) takes n + 3 bytes as a field.
    let largest = 4096 - PUSH_OVERHEAD - 3;

    let refused = within(
        "an undeliverable submit",
        tasks.submit(v1::SubmitRequest {
            text: "x".repeat(largest + 1),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("server.max_message_bytes (4096)"),
        "{refused:?}"
    );

    // The same through SubmitStream: refused in place, the stream goes on.
    let replies = within(
        "SubmitStream",
        tasks.submit_stream(tokio_stream::iter(vec![
            v1::SubmitRequest {
                text: "y".repeat(largest + 1),
                ..Default::default()
            },
            v1::SubmitRequest {
                text: "z".repeat(largest),
                ..Default::default()
            },
        ])),
    )
    .await
    .unwrap()
    .into_inner();
    let replies: Vec<v1::SubmitReply> = within(
        "replies",
        tokio_stream::StreamExt::collect::<Vec<_>>(tokio_stream::StreamExt::map(replies, |r| {
            r.unwrap()
        })),
    )
    .await;
    assert_eq!(replies.len(), 2);
    assert_eq!(
        replies[0].error.as_ref().unwrap().code,
        Code::InvalidArgument as i32
    );
    assert!(replies[1].error.is_none(), "{:?}", replies[1]);

    // The largest task that fits is pushed intact, and the worker's stream lives.
    let task = worker.next_task().await;
    assert_eq!(task.task_id, replies[1].task_id);
    assert_eq!(task.task.len(), largest);
    assert!(task.encoded_len() <= 4096);
    worker.ack(&task.task_id, Outcome::Done, "ok").await;
    assert_eq!(
        server.wait_finished(&task.task_id).await.state(),
        TaskState::Done
    );
    server.stop().await;
}

/// A not-before time past `tasks.max_delay_secs` is refused, naming the key,
/// instead of waiting forever; one within it is accepted.
#[tokio::test]
async fn a_delay_past_the_maximum_is_refused() {
    let mut config = test_config();
    config.tasks.max_delay_secs = 3600;
    let server = TestServer::with_config(config).await;
    let mut tasks = server.tasks().await;
    let refused = within(
        "a submit for the end of time",
        tasks.submit(v1::SubmitRequest {
            not_before_unix_ms: u64::MAX,
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("tasks.max_delay_secs (3600 s)"),
        "{refused:?}"
    );

    let in_a_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    let accepted = within(
        "a submit for a minute from now",
        tasks.submit(v1::SubmitRequest {
            not_before_unix_ms: in_a_minute,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        server.get(&accepted.task_id).await.state(),
        TaskState::Pending
    );
    server.stop().await;
}

/// A keepalive interval at or above the liveness timeout would get the
/// worker expired between its own heartbeats: getTask refuses it, naming both.
#[tokio::test]
async fn a_keepalive_slower_than_liveness_is_refused() {
    let mut config = test_config();
    config.workers.liveness_timeout_secs = 2;
    let server = TestServer::with_config(config).await;
    for ms in [2000, 5000] {
        let refused = TestWorker::try_connect(&server, WorkerOptions::id("slow").keepalive_ms(ms))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(&ms.to_string()), "{refused:?}");
        assert!(
            refused
                .message()
                .contains("workers.liveness_timeout_secs (2 s)"),
            "{refused:?}"
        );
    }
    let mut worker =
        TestWorker::connect(&server, WorkerOptions::id("fine").keepalive_ms(1999)).await;
    let id = server.submit("default", "still served").await;
    assert_eq!(worker.next_task().await.task_id, id);
    server.stop().await;
}

/// Sends `good` then a bad message on the streaming call at `path`, for an
/// over-size and an undecodable one: the good message is answered, then the
/// call ends with OUT_OF_RANGE or INVALID_ARGUMENT, never a silent OK.
async fn assert_bad_message_ends_the_call(server: &TestServer, path: &'static str, good: Vec<u8>) {
    for (bad, code) in [
        (vec![0x0a; 2000], Code::OutOfRange),
        (vec![0xff, 0xff, 0xff], Code::InvalidArgument),
    ] {
        let replies = within(
            path,
            streaming_call(server.channel().await, path, vec![good.clone(), bad]),
        )
        .await
        .unwrap();
        let (answered, end) = within("the call to end", read_to_end(replies)).await;
        assert_eq!(
            answered, 1,
            "{path}: the message before the bad one is answered"
        );
        let status = end.unwrap_err();
        assert_eq!(status.code(), code, "{path}: {status:?}");
    }
}

/// sendStatus answers the status report before a bad message, then ends
/// with that message's status; the server keeps serving.
#[tokio::test]
async fn send_status_ends_with_the_status_of_a_bad_message() {
    let mut config = test_config();
    config.server.max_message_bytes = 1024;
    let server = TestServer::with_config(config).await;
    let good = proto::ClientMsg {
        msg: "hello".into(),
        ..Default::default()
    };
    assert_bad_message_ends_the_call(&server, "/Contact/sendStatus", good.encode_to_vec()).await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("after")).await;
    let id = server.submit("default", "still served").await;
    assert_eq!(worker.next_task().await.task_id, id);
    server.stop().await;
}

/// SubmitStream accepts and answers the task before a bad message, then
/// ends with that message's status.
#[tokio::test]
async fn submit_stream_ends_with_the_status_of_a_bad_message() {
    let mut config = test_config();
    config.server.max_message_bytes = 1024;
    let server = TestServer::with_config(config).await;
    let good = v1::SubmitRequest {
        text: "accepted".into(),
        ..Default::default()
    };
    let path = "/contact.v1.Tasks/SubmitStream";
    assert_bad_message_ends_the_call(&server, path, good.encode_to_vec()).await;
    server.stop().await;
}

/// Error messages quote a short prefix of a bad input, never all of it: a
/// 1 MiB id must not come back as a 1 MiB grpc-message.
#[tokio::test]
async fn errors_quote_only_a_prefix_of_bad_input() {
    let server = TestServer::start().await;
    let mut tasks = server.tasks().await;
    let huge = "z".repeat(1 << 20);
    let refused = within(
        "Get with a huge id",
        tasks.get(v1::GetRequest {
            task_id: huge.clone(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().len() < 300,
        "{} bytes",
        refused.message().len()
    );
    assert!(
        refused.message().contains("1048576 bytes"),
        "{}",
        refused.message()
    );

    // A huge metadata value (getTask's credit) is quoted the same way.
    let mut client = proto::contact_client::ContactClient::new(server.channel().await);
    let mut request = Request::new(proto::Empty::default());
    request
        .metadata_mut()
        .insert(CLIENT_ID_KEY, "w".parse().unwrap());
    request
        .metadata_mut()
        .insert(KEEPALIVE_MS_KEY, "9".repeat(8000).parse().unwrap());
    let refused = within("getTask", client.get_task(request))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().len() < 300,
        "{} bytes",
        refused.message().len()
    );

    let mut worker = TestWorker::connect(&server, WorkerOptions::id("after")).await;
    let id = server.submit("default", "still served").await;
    assert_eq!(worker.next_task().await.task_id, id);
    server.stop().await;
}

/// The bytes of unfinished tasks are bounded server-wide: past
/// `tasks.max_pending_bytes` a submit is RESOURCE_EXHAUSTED naming the key,
/// and a task that finishes (done, or dead-lettered) makes room again.
#[tokio::test]
async fn unfinished_tasks_are_bounded_by_bytes() {
    let mut config = test_config();
    config.tasks.max_pending_bytes = 1024 * 1024;
    config.tasks.max_attempts = 1;
    let server = TestServer::with_config(config).await;
    let mut tasks = server.tasks().await;
    let quarter = |text: &str| v1::SubmitRequest {
        text: text.into(),
        payload: vec![0u8; 256 * 1024 - text.len()].into(),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        let reply = within("submit", tasks.submit(quarter(&format!("q{i}")))).await;
        ids.push(reply.unwrap().into_inner().task_id);
    }
    let refused = within("one too many", tasks.submit(quarter("q4")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("tasks.max_pending_bytes"),
        "{refused:?}"
    );
    let gauge = common::sample(&server.scrape().await, "contact_tasks_unfinished_bytes");
    assert_eq!(gauge, Some(1024.0 * 1024.0));

    // One done and one dead-lettered: room for two again.
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("w").max_in_flight(2)).await;
    for outcome in [Outcome::Done, Outcome::Failed] {
        let task = worker.next_task().await;
        worker.ack(&task.task_id, outcome, "").await;
        server.wait_finished(&task.task_id).await;
    }
    for text in ["q5", "q6"] {
        within("submit after room", tasks.submit(quarter(text)))
            .await
            .unwrap();
    }
    let refused = within("full again", tasks.submit(quarter("q7")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    server.stop().await;
}
