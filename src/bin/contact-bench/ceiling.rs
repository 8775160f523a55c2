//! The ceiling: a raw tonic pair with no queue logic. Its server answers the
//! same `Contact` service by pushing N payloads down each getTask stream as
//! fast as the stream takes them (or on a schedule, for latency) and counting
//! the acks that come back on tellResult. Every contact-server figure is
//! printed as a ratio to what this pair does in the same run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use contact_server::proto::{self, contact_client::ContactClient, contact_server::ContactServer};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Response, Status, Streaming, metadata::MetadataMap, transport::server::TcpIncoming,
};

use crate::load;

const COUNT_KEY: &str = "bench-count";
const BYTES_KEY: &str = "bench-bytes";
const RATE_KEY: &str = "bench-rate";
/// Messages the raw server buffers per stream, like tonic's examples.
const STREAM_BUFFER: usize = 256;

fn number(metadata: &MetadataMap, key: &str) -> u64 {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Default)]
struct RawServer {
    acked: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl proto::contact_server::Contact for RawServer {
    type sendStatusStream = ReceiverStream<Result<proto::Result, Status>>;
    type getTaskStream = ReceiverStream<Result<proto::ServerMsg, Status>>;

    async fn send_status(
        &self,
        _request: Request<Streaming<proto::ClientMsg>>,
    ) -> Result<Response<Self::sendStatusStream>, Status> {
        Err(Status::unimplemented("the ceiling server only pushes"))
    }

    async fn get_task(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<Self::getTaskStream>, Status> {
        let count = number(request.metadata(), COUNT_KEY);
        let size = number(request.metadata(), BYTES_KEY) as usize;
        let rate = number(request.metadata(), RATE_KEY);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let message = move |i: u64, stamp| proto::ServerMsg {
            task_id: i.to_string(),
            payload: load::payload(size, stamp),
            ..Default::default()
        };
        tokio::spawn(async move {
            if rate > 0 {
                let mut scheduled = load::schedule(rate as f64, count, |stamp| stamp);
                let mut i = 0;
                while let Some(stamp) = scheduled.recv().await {
                    if tx.send(Ok(message(i, stamp))).await.is_err() {
                        return;
                    }
                    i += 1;
                }
            } else {
                for i in 0..count {
                    if tx.send(Ok(message(i, load::now_nanos()))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn tell_result(
        &self,
        request: Request<Streaming<proto::Result>>,
    ) -> Result<Response<proto::Empty>, Status> {
        let mut acks = request.into_inner();
        while acks.message().await?.is_some() {
            self.acked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Response::new(proto::Empty::default()))
    }
}

/// Runs the ceiling server until the process is killed; prints its address
/// on stderr for the parent to read.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("ceiling listening on {}", listener.local_addr()?);
    // As contact-server does: no Nagle delay on small pushes.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(ContactServer::new(RawServer::default()))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

fn request(count: u64, size: usize, rate: u64) -> anyhow::Result<Request<proto::Empty>> {
    let mut request = Request::new(proto::Empty::default());
    let metadata = request.metadata_mut();
    metadata.insert(COUNT_KEY, count.to_string().parse()?);
    metadata.insert(BYTES_KEY, size.to_string().parse()?);
    metadata.insert(RATE_KEY, rate.to_string().parse()?);
    Ok(request)
}

/// Saturation through the raw pair: `tasks` payloads of `size` bytes split
/// over `workers` streams, each acked on tellResult. Returns tasks per second.
pub(crate) async fn saturation(
    url: &str,
    tasks: u64,
    workers: u64,
    size: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut runs = Vec::new();
    for w in 0..workers {
        let share = tasks / workers + u64::from(w < tasks % workers);
        let mut client = ContactClient::new(load::connect(url).await?);
        runs.push(tokio::spawn(async move {
            let mut stream = client
                .get_task(request(share, size, 0)?)
                .await?
                .into_inner();
            let (acks, acks_rx) = mpsc::channel(STREAM_BUFFER);
            let mut ack_client = client.clone();
            let tell =
                tokio::spawn(
                    async move { ack_client.tell_result(ReceiverStream::new(acks_rx)).await },
                );
            let mut received = 0;
            while let Some(message) = stream.message().await? {
                received += 1;
                let ack = proto::Result {
                    task_id: message.task_id,
                    ..Default::default()
                };
                acks.send(ack).await.context("tellResult closed")?;
            }
            drop(acks);
            tell.await??;
            anyhow::ensure!(received == share, "received {received} of {share}");
            anyhow::Ok(())
        }));
    }
    for run in runs {
        run.await??;
    }
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

/// Latency through the raw pair: one stream pushed at `rate` per second for
/// `duration`, stamped with the scheduled send time. Returns the histogram of
/// scheduled-send → receive, in microseconds.
pub(crate) async fn latency(
    url: &str,
    rate: u64,
    duration: Duration,
    size: usize,
) -> anyhow::Result<Histogram<u64>> {
    let count = (rate as f64 * duration.as_secs_f64()) as u64;
    let mut client = ContactClient::new(load::connect(url).await?);
    let mut stream = client
        .get_task(request(count, size, rate)?)
        .await?
        .into_inner();
    let mut histogram = load::histogram();
    while let Some(message) = stream.message().await? {
        load::record_since(&mut histogram, &message.payload);
    }
    Ok(histogram)
}
