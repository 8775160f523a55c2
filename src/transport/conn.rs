//! One accepted connection: its stream (with the HTTP/2 preface that the
//! accept loop read to check it, replayed first), what request handlers
//! learn about it, and its activity: how many calls are open and since
//! when none has been, and a way to close it from outside (hyper reads an
//! end of stream and drops it).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::task::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::OwnedSemaphorePermit,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// What a call can learn about its connection, from the request's
/// extensions.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The peer's address.
    pub(crate) remote: Option<SocketAddr>,
    /// What the client's TLS certificate proves (empty without one).
    pub(crate) identities: Arc<[String]>,
    /// The connection's calls and idleness.
    pub(crate) activity: Arc<Activity>,
}

/// The calls open on a connection, and its closing.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    open_calls: AtomicUsize,
    /// Milliseconds from `epoch` when the last call ended (or the
    /// connection opened).
    idle_since_ms: AtomicU64,
    closing: AtomicBool,
    reader: AtomicWaker,
    /// Open calls over all connections.
    calls_gauge: metrics::Gauge,
    /// Cancelled when the connection is dropped.
    pub(crate) gone: CancellationToken,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open_calls: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            calls_gauge: metrics::gauge!(crate::metrics::CALLS_OPEN),
            gone: CancellationToken::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A call began; it counts as open until the guard drops (when its
    /// response has been sent to the end, or abandoned).
    pub(crate) fn call_started(self: &Arc<Self>) -> CallGuard {
        self.open_calls.fetch_add(1, Ordering::AcqRel);
        self.calls_gauge.increment(1);
        CallGuard(self.clone())
    }

    /// How long the connection has had no call open; `None` while one is.
    pub(crate) fn idle_for(&self) -> Option<std::time::Duration> {
        if self.open_calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        Some(std::time::Duration::from_millis(
            self.now_ms().saturating_sub(since),
        ))
    }

    /// Closes the connection: its next read is the end of the stream.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// One open call; see [`Activity::call_started`].
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.calls_gauge.decrement(1);
        // The time first: a watcher that sees no call open must never read
        // an idle-since time from before this call ended.
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.open_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one of the listener's connection slots, and the open-connections
/// gauge, for the connection's life.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) _permit: OwnedSemaphorePermit,
    pub(crate) open: metrics::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.decrement(1);
    }
}

/// A connection's byte stream: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// An accepted connection, as tonic serves it.
#[derive(Debug)]
pub(crate) struct Conn<IO> {
    io: IO,
    /// Bytes read ahead (the preface), to be read again first.
    prefix: Vec<u8>,
    info: ConnInfo,
    _slot: Slot,
}

impl<IO> Conn<IO> {
    pub(crate) fn new(io: IO, prefix: Vec<u8>, info: ConnInfo, slot: Slot) -> Self {
        Self {
            io,
            prefix,
            info,
            _slot: slot,
        }
    }
}

impl<IO> Drop for Conn<IO> {
    fn drop(&mut self) {
        self.info.activity.gone.cancel();
    }
}

impl<IO> Connected for Conn<IO> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let activity = &this.info.activity;
        activity.reader.register(cx.waker());
        if activity.closing.load(Ordering::Acquire) {
            // The end of the stream: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
