//! The worker-client: a complete contact-server worker.
//!
//! It registers on getTask (id, queues, in-flight limit in metadata), runs
//! pushed tasks concurrently up to its in-flight limit, acknowledges each on
//! tellResult, reports its status on sendStatus every few seconds (logging the
//! server's replies), reconnects with exponential backoff and jitter when the
//! server goes away, and on Ctrl-C finishes what it holds before exiting.
//!
//! ```text
//! cargo run --release                                   # terminal 1: the server
//! cargo run --release --example worker_client -- --id w1 --work-ms 200
//! cargo run --release --bin contactctl -- submit --wait "hello"
//! ```
//!
//! The "work" is a sleep of `--work-ms`; a task whose text starts with
//! "fail" is reported as failed, to see retries and dead letters.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use contact_server::{
    domain::{CLIENT_ID_KEY, MAX_IN_FLIGHT_KEY, QUEUES_KEY},
    proto::{self, Outcome, contact_client::ContactClient},
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Endpoint};
use tracing::{info, warn};

/// A contact-server worker.
#[derive(Debug, Parser)]
struct Args {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// This worker's id (default: a random one chosen by the server).
    #[arg(long)]
    id: Option<String>,
    /// Comma-separated queues to take tasks from.
    #[arg(long, default_value = "default")]
    queues: String,
    /// Most tasks held (and run) at once.
    #[arg(long, default_value_t = 4)]
    max_in_flight: u32,
    /// Simulated work per task, in milliseconds.
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
    /// Seconds between status reports.
    #[arg(long, default_value_t = 5)]
    status_every: u64,
}

/// Reconnect backoff: doubles from `MIN_BACKOFF` up to `MAX_BACKOFF`, each
/// wait drawn at random from its upper half so restarted fleets spread out.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                info!("Ctrl-C: finishing held tasks, then exiting");
            }
            stop.cancel();
        }
    });

    let mut backoff = MIN_BACKOFF;
    while !stop.is_cancelled() {
        match run_session(&args, &stop).await {
            Ok(()) if stop.is_cancelled() => break,
            Ok(()) => {
                info!("server closed the session");
                backoff = MIN_BACKOFF;
            }
            Err(error) => warn!("session failed: {error:#}"),
        }
        let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        info!(wait_ms = wait.as_millis() as u64, "reconnecting");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Ok(())
}

/// One connection's life: register, work, report; returns when the stream
/// ends or, after Ctrl-C, once every held task is acknowledged.
async fn run_session(args: &Args, stop: &CancellationToken) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(args.server.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.server))?;
    let mut client = ContactClient::new(channel);

    let mut request = Request::new(proto::Empty::default());
    if let Some(id) = &args.id {
        request.metadata_mut().insert(CLIENT_ID_KEY, id.parse()?);
    }
    request
        .metadata_mut()
        .insert(QUEUES_KEY, args.queues.parse()?);
    request
        .metadata_mut()
        .insert(MAX_IN_FLIGHT_KEY, args.max_in_flight.to_string().parse()?);
    let response = client.get_task(request).await.context("getTask refused")?;
    let id = response
        .metadata()
        .get(CLIENT_ID_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let mut tasks = response.into_inner();
    info!(client.id = %id, queues = %args.queues, "registered");

    // tellResult: one long call fed by every finished task.
    let (acks, acks_rx) = mpsc::channel::<proto::Result>(args.max_in_flight as usize);
    let mut ack_request = Request::new(ReceiverStream::new(acks_rx));
    ack_request
        .metadata_mut()
        .insert(CLIENT_ID_KEY, id.parse()?);
    let mut ack_client = client.clone();
    let ack_call = tokio::spawn(async move { ack_client.tell_result(ack_request).await });

    // sendStatus: a report every few seconds; each reply is logged.
    let running = Arc::new(AtomicUsize::new(0));
    let status_call = tokio::spawn(report_status(
        client.clone(),
        id.clone(),
        Duration::from_secs(args.status_every.max(1)),
        running.clone(),
    ));

    let mut work = JoinSet::new();
    let result = loop {
        tokio::select! {
            message = tasks.message(), if !stop.is_cancelled() => match message {
                Ok(Some(task)) => {
                    let acks = acks.clone();
                    let running = running.clone();
                    let work_time = Duration::from_millis(args.work_ms);
                    running.fetch_add(1, Ordering::Relaxed);
                    work.spawn(async move {
                        let ack = process(task, work_time).await;
                        running.fetch_sub(1, Ordering::Relaxed);
                        // If tellResult is gone the session is over and the
                        // server hands the task to someone else.
                        let _ = acks.send(ack).await;
                    });
                }
                Ok(None) => break Ok(()),
                Err(status) => break Err(anyhow::anyhow!("getTask ended: {status}")),
            },
            Some(_) = work.join_next(), if !work.is_empty() => {}
            () = stop.cancelled(), if work.is_empty() => break Ok(()),
        }
        if stop.is_cancelled() && work.is_empty() {
            break Ok(());
        }
    };
    // Let held tasks finish (Ctrl-C, or the server draining) before closing.
    while work.join_next().await.is_some() {}
    drop(acks);
    status_call.abort();
    match ack_call.await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => warn!(%status, "tellResult ended with an error"),
        Err(error) => warn!(%error, "tellResult task failed"),
    }
    result
}

/// Runs one task and builds its acknowledgement.
async fn process(task: proto::ServerMsg, work_time: Duration) -> proto::Result {
    info!(task.id = %task.task_id, attempt = task.attempt, text = %task.task, "working");
    tokio::time::sleep(work_time).await;
    let failed = task.task.starts_with("fail");
    proto::Result {
        task_id: task.task_id,
        outcome: if failed {
            Outcome::Failed
        } else {
            Outcome::Done
        }
        .into(),
        ret: format!(
            "processed {:?} ({} payload bytes)",
            task.task,
            task.payload.len()
        ),
        error: if failed {
            "the task asked to fail".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

async fn report_status(
    mut client: ContactClient<tonic::transport::Channel>,
    id: String,
    every: Duration,
    running: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(1);
    let mut request = Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(CLIENT_ID_KEY, id.parse()?);
    let mut replies = client.send_status(request).await?.into_inner();
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let busy = running.load(Ordering::Relaxed);
        let msg = if busy == 0 {
            "idle".to_owned()
        } else {
            format!("running {busy} tasks")
        };
        tx.send(proto::ClientMsg {
            msg,
            running: busy as u32,
            op: None,
        })
        .await?;
        match replies.message().await? {
            Some(reply) => info!(reply = %reply.ret, "status acknowledged"),
            None => return Ok(()),
        }
    }
}
