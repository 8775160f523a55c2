//! A quick end-to-end throughput check: starts contact-server in-process on
//! loopback, connects W workers that acknowledge every task at once, and
//! pipelines N tasks through one `SubmitStream`. Prints tasks per second
//! from the first submit to the last acknowledgement.
//!
//! ```text
//! cargo run --release --example throughput -- --tasks 200000 --workers 4 --in-flight 256
//! ```
//!
//! It is a smoke measurement for development, not the project's benchmark;
//! it exits non-zero if any task is not acknowledged exactly once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, ensure};
use clap::Parser;
use contact_server::{
    Config, Listeners,
    domain::{CLIENT_ID_KEY, MAX_IN_FLIGHT_KEY},
    proto::{self, contact_client::ContactClient, v1, v1::tasks_client::TasksClient},
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Endpoint};

#[derive(Debug, Parser)]
struct Args {
    /// Tasks to push through.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Connected workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Each worker's in-flight limit.
    #[arg(long, default_value_t = 256)]
    in_flight: u32,
    /// Payload bytes per task.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = Config::default();
    // The delivery path alone: contact-bench measures the journal's cost.
    config.storage.mode = contact_server::config::StorageMode::Memory;
    config.server.grpc_addr = "127.0.0.1:0".parse()?;
    config.server.metrics_addr = "127.0.0.1:0".parse()?;
    config.server.drain_timeout_secs = 1;
    config.tasks.max_finished_tasks = args.tasks as usize;
    let server = contact_server::start(config.clone(), Listeners::bind(&config).await?)?;
    let url = format!("http://{}", server.grpc_addr());

    let acked = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    // Once every ack is sent, workers close tellResult; each call answers
    // only after the server applied all of that worker's acks.
    let close_acks = CancellationToken::new();
    let mut ack_calls = Vec::new();
    for i in 0..args.workers {
        let channel = Endpoint::from_shared(url.clone())?.connect().await?;
        let mut client = ContactClient::new(channel);
        let mut request = Request::new(proto::Empty::default());
        request
            .metadata_mut()
            .insert(CLIENT_ID_KEY, format!("bench-{i}").parse()?);
        request
            .metadata_mut()
            .insert(MAX_IN_FLIGHT_KEY, args.in_flight.to_string().parse()?);
        let mut tasks = client.get_task(request).await?.into_inner();
        let (acks, acks_rx) = mpsc::channel(args.in_flight as usize);
        let mut ack_request = Request::new(ReceiverStream::new(acks_rx));
        ack_request
            .metadata_mut()
            .insert(CLIENT_ID_KEY, format!("bench-{i}").parse()?);
        let mut ack_client = client.clone();
        ack_calls.push(tokio::spawn(async move {
            ack_client.tell_result(ack_request).await
        }));
        let acked = acked.clone();
        let done_tx = done_tx.clone();
        let total = args.tasks;
        let close_acks = close_acks.clone();
        tokio::spawn(async move {
            loop {
                let task = tokio::select! {
                    () = close_acks.cancelled() => break,
                    message = tasks.message() => match message {
                        Ok(Some(task)) => task,
                        _ => break,
                    },
                };
                let ack = proto::Result {
                    task_id: task.task_id,
                    ..Default::default()
                };
                if acks.send(ack).await.is_err() {
                    break;
                }
                if acked.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    let _ = done_tx.send(()).await;
                }
            }
        });
    }
    drop(done_tx);

    let mut producer = TasksClient::new(Endpoint::from_shared(url)?.connect().await?);
    let payload = bytes::Bytes::from(vec![0x5a; args.payload]);
    let total = args.tasks;
    let requests = tokio_stream::iter((0..total).map(move |_| v1::SubmitRequest {
        payload: payload.clone(),
        ..Default::default()
    }));
    let started = Instant::now();
    let mut replies = producer.submit_stream(requests).await?.into_inner();
    let mut accepted = 0u64;
    while let Some(reply) = replies.message().await? {
        ensure!(reply.error.is_none(), "submit refused: {:?}", reply.error);
        accepted += 1;
    }
    let submitted_in = started.elapsed();
    tokio::time::timeout(Duration::from_secs(300), done_rx.recv())
        .await
        .context("timed out waiting for the last acknowledgement")?;
    close_acks.cancel();
    for call in ack_calls {
        call.await?.context("tellResult failed")?;
    }
    let elapsed = started.elapsed();
    ensure!(
        accepted == total,
        "{accepted} of {total} submissions accepted"
    );
    println!(
        "{total} tasks of {} bytes, {} workers x {} in flight: submitted in {:.2} s, \
         all acknowledgements applied in {:.2} s = {:.0} tasks/s",
        args.payload,
        args.workers,
        args.in_flight,
        submitted_in.as_secs_f64(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    server.shutdown();
    server.wait().await?;
    ensure!(
        acked.load(Ordering::Relaxed) == total,
        "acknowledged {} of {total}",
        acked.load(Ordering::Relaxed)
    );
    Ok(())
}
