//! The worker-client: a complete contact-server worker on the client
//! library (`contact_server::client`).
//!
//! It registers (id, queues, credit), runs pushed tasks concurrently up to
//! its credit, acknowledges each, reports its status every few seconds, and
//! on Ctrl-C or SIGTERM (what systemd and Kubernetes send) drains: it takes
//! nothing new, finishes what it holds, and exits. The library confirms
//! receipts, answers keepalives, and redials with backoff and jitter,
//! resuming its session, when the connection drops.
//!
//! ```text
//! cargo run --release                                   # terminal 1: the server
//! cargo run --release --example worker_client -- --id w1 --work-ms 200
//! cargo run --release --bin contactctl -- submit --wait "hello"
//! ```
//!
//! The "work" is a sleep of `--work-ms`; a task whose text starts with
//! "fail" is reported as failed, to see retries and dead letters.

use std::time::Duration;

use clap::Parser;
use contact_server::client::{Credentials, Task, WorkerBuilder};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// A contact-server worker: runs pushed tasks, drains on Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(about = "A contact-server worker: runs pushed tasks, drains on Ctrl-C or SIGTERM.")]
struct Args {
    /// The server's address: host:port, http://host:port or https://host:port.
    #[arg(long, env = "CONTACT_SERVER", default_value = "127.0.0.1:50051")]
    server: String,
    /// This worker's id (without one it cannot resume after a drop).
    #[arg(long)]
    id: Option<String>,
    /// Comma-separated queues to take tasks from.
    #[arg(long, default_value = "default", value_delimiter = ',')]
    queues: Vec<String>,
    /// Most tasks held (and run) at once.
    #[arg(long, default_value_t = 4)]
    max_in_flight: u32,
    /// Simulated work per task, in milliseconds.
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
    /// Seconds between status reports.
    #[arg(long, default_value_t = 5)]
    status_every: u64,
    /// Bearer token, for a server with authentication (the worker role).
    #[arg(long, env = "CONTACT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Speak TLS, trusting the CA certificates in this PEM file.
    #[arg(long, env = "CONTACT_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    #[arg(long, requires = "key_file")]
    cert_file: Option<std::path::PathBuf>,
    #[arg(long, requires = "cert_file")]
    key_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut builder = WorkerBuilder::new(args.server)
        .queues(args.queues)
        .max_in_flight(args.max_in_flight)
        .receipts(true)
        .keepalive(Duration::from_secs(5));
    if let Some(id) = args.id {
        builder = builder.client_id(id);
    }
    if let Some(token) = args.token {
        builder = builder.token(token);
    }
    let mut credentials = Credentials::none();
    if let Some(ca_file) = &args.ca_file {
        credentials = credentials.with_tls(std::fs::read(ca_file)?, None);
    }
    if let (Some(cert), Some(key)) = (&args.cert_file, &args.key_file) {
        credentials =
            credentials.with_client_certificate(std::fs::read(cert)?, std::fs::read(key)?);
    }
    builder = builder.credentials(credentials);
    let mut worker = builder.connect().await?;
    info!(client.id = %worker.client_id(), "registered");

    // Listening starts before the loop takes a task, so a signal from now
    // on drains rather than kills.
    let stop = stop_signal()?;
    let handle = worker.handle();
    tokio::spawn(async move {
        if let Some(name) = stop.await {
            info!("{name}: finishing held tasks, then exiting");
            handle.drain().await;
        }
    });
    let mut status = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    let work_time = Duration::from_millis(args.work_ms);
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            task = worker.next_task() => match task {
                Some(task) => {
                    running.spawn(work(task, work_time));
                }
                None => break,
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = status.tick() => {
                let busy = running.len() as u32;
                let text = if busy == 0 { "idle".to_owned() } else { format!("running {busy} tasks") };
                if let Err(error) = worker.handle().report_status(text, busy).await {
                    warn!(%error, "status report refused");
                }
            }
        }
    }
    while running.join_next().await.is_some() {}
    info!("worker stopped");
    Ok(())
}

/// Resolves, with the signal's name, on the first Ctrl-C (SIGINT) or, on
/// Unix, SIGTERM; `None` if it can no longer listen. The handlers are
/// installed at the call, not when the future is first polled.
#[cfg(unix)]
fn stop_signal() -> anyhow::Result<impl Future<Output = Option<&'static str>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            got = interrupt.recv() => got.map(|()| "Ctrl-C"),
            got = terminate.recv() => got.map(|()| "SIGTERM"),
        }
    })
}

/// Resolves on the first Ctrl-C; `None` if it cannot listen.
#[cfg(not(unix))]
fn stop_signal() -> anyhow::Result<impl Future<Output = Option<&'static str>>> {
    Ok(async { tokio::signal::ctrl_c().await.ok().map(|()| "Ctrl-C") })
}

/// Runs one task and reports how it went.
async fn work(task: Task, work_time: Duration) {
    info!(task.id = %task.id, attempt = task.attempt, text = %task.text, "working");
    tokio::select! {
        () = tokio::time::sleep(work_time) => {}
        () = task.cancelled() => {
            info!(task.id = %task.id, "taken away by the server; stopping");
            return;
        }
    }
    let id = task.id.clone();
    let answer = if task.text.starts_with("fail") {
        task.fail("the task asked to fail").await
    } else {
        let ret = format!(
            "processed {:?} ({} payload bytes)",
            task.text,
            task.payload.len()
        );
        task.done(ret).await
    };
    if let Err(error) = answer {
        warn!(task.id = %id, %error, "acknowledgement refused");
    }
}
