//! contactctl: submit tasks to, inspect and manage a contact-server from the
//! shell.
//!
//! ```text
//! contactctl submit "resize image 7"                   # prints the task id
//! contactctl submit --queue mail --wait "send report"  # waits for the result
//! contactctl submit --to worker-1 "only for worker-1"
//! contactctl submit --priority 5 --delay-ms 2000 --key order-17 "later, once"
//! contactctl get <TASK_ID>
//! contactctl wait <TASK_ID> --timeout 30
//! contactctl cancel <TASK_ID>
//! contactctl dead-letters --queue mail
//! contactctl requeue <TASK_ID>
//! contactctl workers
//! contactctl queues
//! contactctl drain worker-1          # no new tasks; it ends once it acked what it holds
//! contactctl disconnect worker-1     # now; its tasks go to other workers
//! contactctl health                  # SERVING, or NOT_SERVING while draining
//! contactctl --json workers          # any command: JSON for scripts
//! ```
//!
//! Output goes to stdout: human tables by default, one JSON document with
//! `--json`. Exits 0 on success, 1 on any error (with a message on stderr),
//! 2 when a waited-for task was dead-lettered, and 3 when `health` finds the
//! server not serving.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use contact_server::{
    client::{self, ClientError, Credentials, Producer, Submission},
    proto::v1::{self, TaskState, admin_client::AdminClient, tasks_client::TasksClient},
};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Submit tasks to, inspect and manage a contact-server from the shell.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Submit tasks to, inspect and manage a contact-server from the shell."
)]
struct Args {
    /// The server's address: host:port, http://host:port or https://host:port.
    #[arg(
        long,
        short,
        env = "CONTACT_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The bearer token, for a server with authentication (the role the
    /// command needs: producer to submit and read, admin to manage).
    #[arg(long, env = "CONTACT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Speak TLS, trusting the CA certificates in this PEM file.
    #[arg(long, env = "CONTACT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// A client certificate (PEM) for mutual TLS, with --key-file.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Submit one task and print its id (or, with --wait, its result).
    Submit {
        /// The task's text (what seed clients see).
        text: String,
        /// The queue to submit to.
        #[arg(long, short, conflicts_with = "to")]
        queue: Option<String>,
        /// Send the task to this one worker instead of a queue.
        #[arg(long)]
        to: Option<String>,
        /// A file whose bytes become the task's payload.
        #[arg(long)]
        payload_file: Option<PathBuf>,
        /// Wait for the task to finish and print its result.
        #[arg(long, short)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Higher runs first.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        priority: i32,
        /// Deliver no sooner than this many milliseconds from now.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Dead-letter it if no worker starts it within this many milliseconds.
        #[arg(long, default_value_t = 0)]
        ttl_ms: u64,
        /// Idempotency key: resubmitting it returns the first task's id.
        #[arg(long)]
        key: Option<String>,
    },
    /// Print a task's state and result.
    Get {
        /// The task id.
        task_id: String,
    },
    /// Wait for a task to finish and print it.
    Wait {
        /// The task id.
        task_id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Cancel a task that is not finished.
    Cancel {
        /// The task id.
        task_id: String,
    },
    /// List dead-lettered tasks, oldest first.
    DeadLetters {
        /// Only this queue's.
        #[arg(long, short)]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Remove dead letters for good (one queue's, or all).
    PurgeDeadLetters {
        /// Only this queue's.
        #[arg(long, short)]
        queue: Option<String>,
    },
    /// Put a dead-lettered task back in its queue.
    Requeue {
        /// The task id.
        task_id: String,
    },
    /// List the connected workers.
    Workers,
    /// List the queues with pending tasks, waiting workers or dead letters.
    Queues,
    /// Drain one worker: no new tasks; its stream ends once it acked what it holds.
    Drain {
        /// The worker's client id.
        client_id: String,
    },
    /// Disconnect one worker now; the tasks it holds go to other workers.
    Disconnect {
        /// The worker's client id.
        client_id: String,
    },
    /// Ask grpc.health.v1 whether the server (or one service) is serving;
    /// exits 3 when it answers NOT_SERVING, as it does while draining.
    Health {
        /// One service's name (e.g. contact.v1.Tasks); the whole server if omitted.
        #[arg(long, default_value = "")]
        service: String,
    },
}

/// The exit code of `health` when the server answers but is not serving.
const EXIT_NOT_SERVING: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("contactctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(server: &str, credentials: &Credentials) -> anyhow::Result<Channel> {
    client::dial(server, credentials)
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

/// A client-library error as contactctl prints every failed call: a
/// refusal worded by tonic, like the admin and health calls' own.
fn call_error(error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Status(status) => status.into(),
        other => other.into(),
    }
}

/// Where output goes: a table for people, or JSON for scripts.
struct Out {
    json: bool,
}

impl Out {
    fn value(&self, value: &Value, human: impl FnOnce()) {
        if self.json {
            println!("{value}");
        } else {
            human();
        }
    }

    fn task(&self, info: &v1::TaskInfo) {
        self.value(&task_json(info), || print_task(info));
    }

    fn tasks(&self, tasks: &[v1::TaskInfo]) {
        let value = Value::Array(tasks.iter().map(task_json).collect());
        self.value(&value, || {
            println!(
                "{:<38} {:<16} {:>8} {:<20} ERROR",
                "TASK ID", "QUEUE", "ATTEMPTS", "REASON"
            );
            for task in tasks {
                println!(
                    "{:<38} {:<16} {:>8} {:<20} {}",
                    task.task_id, task.queue, task.attempts, task.dead_letter_reason, task.error
                );
            }
        });
    }

    fn message(&self, message: &str) {
        self.value(&json!({ "message": message }), || println!("{message}"));
    }
}

fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Unspecified => "unknown",
        TaskState::Pending => "pending",
        TaskState::Delivered => "delivered",
        TaskState::Done => "done",
        TaskState::DeadLettered => "dead-lettered",
        TaskState::Cancelled => "cancelled",
    }
}

fn task_json(info: &v1::TaskInfo) -> Value {
    json!({
        "task_id": info.task_id,
        "state": state_name(info.state()),
        "queue": info.queue,
        "target_client_id": info.target_client_id,
        "attempts": info.attempts,
        "worker_id": info.worker_id,
        "ret": info.ret,
        "output_bytes": info.output.len(),
        "error": info.error,
        "priority": info.priority,
        "not_before_unix_ms": info.not_before_unix_ms,
        "dead_letter_reason": info.dead_letter_reason,
        "broadcast_id": info.broadcast_id,
    })
}

fn worker_json(w: &v1::Worker) -> Value {
    json!({
        "client_id": w.client_id,
        "peer": w.peer,
        "queues": w.queues,
        "max_in_flight": w.max_in_flight,
        "in_flight": w.in_flight,
        "connected_unix_ms": w.connected_unix_ms,
        "last_status": w.last_status,
        "last_heard_unix_ms": w.last_heard_unix_ms,
        "reported_running": w.reported_running,
        "detached": w.detached,
    })
}

fn queue_json(q: &v1::QueueStats) -> Value {
    json!({
        "name": q.name,
        "pending": q.pending,
        "ready": q.ready,
        "waiting_workers": q.waiting_workers,
        "oldest_ready_age_ms": q.oldest_ready_age_ms,
        "dead_letters": q.dead_letters,
    })
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut credentials = Credentials::none();
    if let Some(ca_file) = &args.ca_file {
        let pem =
            std::fs::read(ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
        credentials = credentials.with_tls(pem, args.tls_domain.as_deref());
    }
    if let (Some(cert_file), Some(key_file)) = (&args.cert_file, &args.key_file) {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        credentials = credentials.with_client_certificate(read(cert_file)?, read(key_file)?);
    }
    if let Some(token) = &args.token {
        credentials = credentials.with_bearer(token)?;
    }
    let channel = connect(&args.server, &credentials).await?;
    let mut producer = Producer::from_channel_with(channel.clone(), credentials.clone());
    let mut tasks = TasksClient::new(credentials.channel(channel.clone()));
    let mut health = HealthClient::new(channel.clone());
    let mut admin = AdminClient::new(credentials.channel(channel));
    let out = Out { json: args.json };
    match args.command {
        Cmd::Submit {
            text,
            queue,
            to,
            payload_file,
            wait,
            timeout,
            priority,
            delay_ms,
            ttl_ms,
            key,
        } => {
            let payload = match payload_file {
                Some(path) => std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => Vec::new(),
            };
            let mut submission = match to {
                Some(client_id) => Submission::to_worker(client_id),
                None => Submission::to_queue(queue.unwrap_or_default()),
            }
            .text(text)
            .payload(payload)
            .priority(priority)
            .ttl(Duration::from_millis(ttl_ms));
            if delay_ms > 0 {
                submission = submission.delay(Duration::from_millis(delay_ms));
            }
            if let Some(key) = key {
                submission = submission.idempotency_key(key);
            }
            let task_id = producer
                .submit(submission)
                .await
                .map_err(call_error)
                .context("submit failed")?;
            if wait {
                return wait_and_print(&mut producer, &out, task_id, timeout).await;
            }
            out.value(&json!({ "task_id": task_id }), || {
                println!("{task_id}");
            });
        }
        Cmd::Get { task_id } => {
            let info = producer
                .get(&task_id)
                .await
                .map_err(call_error)
                .context("get failed")?;
            out.task(&info);
        }
        Cmd::Wait { task_id, timeout } => {
            return wait_and_print(&mut producer, &out, task_id, timeout).await;
        }
        Cmd::Cancel { task_id } => {
            let info = producer
                .cancel(&task_id)
                .await
                .map_err(call_error)
                .context("cancel failed")?;
            out.task(&info);
        }
        Cmd::DeadLetters { queue, limit } => {
            let dead = tasks
                .list_dead_letters(v1::ListDeadLettersRequest {
                    queue: queue.unwrap_or_default(),
                    limit,
                })
                .await
                .context("listing dead letters failed")?
                .into_inner()
                .tasks;
            out.tasks(&dead);
        }
        Cmd::PurgeDeadLetters { queue } => {
            let purged = admin
                .purge_dead_letters(v1::PurgeDeadLettersRequest {
                    queue: queue.unwrap_or_default(),
                })
                .await
                .context("purging dead letters failed")?
                .into_inner()
                .purged;
            out.value(&serde_json::json!({ "purged": purged }), || {
                println!("{purged} dead letters purged");
            });
        }
        Cmd::Requeue { task_id } => {
            let info = tasks
                .requeue(v1::RequeueRequest { task_id })
                .await
                .context("requeue failed")?
                .into_inner();
            out.task(&info);
        }
        Cmd::Workers => {
            let workers = admin
                .list_workers(v1::ListWorkersRequest {})
                .await
                .context("listing workers failed")?
                .into_inner()
                .workers;
            let value = Value::Array(workers.iter().map(worker_json).collect());
            let now = contact_server::clock::unix_ms_now();
            out.value(&value, || {
                println!(
                    "{:<38} {:<22} {:<16} {:>9} {:>8} {:>8} STATUS",
                    "CLIENT ID", "PEER", "QUEUES", "IN FLIGHT", "AGE", "HEARD"
                );
                for w in &workers {
                    println!(
                        "{:<38} {:<22} {:<16} {:>4}/{:<4} {:>8} {:>8} {}{}",
                        w.client_id,
                        w.peer,
                        w.queues.join(","),
                        w.in_flight,
                        w.max_in_flight,
                        since(now, w.connected_unix_ms),
                        format!("{} ago", since(now, w.last_heard_unix_ms)),
                        w.last_status,
                        if w.detached { " (detached)" } else { "" }
                    );
                }
            });
        }
        Cmd::Queues => {
            let queues = admin
                .list_queues(v1::ListQueuesRequest {})
                .await
                .context("listing queues failed")?
                .into_inner()
                .queues;
            let value = Value::Array(queues.iter().map(queue_json).collect());
            out.value(&value, || {
                println!(
                    "{:<24} {:>10} {:>10} {:>12} {:>8} {:>6}",
                    "QUEUE", "PENDING", "READY", "OLDEST_MS", "WAITING", "DEAD"
                );
                for q in &queues {
                    println!(
                        "{:<24} {:>10} {:>10} {:>12} {:>8} {:>6}",
                        q.name,
                        q.pending,
                        q.ready,
                        q.oldest_ready_age_ms,
                        q.waiting_workers,
                        q.dead_letters
                    );
                }
            });
        }
        Cmd::Drain { client_id } => {
            let reply = admin
                .drain_worker(v1::WorkerRequest { client_id })
                .await
                .context("drain failed")?
                .into_inner();
            out.message(&reply.message);
        }
        Cmd::Disconnect { client_id } => {
            let reply = admin
                .disconnect_worker(v1::WorkerRequest { client_id })
                .await
                .context("disconnect failed")?
                .into_inner();
            out.message(&reply.message);
        }
        Cmd::Health { service } => {
            let status = health
                .check(HealthCheckRequest {
                    service: service.clone(),
                })
                .await
                .context("health check failed")?
                .into_inner()
                .status();
            let name = status.as_str_name();
            out.value(&json!({ "service": service, "status": name }), || {
                println!("{name}");
            });
            if status != ServingStatus::Serving {
                return Ok(ExitCode::from(EXIT_NOT_SERVING));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_and_print(
    producer: &mut Producer,
    out: &Out,
    task_id: String,
    timeout_secs: u64,
) -> anyhow::Result<ExitCode> {
    if timeout_secs == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let timeout = Duration::from_secs(timeout_secs);
    let info = producer
        .wait(&task_id, timeout)
        .await
        .map_err(call_error)
        .context("wait failed")?;
    out.task(&info);
    Ok(if info.state() == TaskState::DeadLettered {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_task(info: &v1::TaskInfo) {
    println!("task:     {}", info.task_id);
    println!("state:    {}", state_name(info.state()));
    if info.target_client_id.is_empty() {
        println!("queue:    {}", info.queue);
    } else {
        println!("target:   {}", info.target_client_id);
    }
    println!("attempts: {}", info.attempts);
    if !info.worker_id.is_empty() {
        println!("worker:   {}", info.worker_id);
    }
    if !info.ret.is_empty() {
        println!("result:   {}", info.ret);
    }
    if !info.output.is_empty() {
        println!("output:   {} bytes", info.output.len());
    }
    if !info.error.is_empty() {
        println!("error:    {}", info.error);
    }
    if !info.dead_letter_reason.is_empty() {
        println!("reason:   {}", info.dead_letter_reason);
    }
}

/// A short human duration from `then` to `now` (ms since the Unix epoch).
fn since(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}
