//! contact-bench: the benchmark. It starts contact-server as a child process
//! (and a raw-tonic ceiling server beside it), drives the real protocol, and
//! prints every figure beside the ceiling measured in the same run, with the
//! CPU seconds and peak memory of each side, against the project's targets.
//!
//! ```text
//! cargo build --release
//! ./target/release/contact-bench                      # every scenario
//! ./target/release/contact-bench --scenario saturation --tasks 2000000
//! ./target/release/contact-bench --quick              # seconds; checks nothing is lost
//! ```
//!
//! It is a measurement, not a test: only `--quick` fails, and only when a
//! task was not completed.

// The benchmark measures wall time, partly on plain threads outside any
// runtime (the open-loop pacer), and never runs under a paused clock.
#![allow(clippy::disallowed_types)]

mod ceiling;
mod load;
mod procs;
mod scenarios;
mod security;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use contact_server::proto::v1::{self, tasks_client::TasksClient};
use tokio_util::sync::CancellationToken;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;

use procs::{Proc, Usage};

/// Benchmarks contact-server against a raw-tonic ceiling measured in the same run.
#[derive(Debug, Parser)]
#[command(version, about = "Benchmarks contact-server against a tonic ceiling.")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A few seconds of every scenario with small numbers; exits non-zero if
    /// any task is lost. No speed is asserted.
    #[arg(long)]
    quick: bool,
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// The contact-server binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Saturation: tasks to push through.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u64,
    /// Producers on SubmitStream.
    #[arg(long, default_value_t = 2)]
    producers: u64,
    /// Workers on getTask / tellResult.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Each worker's credit (in-flight limit).
    #[arg(long, default_value_t = 256)]
    credit: u32,
    /// Payload bytes per task.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Fixed load: the open-loop rate, tasks per second.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Fixed load: seconds per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connection scale: idle workers, one run per number.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    idle_workers: Vec<usize>,
    /// Deep queue: tasks queued with no worker.
    #[arg(long, default_value_t = 1_000_000)]
    deep_tasks: u64,
    /// Churn: tasks pushed while workers come and go.
    #[arg(long, default_value_t = 1_000_000)]
    churn_tasks: u64,
    /// Churn: one worker drops its connection every this many milliseconds.
    #[arg(long, default_value_t = 50)]
    churn_every_ms: u64,
    /// The journal's steady run lasts this many seconds.
    #[arg(long, default_value_t = 600)]
    steady_secs: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Internal: run the raw-tonic ceiling server (the benchmark starts it).
    CeilingServer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Saturation,
    Fixed,
    Scale,
    Deep,
    Churn,
    Journal,
    Security,
}

impl Args {
    fn runs(&self, scenario: Scenario) -> bool {
        self.scenario == Scenario::All || self.scenario == scenario
    }

    /// The quick mode's small numbers.
    fn quick(mut self) -> Self {
        self.tasks = 5_000;
        self.rate = 500.0;
        self.seconds = 1;
        self.idle_workers = vec![50];
        self.deep_tasks = 5_000;
        self.churn_tasks = 3_000;
        self.churn_every_ms = 20;
        self.steady_secs = 2;
        self
    }
}

// Memory mode: these scenarios measure the delivery path beside the
// ceiling; the journal's cost is measured on its own.
/// The journal scenarios' config: [`SERVER_CONFIG`] on a journal in `dir`
/// with the given sync policy.
fn journal_config(dir: &std::path::Path, sync: &str) -> String {
    SERVER_CONFIG.replace(
        "mode = \"memory\"",
        &format!(
            "mode = \"journal\"\ndir = {:?}\nsync = \"{sync}\"",
            dir.display().to_string()
        ),
    )
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

const SERVER_CONFIG: &str = r#"
[storage]
mode = "memory"
[server]
drain_timeout_secs = 1
[workers]
resume_grace_secs = 0
[tasks]
max_queue_depth = 2000000
max_pending_tasks = 3000000
max_finished_tasks = 10000
"#;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::CeilingServer) => ceiling::serve().await,
        None if args.quick => run(args.quick()).await,
        None => run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("contact-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One line of the report.
struct Row {
    name: String,
    value: String,
    versus_ceiling: String,
    target: String,
}

struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, name: &str, value: String, versus_ceiling: String, target: String) {
        println!("  {name}: {value}  {versus_ceiling}  {target}");
        self.rows.push(Row {
            name: name.into(),
            value,
            versus_ceiling,
            target,
        });
    }

    fn print(&self) {
        println!("\n| figure | value | vs raw-tonic ceiling | target |");
        println!("|---|---|---|---|");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} |",
                row.name, row.value, row.versus_ceiling, row.target
            );
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn millis(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn usage_line(label: &str, usage: Usage, bench: Usage) -> String {
    format!(
        "{label}: server {:.1} CPU s, peak RSS {:.1} MiB; load generator {:.1} CPU s",
        usage.cpu_secs,
        usage.peak_rss_kib as f64 / 1024.0,
        bench.cpu_secs
    )
}

async fn run(args: Args) -> anyhow::Result<()> {
    let server_bin = procs::server_bin(args.server_bin.clone())?;
    let dir = TempDir::new()?;
    let dir = dir.path();
    let me = std::process::id().to_string();
    let mut report = Report { rows: Vec::new() };
    println!(
        "contact-bench: {} tasks of {} bytes, {} producers, {} workers x {} credit{}",
        args.tasks,
        args.size,
        args.producers,
        args.workers,
        args.credit,
        if args.quick { " (quick)" } else { "" }
    );

    let ceiling = Proc::ceiling_server()?;
    let mut ceiling_rate = None;
    if args.runs(Scenario::Saturation) {
        println!("saturation");
        let before = (ceiling.usage()?, Usage::of(&me)?);
        let raw =
            ceiling::saturation(&ceiling.url(), args.tasks, args.workers as u64, args.size).await?;
        let raw_usage = (
            ceiling.usage()?.since(before.0),
            Usage::of(&me)?.since(before.1),
        );
        println!("  {}", usage_line("ceiling", raw_usage.0, raw_usage.1));
        ceiling_rate = Some(raw);

        let server = Proc::contact_server(&server_bin, SERVER_CONFIG, dir)?;
        let before = (server.usage()?, Usage::of(&me)?);
        let rate = scenarios::saturation(
            &server.url(),
            args.tasks,
            args.producers,
            args.workers,
            args.credit,
            args.size,
        )
        .await?;
        let used = (
            server.usage()?.since(before.0),
            Usage::of(&me)?.since(before.1),
        );
        println!("  {}", usage_line("contact-server", used.0, used.1));
        report.add(
            "raw tonic ceiling (push + ack)",
            format!("{raw:.0} tasks/s"),
            "1.00".into(),
            String::new(),
        );
        let ratio = rate / raw;
        report.add(
            "saturation",
            format!("{rate:.0} tasks/s"),
            format!("{ratio:.2}"),
            format!(">= 0.25 of ceiling: {}", verdict(ratio >= 0.25)),
        );
        server.stop(Duration::from_secs(10))?;
    }

    if args.runs(Scenario::Fixed) {
        println!("fixed load");
        let duration = Duration::from_secs(args.seconds);
        let mut rates = vec![(args.rate, 0.3, "p99 submit->receipt <= 0.3 ms")];
        if let Some(saturation) = ceiling_rate.and_then(|_| report.rows.get(1)) {
            let half = saturation
                .value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v / 2.0);
            if let Some(half) = half.filter(|_| !args.quick) {
                rates.push((half, 2.0, "p99 submit->receipt <= 2 ms"));
            }
        }
        for (rate, target_ms, target) in rates {
            let raw = ceiling::latency(&ceiling.url(), rate as u64, duration, args.size).await?;
            let server = Proc::contact_server(&server_bin, SERVER_CONFIG, dir)?;
            let measured = scenarios::fixed_load(
                &server.url(),
                rate,
                duration,
                args.workers,
                args.credit,
                args.size,
            )
            .await?;
            server.stop(Duration::from_secs(10))?;
            for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
                let receipt = millis(&measured.receipt, q);
                let ack = millis(&measured.ack, q);
                let ceiling_ms = millis(&raw, q);
                let target = if label == "p99" {
                    format!("{target}: {}", verdict(receipt <= target_ms))
                } else {
                    String::new()
                };
                report.add(
                    &format!("{rate:.0}/s {label} submit->receipt"),
                    format!("{receipt:.3} ms"),
                    format!(
                        "{:.1}x ceiling push ({ceiling_ms:.3} ms)",
                        receipt / ceiling_ms.max(0.001)
                    ),
                    target,
                );
                report.add(
                    &format!("{rate:.0}/s {label} submit->ack (1 in 10 sampled)"),
                    format!("{ack:.3} ms"),
                    String::new(),
                    String::new(),
                );
            }
            println!("  {} tasks measured", measured.sent);
        }
    }
    ceiling.stop(Duration::from_secs(5)).ok();

    if args.runs(Scenario::Scale) {
        println!("connection scale");
        for &workers in &args.idle_workers {
            let server = Proc::contact_server(&server_bin, SERVER_CONFIG, dir)?;
            let scale = scenarios::scale(&server, workers).await?;
            let kib = scale.rss_per_worker_bytes / 1024.0;
            report.add(
                &format!("{workers} idle workers: RSS per worker"),
                format!("{kib:.1} KiB"),
                String::new(),
                if workers >= 10_000 {
                    format!("<= 16 KiB: {}", verdict(kib <= 16.0))
                } else {
                    String::new()
                },
            );
            report.add(
                &format!("{workers} idle workers: targeted task delivery"),
                format!("{:.3} ms", scale.targeted_latency.as_secs_f64() * 1000.0),
                String::new(),
                String::new(),
            );
            server.stop(Duration::from_secs(10))?;
        }
    }

    if args.runs(Scenario::Deep) {
        println!("deep queue");
        let server = Proc::contact_server(&server_bin, SERVER_CONFIG, dir)?;
        let deep =
            scenarios::deep_queue(&server, args.deep_tasks, 64, args.workers, args.credit).await?;
        let peak = server.usage()?.peak_rss_kib;
        report.add(
            &format!(
                "{} queued 64-byte tasks: RSS per task beyond payload",
                args.deep_tasks
            ),
            format!("{:.0} B", deep.bytes_per_task_beyond_payload),
            String::new(),
            format!(
                "<= 256 B: {} (peak RSS {:.0} MiB)",
                verdict(deep.bytes_per_task_beyond_payload <= 256.0),
                peak as f64 / 1024.0
            ),
        );
        report.add(
            "deep queue: drain rate",
            format!("{:.0} tasks/s", deep.drain_rate),
            ceiling_rate
                .map(|raw| format!("{:.2}", deep.drain_rate / raw))
                .unwrap_or_default(),
            String::new(),
        );
        server.stop(Duration::from_secs(10))?;
    }

    if args.runs(Scenario::Churn) {
        println!("churn");
        let server = Proc::contact_server(&server_bin, SERVER_CONFIG, dir)?;
        let churn = scenarios::churn(
            &server,
            args.churn_tasks,
            args.workers,
            args.credit,
            Duration::from_millis(args.churn_every_ms),
        )
        .await?;
        let lost = args.churn_tasks.saturating_sub(churn.done);
        report.add(
            &format!("churn ({} reconnects)", churn.reconnects),
            format!("{:.0} tasks/s, {lost} lost", churn.throughput),
            ceiling_rate
                .map(|raw| format!("{:.2}", churn.throughput / raw))
                .unwrap_or_default(),
            format!("zero lost: {}", verdict(lost == 0)),
        );
        server.stop(Duration::from_secs(10))?;
        anyhow::ensure!(lost == 0, "churn lost {lost} tasks");
    }

    if args.runs(Scenario::Journal) {
        println!("journal");
        // Saturation in each storage mode, one after the other in this run.
        let mut rates = Vec::new();
        for (label, sync) in [
            ("memory", None),
            ("journal, sync = write", Some("write")),
            ("journal, sync = fsync", Some("fsync")),
        ] {
            let data = dir.join(format!("journal-{}", sync.unwrap_or("memory")));
            let config = match sync {
                None => SERVER_CONFIG.to_owned(),
                Some(sync) => journal_config(&data, sync),
            };
            let server = Proc::contact_server(&server_bin, &config, dir)?;
            let rate = scenarios::saturation(
                &server.url(),
                args.tasks,
                args.producers,
                args.workers,
                args.credit,
                args.size,
            )
            .await?;
            server.stop(Duration::from_secs(10))?;
            let disk = dir_bytes(&data);
            println!("  {label}: {rate:.0} tasks/s; journal left after the run: {disk} bytes");
            rates.push((label, rate));
        }
        let memory = rates[0].1;
        for (label, rate) in &rates {
            let ratio = rate / memory;
            let target = match *label {
                "journal, sync = write" => format!(">= 0.8 of memory: {}", verdict(ratio >= 0.8)),
                "journal, sync = fsync" => format!(">= 0.5 of memory: {}", verdict(ratio >= 0.5)),
                _ => String::new(),
            };
            report.add(
                &format!("saturation, {label}"),
                format!("{rate:.0} tasks/s"),
                format!("{ratio:.2} of memory mode"),
                target,
            );
        }

        // Submit -> reply at a fixed rate with every answer on the disk.
        let data = dir.join("journal-latency");
        let server = Proc::contact_server(&server_bin, &journal_config(&data, "fsync"), dir)?;
        let latency = scenarios::submit_reply_latency(
            &server.url(),
            args.rate,
            Duration::from_secs(args.seconds),
            args.workers,
            args.credit,
        )
        .await?;
        server.stop(Duration::from_secs(10))?;
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            let ms = millis(&latency, q);
            report.add(
                &format!("{:.0}/s {label} submit->reply, sync = fsync", args.rate),
                format!("{ms:.3} ms"),
                String::new(),
                if label == "p99" {
                    format!("<= 1 ms: {}", verdict(ms <= 1.0))
                } else {
                    String::new()
                },
            );
        }

        // A steady run: disk use sampled each second must level off as
        // finished tasks are forgotten and segments deleted.
        let data = dir.join("journal-steady");
        let server = Proc::contact_server(&server_bin, &journal_config(&data, "write"), dir)?;
        let sampling = CancellationToken::new();
        let sampler = tokio::spawn({
            let (data, sampling) = (data.clone(), sampling.clone());
            async move {
                let mut samples = Vec::new();
                while !sampling.is_cancelled() {
                    samples.push(dir_bytes(&data));
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = sampling.cancelled() => {}
                    }
                }
                samples
            }
        });
        let steady_rate = args.rate * 4.0;
        scenarios::submit_reply_latency(
            &server.url(),
            steady_rate,
            Duration::from_secs(args.steady_secs),
            args.workers,
            args.credit,
        )
        .await?;
        sampling.cancel();
        let samples = sampler.await?;
        server.stop(Duration::from_secs(10))?;
        let half = samples.len() / 2;
        let first = samples[..half].iter().copied().max().unwrap_or(0);
        let second = samples[half..].iter().copied().max().unwrap_or(0);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        // Flat: the second half never outgrows the first by more than a
        // segment (one may be open and full while the oldest waits to go).
        let flat = second <= first + 64 * 1024 * 1024;
        report.add(
            &format!(
                "{}s steady run at {steady_rate:.0}/s: journal on disk, max of first half / second half",
                args.steady_secs
            ),
            format!("{:.1} / {:.1} MiB", mib(first), mib(second)),
            String::new(),
            format!("flat: {}", verdict(flat)),
        );

        // A deep queue kept across a restart: disk per task, and how soon
        // the server serves again.
        let data = dir.join("journal-deep");
        let config = journal_config(&data, "write");
        let server = Proc::contact_server(&server_bin, &config, dir)?;
        scenarios::produce(&server.url(), args.deep_tasks, 2, 64).await?;
        server.stop(Duration::from_secs(30))?;
        let disk = dir_bytes(&data);
        let per_task = disk as f64 / args.deep_tasks as f64;
        report.add(
            &format!(
                "{} queued 64-byte tasks: journal bytes per task",
                args.deep_tasks
            ),
            format!("{per_task:.0} B"),
            String::new(),
            format!("<= 2 x (64 + 100) B: {}", verdict(per_task <= 328.0)),
        );
        let started = Instant::now();
        let server = Proc::contact_server(&server_bin, &config, dir)?;
        let mut tasks = TasksClient::new(load::connect(&server.url()).await?);
        tasks
            .get(v1::GetRequest {
                task_id: "00000000-0000-0000-0000-000000000000".into(),
            })
            .await
            .ok();
        let restart = started.elapsed().as_secs_f64();
        report.add(
            &format!(
                "restart with {} queued tasks: until serving",
                args.deep_tasks
            ),
            format!("{restart:.2} s"),
            String::new(),
            if args.deep_tasks >= 1_000_000 {
                format!("<= 2 s: {}", verdict(restart <= 2.0))
            } else {
                String::new()
            },
        );
        let pool = scenarios::FastWorkers::start(
            &server.url(),
            args.workers,
            args.credit,
            "restart",
            args.deep_tasks,
        )
        .await?;
        let acked = pool.finish(Duration::from_secs(600)).await?;
        anyhow::ensure!(
            acked >= args.deep_tasks,
            "after the restart only {acked} of {} were delivered",
            args.deep_tasks
        );
        server.stop(Duration::from_secs(10))?;
    }

    if args.runs(Scenario::Security) {
        println!("security");
        let plain = Proc::contact_server(&server_bin, SERVER_CONFIG, dir)?;
        let plain_rate = scenarios::saturation(
            &plain.url(),
            args.tasks,
            args.producers,
            args.workers,
            args.credit,
            args.size,
        )
        .await?;
        plain.stop(Duration::from_secs(10))?;
        let secured = security::secure(SERVER_CONFIG, dir)?;
        let server = Proc::contact_server(&server_bin, &secured.config, dir)?;
        let url = server.url().replacen("http://", "https://", 1);
        load::use_credentials(Some(secured.credentials));
        let secure_rate = scenarios::saturation(
            &url,
            args.tasks,
            args.producers,
            args.workers,
            args.credit,
            args.size,
        )
        .await;
        load::use_credentials(None);
        let secure_rate = secure_rate?;
        server.stop(Duration::from_secs(10))?;
        println!("  plain text: {plain_rate:.0} tasks/s; TLS and tokens: {secure_rate:.0} tasks/s");
        report.add(
            "saturation, plain text, no authentication",
            format!("{plain_rate:.0} tasks/s"),
            String::new(),
            String::new(),
        );
        let ratio = secure_rate / plain_rate;
        report.add(
            "saturation, TLS and token authentication",
            format!("{secure_rate:.0} tasks/s"),
            format!("{ratio:.2} of plain text"),
            format!(">= 0.7 of plain text: {}", verdict(ratio >= 0.7)),
        );
    }

    report.print();
    Ok(())
}

/// The directory for the server's config file, removed however the run ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("contact-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).context("creating a temporary directory")?;
        Ok(Self(dir))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
