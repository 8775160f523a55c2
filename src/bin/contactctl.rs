//! contactctl: submit tasks and inspect a contact-server from the shell.
//!
//! ```text
//! contactctl submit "resize image 7"                   # prints the task id
//! contactctl submit --queue mail --wait "send report"  # waits for the result
//! contactctl submit --to worker-1 "only for worker-1"
//! contactctl submit --priority 5 --delay-ms 2000 --key order-17 "later, once"
//! contactctl get <TASK_ID>
//! contactctl cancel <TASK_ID>
//! contactctl dead-letters --queue mail
//! contactctl requeue <TASK_ID>
//! contactctl wait <TASK_ID> --timeout 30
//! contactctl workers
//! ```
//!
//! Exits 0 on success, 1 on any error (with a message on stderr), and 2 when
//! a waited-for task was dead-lettered.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use contact_server::proto::v1::{
    self, TaskState, admin_client::AdminClient, tasks_client::TasksClient,
};
use tonic::transport::{Channel, Endpoint};

/// Submit tasks to and inspect a contact-server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server's gRPC address.
    #[arg(
        long,
        short,
        env = "CONTACT_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
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
    /// Put a dead-lettered task back in its queue.
    Requeue {
        /// The task id.
        task_id: String,
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
    /// List the connected workers.
    Workers,
}

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

async fn connect(server: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("{server:?} is not a valid server address"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let channel = connect(&args.server).await?;
    let mut tasks = TasksClient::new(channel.clone());
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
            let reply = tasks
                .submit(v1::SubmitRequest {
                    queue: queue.unwrap_or_default(),
                    target_client_id: to.unwrap_or_default(),
                    text,
                    payload: payload.into(),
                    priority,
                    not_before_unix_ms: match delay_ms {
                        0 => 0,
                        ms => unix_ms_now().saturating_add(ms),
                    },
                    ttl_ms,
                    idempotency_key: key.unwrap_or_default(),
                    lease_ms: 0,
                })
                .await
                .context("submit failed")?
                .into_inner();
            if !wait {
                println!("{}", reply.task_id);
                return Ok(ExitCode::SUCCESS);
            }
            wait_and_print(&mut tasks, reply.task_id, timeout).await
        }
        Cmd::Get { task_id } => {
            let info = tasks
                .get(v1::GetRequest { task_id })
                .await
                .context("get failed")?
                .into_inner();
            print_task(&info);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Wait { task_id, timeout } => wait_and_print(&mut tasks, task_id, timeout).await,
        Cmd::Cancel { task_id } => {
            let info = tasks
                .cancel(v1::CancelRequest { task_id })
                .await
                .context("cancel failed")?
                .into_inner();
            print_task(&info);
            Ok(ExitCode::SUCCESS)
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
            println!(
                "{:<38} {:<16} {:>8} {:<20} ERROR",
                "TASK ID", "QUEUE", "ATTEMPTS", "REASON"
            );
            for task in dead {
                println!(
                    "{:<38} {:<16} {:>8} {:<20} {}",
                    task.task_id, task.queue, task.attempts, task.dead_letter_reason, task.error
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Requeue { task_id } => {
            let info = tasks
                .requeue(v1::RequeueRequest { task_id })
                .await
                .context("requeue failed")?
                .into_inner();
            print_task(&info);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Workers => {
            let workers = AdminClient::new(channel)
                .list_workers(v1::ListWorkersRequest {})
                .await
                .context("listing workers failed")?
                .into_inner()
                .workers;
            println!(
                "{:<38} {:<22} {:<16} {:>9} {:<}",
                "CLIENT ID", "PEER", "QUEUES", "IN FLIGHT", "STATUS"
            );
            for w in workers {
                println!(
                    "{:<38} {:<22} {:<16} {:>4}/{:<4} {}",
                    w.client_id,
                    w.peer,
                    w.queues.join(","),
                    w.in_flight,
                    w.max_in_flight,
                    w.last_status
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn wait_and_print(
    tasks: &mut TasksClient<Channel>,
    task_id: String,
    timeout_secs: u64,
) -> anyhow::Result<ExitCode> {
    if timeout_secs == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let info = tasks
        .wait(v1::WaitRequest {
            task_id,
            timeout_ms: timeout_secs.saturating_mul(1000),
        })
        .await
        .context("wait failed")?
        .into_inner();
    print_task(&info);
    Ok(if info.state() == TaskState::DeadLettered {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_task(info: &v1::TaskInfo) {
    let state = match info.state() {
        TaskState::Unspecified => "unknown",
        TaskState::Pending => "pending",
        TaskState::Delivered => "delivered",
        TaskState::Done => "done",
        TaskState::DeadLettered => "dead-lettered",
        TaskState::Cancelled => "cancelled",
    };
    println!("task:     {}", info.task_id);
    println!("state:    {state}");
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

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
