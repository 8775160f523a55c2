//! The scenarios against a real contact-server process: saturation, fixed
//! load, connection scale, deep queue and churn. Producers use the pipelined
//! `SubmitStream`; workers use getTask and acknowledge on tellResult (or on
//! sendStatus where a per-ack answer is measured).

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use contact_server::client::AuthChannel as Channel;
use contact_server::{
    domain::{CLIENT_ID_KEY, MAX_IN_FLIGHT_KEY},
    proto::{
        self, Kind, client_msg::Op, contact_client::ContactClient, v1,
        v1::tasks_client::TasksClient,
    },
};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{Notify, mpsc},
    task::JoinSet,
};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Streaming};

use crate::{load, procs::Proc};

/// Workers multiplexed per HTTP/2 connection in the scale scenario (the
/// server allows 200 streams per connection).
const STREAMS_PER_CONNECTION: usize = 100;

fn get_task_request(id: &str, credit: u32) -> anyhow::Result<Request<proto::Empty>> {
    let mut request = Request::new(proto::Empty::default());
    request.metadata_mut().insert(CLIENT_ID_KEY, id.parse()?);
    request
        .metadata_mut()
        .insert(MAX_IN_FLIGHT_KEY, credit.to_string().parse()?);
    Ok(request)
}

fn named<T>(message: T, id: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(CLIENT_ID_KEY, id.parse()?);
    Ok(request)
}

/// Workers that acknowledge every task at once on tellResult, counting.
pub(crate) struct FastWorkers {
    acked: Arc<AtomicU64>,
    all_acked: Arc<Notify>,
    stop: CancellationToken,
    runs: JoinSet<anyhow::Result<()>>,
}

impl FastWorkers {
    pub(crate) async fn start(
        url: &str,
        count: usize,
        credit: u32,
        prefix: &str,
        target: u64,
    ) -> anyhow::Result<Self> {
        let acked = Arc::new(AtomicU64::new(0));
        let all_acked = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let mut runs = JoinSet::new();
        for i in 0..count {
            let id = format!("{prefix}-{i}");
            let channel = load::connect(url).await?;
            let (acked, all_acked, stop) = (acked.clone(), all_acked.clone(), stop.clone());
            let stream = ContactClient::new(channel.clone())
                .get_task(get_task_request(&id, credit)?)
                .await?
                .into_inner();
            runs.spawn(fast_worker(
                channel, id, stream, credit, acked, all_acked, stop, target,
            ));
        }
        Ok(Self {
            acked,
            all_acked,
            stop,
            runs,
        })
    }

    /// Waits until `target` acks were sent, then closes every tellResult call
    /// and waits for the server to have applied them all.
    pub(crate) async fn finish(mut self, timeout: Duration) -> anyhow::Result<u64> {
        let notified = self.all_acked.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut notified => break,
                // A worker that fails ends the wait at once.
                Some(run) = self.runs.join_next() => run??,
                () = &mut deadline => anyhow::bail!(
                    "only {} tasks acknowledged after {timeout:?}",
                    self.acked.load(Ordering::Relaxed)
                ),
            }
        }
        self.stop.cancel();
        while let Some(run) = self.runs.join_next().await {
            run??;
        }
        Ok(self.acked.load(Ordering::Relaxed))
    }
}

#[allow(clippy::too_many_arguments)]
async fn fast_worker(
    channel: Channel,
    id: String,
    mut stream: Streaming<proto::ServerMsg>,
    credit: u32,
    acked: Arc<AtomicU64>,
    all_acked: Arc<Notify>,
    stop: CancellationToken,
    target: u64,
) -> anyhow::Result<()> {
    let (acks, acks_rx) = mpsc::channel(credit as usize);
    let mut client = ContactClient::new(channel);
    let request = named(ReceiverStream::new(acks_rx), &id)?;
    let tell = tokio::spawn(async move { client.tell_result(request).await });
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = stream.message() => message,
        };
        let Ok(Some(task)) = message else { break };
        if task.kind() != Kind::Task {
            continue;
        }
        let ack = proto::Result {
            task_id: task.task_id,
            attempt: task.attempt,
            ..Default::default()
        };
        if acks.send(ack).await.is_err() {
            break;
        }
        if acked.fetch_add(1, Ordering::Relaxed) + 1 == target {
            all_acked.notify_one();
        }
    }
    drop(acks);
    tell.await?.context("tellResult failed")?;
    Ok(())
}

/// Submits `tasks` tasks of `size` bytes over `producers` pipelined streams;
/// each task's payload starts with its submit time.
pub(crate) async fn produce(
    url: &str,
    tasks: u64,
    producers: u64,
    size: usize,
) -> anyhow::Result<()> {
    let mut runs = JoinSet::new();
    for p in 0..producers {
        let share = tasks / producers + u64::from(p < tasks % producers);
        let mut client = TasksClient::new(load::connect(url).await?);
        runs.spawn(async move {
            let requests = tokio_stream::iter((0..share).map(move |_| v1::SubmitRequest {
                payload: load::payload(size, load::now_nanos()),
                ..Default::default()
            }));
            let mut replies = client.submit_stream(requests).await?.into_inner();
            let mut accepted = 0;
            while let Some(reply) = replies.message().await? {
                ensure!(reply.error.is_none(), "submit refused: {:?}", reply.error);
                accepted += 1;
            }
            ensure!(accepted == share, "{accepted} of {share} accepted");
            anyhow::Ok(())
        });
    }
    while let Some(run) = runs.join_next().await {
        run??;
    }
    Ok(())
}

/// Saturation: tasks/s from the first submit to the last ack applied.
pub(crate) async fn saturation(
    url: &str,
    tasks: u64,
    producers: u64,
    workers: usize,
    credit: u32,
    size: usize,
) -> anyhow::Result<f64> {
    // Connecting counts, as it does for the ceiling.
    let started = Instant::now();
    let pool = FastWorkers::start(url, workers, credit, "sat", tasks).await?;
    produce(url, tasks, producers, size).await?;
    let acked = pool.finish(Duration::from_secs(600)).await?;
    ensure!(acked >= tasks, "acknowledged {acked} of {tasks}");
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

/// What the fixed-load scenario measured, in microseconds.
pub(crate) struct Latencies {
    pub(crate) receipt: Histogram<u64>,
    pub(crate) ack: Histogram<u64>,
    pub(crate) sent: u64,
}

/// Fixed load: an open loop at `rate` tasks/s for `duration`; latency from
/// each task's scheduled submit time to its receipt by a worker, and to the
/// answer to its ack (acks go on sendStatus, whose replies confirm them).
pub(crate) async fn fixed_load(
    url: &str,
    rate: f64,
    duration: Duration,
    workers: usize,
    credit: u32,
    size: usize,
) -> anyhow::Result<Latencies> {
    let total = (rate * duration.as_secs_f64()) as u64;
    let stop = CancellationToken::new();
    let acked = Arc::new(AtomicU64::new(0));
    let all_acked = Arc::new(Notify::new());
    let mut runs = JoinSet::new();
    for i in 0..workers {
        let id = format!("lat-{i}");
        let channel = load::connect(url).await?;
        let stream = ContactClient::new(channel.clone())
            .get_task(get_task_request(&id, credit)?)
            .await?
            .into_inner();
        let counter = AckCounter {
            acked: acked.clone(),
            all_acked: all_acked.clone(),
            target: total,
        };
        runs.spawn(latency_worker(channel, id, stream, stop.clone(), counter));
    }

    let notified = all_acked.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let mut client = TasksClient::new(load::connect(url).await?);
    let (requests, requests_rx) = mpsc::channel(1024);
    let mut replies = client
        .submit_stream(ReceiverStream::new(requests_rx))
        .await?
        .into_inner();
    let replies_done = tokio::spawn(async move {
        let mut accepted = 0u64;
        while let Some(reply) = replies.message().await? {
            ensure!(reply.error.is_none(), "submit refused: {:?}", reply.error);
            accepted += 1;
        }
        anyhow::Ok(accepted)
    });
    let mut scheduled = load::schedule(rate, total, move |stamp| v1::SubmitRequest {
        payload: load::payload(size, stamp),
        ..Default::default()
    });
    while let Some(request) = scheduled.recv().await {
        requests
            .send(request)
            .await
            .context("submit stream closed")?;
    }
    drop(requests);
    let accepted = replies_done.await??;
    ensure!(accepted == total, "{accepted} of {total} accepted");
    tokio::time::timeout(Duration::from_secs(120), notified)
        .await
        .with_context(|| {
            format!(
                "only {} of {total} acknowledged",
                acked.load(Ordering::Relaxed)
            )
        })?;
    stop.cancel();

    let mut receipt = load::histogram();
    let mut ack = load::histogram();
    while let Some(run) = runs.join_next().await {
        let (r, a) = run??;
        receipt.add(&r).context("merging histograms")?;
        ack.add(&a).context("merging histograms")?;
    }
    Ok(Latencies {
        receipt,
        ack,
        sent: total,
    })
}

/// Counts acks across workers and wakes the scenario at the last one.
struct AckCounter {
    acked: Arc<AtomicU64>,
    all_acked: Arc<Notify>,
    target: u64,
}

impl AckCounter {
    fn count(&self) {
        if self.acked.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.all_acked.notify_one();
        }
    }
}

/// Every this many acks, one goes on sendStatus, whose reply says when the
/// server applied it: a sample of submit->ack. The rest go on the batched
/// tellResult path, the one saturation measures.
const ACK_SAMPLE_EVERY: u64 = 10;

async fn latency_worker(
    channel: Channel,
    id: String,
    mut stream: Streaming<proto::ServerMsg>,
    stop: CancellationToken,
    counter: AckCounter,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut receipt = load::histogram();
    let mut ack = load::histogram();
    let (control, control_rx) = mpsc::channel(1024);
    let mut client = ContactClient::new(channel);
    let mut replies = client
        .send_status(named(ReceiverStream::new(control_rx), &id)?)
        .await?
        .into_inner();
    let (acks, acks_rx) = mpsc::channel(1024);
    let ack_request = named(ReceiverStream::new(acks_rx), &id)?;
    let mut ack_client = client.clone();
    let tell = tokio::spawn(async move { ack_client.tell_result(ack_request).await });
    // Replies come in order, so the stamps of unanswered acks form a queue.
    let mut waiting: VecDeque<bytes::Bytes> = VecDeque::new();
    let mut received = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            message = stream.message() => {
                let Some(task) = message? else { break };
                if task.kind() != Kind::Task {
                    continue;
                }
                load::record_since(&mut receipt, &task.payload);
                let result = proto::Result {
                    task_id: task.task_id,
                    attempt: task.attempt,
                    ..Default::default()
                };
                received += 1;
                if received.is_multiple_of(ACK_SAMPLE_EVERY) {
                    waiting.push_back(task.payload.clone());
                    let message = proto::ClientMsg { op: Some(Op::Ack(result)), ..Default::default() };
                    control.send(message).await.context("sendStatus closed")?;
                } else {
                    acks.send(result).await.context("tellResult closed")?;
                    counter.count();
                }
            }
            reply = replies.message() => {
                let Some(reply) = reply? else { break };
                ensure!(reply.code == 0, "ack refused: {}", reply.error);
                if let Some(payload) = waiting.pop_front() {
                    load::record_since(&mut ack, &payload);
                    counter.count();
                }
            }
        }
    }
    drop(acks);
    tell.await?.context("tellResult failed")?;
    Ok((receipt, ack))
}

/// What the connection-scale scenario measured.
pub(crate) struct Scale {
    pub(crate) rss_per_worker_bytes: f64,
    pub(crate) targeted_latency: Duration,
}

/// Connection scale: `workers` idle workers; server RSS per worker, and the
/// time for a task targeted at one of them to reach it.
pub(crate) async fn scale(server: &Proc, workers: usize) -> anyhow::Result<Scale> {
    let url = server.url();
    let before = server.usage()?.rss_kib;
    let (arrived_tx, mut arrived_rx) = mpsc::channel::<(usize, Instant)>(16);
    let mut keep = Vec::new();
    let mut connecting = JoinSet::new();
    let connections = workers.div_ceil(STREAMS_PER_CONNECTION);
    for c in 0..connections {
        let channel = load::connect(&url).await?;
        let arrived_tx = arrived_tx.clone();
        connecting.spawn(async move {
            let mut streams = Vec::new();
            for s in 0..STREAMS_PER_CONNECTION {
                let i = c * STREAMS_PER_CONNECTION + s;
                if i >= workers {
                    break;
                }
                let mut client = ContactClient::new(channel.clone());
                let stream = client
                    .get_task(get_task_request(&format!("idle-{i}"), 1)?)
                    .await?
                    .into_inner();
                streams.push((i, stream));
            }
            let mut readers = Vec::new();
            for (i, mut stream) in streams {
                let arrived_tx = arrived_tx.clone();
                readers.push(tokio::spawn(async move {
                    while let Ok(Some(task)) = stream.message().await {
                        if task.kind() == Kind::Task {
                            let _ = arrived_tx.send((i, Instant::now())).await;
                        }
                    }
                }));
            }
            anyhow::Ok((channel, readers))
        });
    }
    while let Some(connected) = connecting.join_next().await {
        keep.push(connected??);
    }
    let after = server.usage()?.rss_kib;
    let rss_per_worker_bytes = (after.saturating_sub(before) * 1024) as f64 / workers as f64;

    let target = workers - 1;
    let mut tasks = TasksClient::new(load::connect(&url).await?);
    let sent = Instant::now();
    tasks
        .submit(v1::SubmitRequest {
            target_client_id: format!("idle-{target}"),
            text: "find me".into(),
            ..Default::default()
        })
        .await?;
    let (who, when) = tokio::time::timeout(Duration::from_secs(30), arrived_rx.recv())
        .await
        .context("the targeted task never arrived")?
        .context("readers ended")?;
    ensure!(
        who == target,
        "the task reached idle-{who}, not idle-{target}"
    );
    for (_, readers) in &keep {
        for reader in readers {
            reader.abort();
        }
    }
    drop(keep);
    Ok(Scale {
        rss_per_worker_bytes,
        targeted_latency: when - sent,
    })
}

/// What the deep-queue scenario measured.
pub(crate) struct Deep {
    pub(crate) bytes_per_task_beyond_payload: f64,
    pub(crate) drain_rate: f64,
}

/// Deep queue: `tasks` queued tasks of `size` bytes with no worker; server
/// RSS per queued task beyond its payload; then the drain rate when
/// `workers` arrive.
pub(crate) async fn deep_queue(
    server: &Proc,
    tasks: u64,
    size: usize,
    workers: usize,
    credit: u32,
) -> anyhow::Result<Deep> {
    let url = server.url();
    let before = server.usage()?.rss_kib;
    produce(&url, tasks, 2, size).await?;
    let after = server.usage()?.rss_kib;
    let per_task = (after.saturating_sub(before) * 1024) as f64 / tasks as f64;
    let started = Instant::now();
    let pool = FastWorkers::start(&url, workers, credit, "drain", tasks).await?;
    let acked = pool.finish(Duration::from_secs(600)).await?;
    ensure!(acked >= tasks, "drained {acked} of {tasks}");
    Ok(Deep {
        bytes_per_task_beyond_payload: per_task - size as f64,
        drain_rate: tasks as f64 / started.elapsed().as_secs_f64(),
    })
}

/// What the churn scenario measured.
pub(crate) struct Churn {
    pub(crate) throughput: f64,
    pub(crate) done: u64,
    pub(crate) reconnects: u64,
}

/// Churn: workers connect and disconnect at a steady rate while `tasks`
/// flow; counts (from the server's metrics) that every task was done.
pub(crate) async fn churn(
    server: &Proc,
    tasks: u64,
    workers: usize,
    credit: u32,
    every: Duration,
) -> anyhow::Result<Churn> {
    let url = server.url();
    let metrics = server
        .metrics_addr
        .context("the server reported no metrics address")?;
    let done_before = done_count(metrics).await?;
    let stop = CancellationToken::new();
    let reconnects = Arc::new(AtomicU64::new(0));
    let mut slots = JoinSet::new();
    for i in 0..workers {
        let (url, stop, reconnects) = (url.clone(), stop.clone(), reconnects.clone());
        // Worker i drops its connection every `workers * every`, staggered,
        // so that one worker somewhere churns every `every`.
        let period = every * workers as u32;
        let offset = every * i as u32;
        slots.spawn(async move {
            let mut first = true;
            while !stop.is_cancelled() {
                let id = format!("churn-{i}");
                let Ok(pool) = FastWorkers::start(&url, 1, credit, &id, u64::MAX).await else {
                    // The previous session may not be seen as gone yet.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let life = if first { period + offset } else { period };
                first = false;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(life) => {}
                }
                // A crash: the connection drops with whatever it holds.
                pool.stop.cancel();
                let mut runs = pool.runs;
                runs.abort_all();
                reconnects.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    produce(&url, tasks, 2, 64).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = 0;
    while Instant::now() < deadline {
        done = done_count(metrics).await? - done_before;
        if done >= tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while slots.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        slots.abort_all();
    }
    Ok(Churn {
        throughput: done as f64 / elapsed.as_secs_f64(),
        done,
        reconnects: reconnects.load(Ordering::Relaxed),
    })
}

/// The server's count of tasks acknowledged as done, from /metrics.
async fn done_count(metrics: std::net::SocketAddr) -> anyhow::Result<u64> {
    let mut stream = tokio::net::TcpStream::connect(metrics).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let series = "contact_tasks_acknowledged_total{outcome=\"done\"} ";
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// Submit → reply at a fixed rate: an open loop of `rate` tasks/s for
/// `duration` on one pipelined SubmitStream, each reply timed from its
/// request's scheduled time (so a slow reply delays none behind it
/// unseen). With the journal, the reply is the moment the task is
/// recorded: under `sync = "fsync"`, on the disk. Fast workers take the
/// tasks so the queue stays shallow.
pub(crate) async fn submit_reply_latency(
    url: &str,
    rate: f64,
    duration: Duration,
    workers: usize,
    credit: u32,
) -> anyhow::Result<Histogram<u64>> {
    let count = (rate * duration.as_secs_f64()) as u64;
    let pool = FastWorkers::start(url, workers, credit, "reply", count).await?;
    let stamps = Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let sent = stamps.clone();
    let requests =
        ReceiverStream::new(load::schedule(rate, count, move |stamp| stamp)).map(move |stamp| {
            if let Ok(mut sent) = sent.lock() {
                sent.push_back(stamp);
            }
            v1::SubmitRequest {
                payload: load::payload(64, stamp),
                ..Default::default()
            }
        });
    let mut tasks = TasksClient::new(load::connect(url).await?);
    let mut replies = tasks.submit_stream(requests).await?.into_inner();
    let mut latency = load::histogram();
    while let Some(reply) = replies.message().await? {
        ensure!(reply.error.is_none(), "submit refused: {:?}", reply.error);
        let stamp = stamps.lock().ok().and_then(|mut s| s.pop_front());
        if let Some(stamp) = stamp {
            let micros = load::now_nanos().saturating_sub(stamp) / 1000;
            latency.saturating_record(micros.max(1));
        }
    }
    pool.finish(Duration::from_secs(60)).await?;
    Ok(latency)
}
