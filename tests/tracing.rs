//! Task tracing through the real server: with `contact_server::task` at
//! debug level, a task's steps from submission through delivery to its ack
//! are events inside one span that carries its id. This binary holds one
//! test and installs the global subscriber, as the daemon does.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{TestServer, TestWorker, WorkerOptions};
use contact_server::proto::{Outcome, v1::TaskState};

/// Keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_task_span_carries_its_id_from_submit_to_ack() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("contact_server::task=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(&server, WorkerOptions::id("traced")).await;
    let id = server.submit("default", "follow me").await;
    assert_eq!(worker.next_task().await.task_id, id);
    worker.ack(&id, Outcome::Done, "done").await;
    assert_eq!(server.wait_finished(&id).await.state(), TaskState::Done);
    server.stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let span = format!("task{{task.id={id} queue=default}}");
    for event in [
        "submitted",
        "dispatched attempt=1 client.id=traced",
        "acknowledged attempt=1 outcome=Done",
    ] {
        assert!(
            text.lines()
                .any(|line| line.contains(&span) && line.contains(event)),
            "no {event:?} event in the task's span:\n{text}"
        );
    }
}
