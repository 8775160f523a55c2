//! A producer on the client library: submits tasks (one, or a pipelined
//! batch), waits for their results, and can cancel or broadcast.
//!
//! ```text
//! cargo run --release                                       # the server
//! cargo run --release --example worker_client -- --id w1    # a worker
//! cargo run --release --example producer -- --count 10 "resize image"
//! cargo run --release --example producer -- --broadcast "reload config"
//! ```

use std::time::Duration;

use clap::Parser;
use contact_server::client::{Producer, Submission};
use futures_util::stream;

/// Submits tasks to contact-server and prints their results.
#[derive(Debug, Parser)]
#[command(about = "Submits tasks to contact-server and prints their results.")]
struct Args {
    /// The server's address: host:port, http://host:port or https://host:port.
    #[arg(long, env = "CONTACT_SERVER", default_value = "127.0.0.1:50051")]
    server: String,
    /// The queue to submit to.
    #[arg(long, default_value = "default")]
    queue: String,
    /// How many tasks to submit (numbered after the text), pipelined.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Seconds to wait for each result.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Cancel the tasks instead of waiting for them.
    #[arg(long)]
    cancel: bool,
    /// Send one copy to every worker of the queue instead.
    #[arg(long)]
    broadcast: bool,
    /// The task text.
    text: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut producer = Producer::connect(&args.server).await?;
    if args.broadcast {
        let reply = producer
            .broadcast(&args.queue, args.text, Vec::new())
            .await?;
        println!(
            "broadcast {} ({} copies)",
            reply.broadcast_id, reply.copy_count
        );
        for copy in reply.copies {
            println!("  {} for {}", copy.task_id, copy.client_id);
        }
        return Ok(());
    }
    let submissions: Vec<Submission> = (1..=args.count)
        .map(|i| Submission::to_queue(&args.queue).text(format!("{} {i}", args.text)))
        .collect();
    let answers = producer.submit_all(stream::iter(submissions)).await?;
    for answer in answers {
        let id = match answer {
            Ok(id) => id,
            Err(error) => {
                eprintln!("refused: {error}");
                continue;
            }
        };
        let info = if args.cancel {
            producer.cancel(&id).await?
        } else {
            producer
                .wait(&id, Duration::from_secs(args.timeout))
                .await?
        };
        println!(
            "{id}  {:?}  attempts {}  worker {}  {}{}",
            info.state(),
            info.attempts,
            info.worker_id,
            info.ret,
            info.error
        );
    }
    Ok(())
}
