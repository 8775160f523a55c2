//! The accept loop: each new connection takes one of
//! `server.max_connections` slots (none free: it is closed at once, and
//! counted), must complete its TLS handshake (with TLS on) and send the
//! HTTP/2 preface within `server.handshake_timeout_secs`, and is watched
//! for idleness with no call open for `server.idle_timeout_secs`; the
//! connections that pass go to tonic as a stream.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::AsyncReadExt as _,
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    conn::{Activity, Conn, ConnInfo, Slot, Stream},
    tls::{Tls, identities},
};
use crate::metrics::{CONNECTIONS_CLOSED, CONNECTIONS_OPEN, CONNECTIONS_REFUSED};

/// Every HTTP/2 connection starts with these bytes (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long the loop rests after an accept error (out of file
/// descriptors, say), so that it does not spin while the cause lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Connections that passed their checks, waiting for tonic to take them.
const READY_BACKLOG: usize = 64;

/// The limits of the listener, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    /// Open connections at the most.
    pub(crate) max_connections: usize,
    /// Time from accept to a complete HTTP/2 preface.
    pub(crate) handshake_timeout: Duration,
    /// Time a connection may have no call open; zero: forever.
    pub(crate) idle_timeout: Duration,
}

/// The accepted connections of `listener`, until `stopping`.
pub(crate) fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
    stopping: CancellationToken,
) -> ReceiverStream<std::io::Result<Conn<Stream>>> {
    let (ready, ready_rx) = mpsc::channel(READY_BACKLOG);
    tokio::spawn(accept_loop(listener, limits, tls, stopping, ready));
    ReceiverStream::new(ready_rx)
}

async fn accept_loop(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
    stopping: CancellationToken,
    ready: mpsc::Sender<std::io::Result<Conn<Stream>>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = metrics::gauge!(CONNECTIONS_OPEN);
    let refused = metrics::counter!(CONNECTIONS_REFUSED, "reason" => "limit");
    // Accept errors (out of file descriptors) repeat while their cause
    // lasts: one line a second says so.
    let mut last_warned: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if last_warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    warn!(%error, "accepting a connection failed");
                    last_warned = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            debug!(%remote, "connection refused: server.max_connections are open");
            drop(stream);
            continue;
        };
        open.increment(1);
        let slot = Slot {
            _permit: permit,
            open: open.clone(),
        };
        let _ = stream.set_nodelay(true);
        let ready = ready.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(conn) = greet(stream, Some(remote), slot, limits, tls).await else {
                return;
            };
            // tonic stopped taking connections: the server is stopping.
            let _ = ready.send(Ok(conn)).await;
        });
    }
}

/// How a new connection failed to start.
enum Refused {
    Timeout,
    Tls,
    NotHttp2,
    Gone,
}

/// The TLS handshake (with TLS on) and the HTTP/2 preface.
async fn handshake(
    stream: TcpStream,
    tls: Option<&Tls>,
) -> Result<(Stream, Vec<u8>, Vec<String>), Refused> {
    let (mut io, names) = match tls.map(Tls::acceptor) {
        Some(acceptor) => {
            let tls = acceptor.accept(stream).await.map_err(|_| Refused::Tls)?;
            let names = identities(tls.get_ref().1.peer_certificates());
            (Stream::Tls(Box::new(tls)), names)
        }
        None => (Stream::Plain(stream), Vec::new()),
    };
    let mut preface = vec![0u8; PREFACE.len()];
    io.read_exact(&mut preface)
        .await
        .map_err(|_| Refused::Gone)?;
    if preface != PREFACE {
        return Err(Refused::NotHttp2);
    }
    Ok((io, preface, names))
}

/// Waits (bounded) for the connection's handshake; the connection ready
/// for tonic, with its idle watch started, or `None` if it did not start
/// in time or right.
async fn greet(
    stream: TcpStream,
    remote: Option<std::net::SocketAddr>,
    slot: Slot,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
) -> Option<Conn<Stream>> {
    let started = tokio::time::timeout(limits.handshake_timeout, handshake(stream, tls.as_deref()))
        .await
        .unwrap_or(Err(Refused::Timeout));
    let (io, preface, names) = match started {
        Ok(started) => started,
        Err(refused) => {
            let reason = match refused {
                Refused::Timeout => "handshake_timeout",
                Refused::Tls => "tls_handshake",
                Refused::NotHttp2 => "not_http2",
                Refused::Gone => return None,
            };
            metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
            debug!(?remote, reason, "connection closed before its first call");
            return None;
        }
    };
    let activity = Activity::new();
    if !limits.idle_timeout.is_zero() {
        tokio::spawn(watch_idle(activity.clone(), limits.idle_timeout));
    }
    let info = ConnInfo {
        remote,
        identities: names.into(),
        activity,
    };
    Some(Conn::new(io, preface, info, slot))
}

/// Closes the connection once it has had no call open for `timeout`.
async fn watch_idle(activity: Arc<Activity>, timeout: Duration) {
    loop {
        let wait = match activity.idle_for() {
            Some(idle) if idle >= timeout => {
                metrics::counter!(CONNECTIONS_CLOSED, "reason" => "idle").increment(1);
                activity.close();
                return;
            }
            Some(idle) => timeout - idle,
            None => timeout,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = activity.gone.cancelled() => return,
        }
    }
}
