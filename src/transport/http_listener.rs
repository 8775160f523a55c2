//! The HTTP listener (`/metrics`) as an axum listener with bounds of its
//! own: at most [`MAX_HTTP_CONNECTIONS`] open, each closed once it makes
//! no progress (no byte read or written) for the handshake timeout, which
//! covers a TLS handshake, a request's headers and an idle keep-alive; and
//! TLS when `[tls] http_listener` says so, each handshake in its own task so
//! a slow client holds up no one else, with the configuration of the moment
//! (SIGHUP renews it here too).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::{Instant, Sleep},
};
use tracing::debug;

use super::{conn::Stream, tls::Tls};

/// Open HTTP connections at the most; one past it is closed at accept.
pub(crate) const MAX_HTTP_CONNECTIONS: usize = 256;

/// The pause after a failed accept (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The HTTP listener's sockets.
#[derive(Debug)]
pub(crate) struct HttpListener {
    tcp: TcpListener,
    tls: Option<Arc<Tls>>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    handshakes: JoinSet<Option<(HttpIo, SocketAddr)>>,
}

impl HttpListener {
    pub(crate) fn new(tcp: TcpListener, tls: Option<Arc<Tls>>, timeout: Duration) -> Self {
        Self {
            tcp,
            tls,
            timeout,
            slots: Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS)),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = HttpIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
                accepted = self.tcp.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            debug!(%error, "HTTP listener: accept failed");
                            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                            continue;
                        }
                    };
                    let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                        debug!(%remote, "HTTP listener: connection limit reached");
                        continue;
                    };
                    let timeout = self.timeout;
                    let Some(tls) = &self.tls else {
                        return (HttpIo::new(Stream::Plain(stream), timeout, permit), remote);
                    };
                    let acceptor = tls.http_acceptor();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let io = HttpIo::new(Stream::Tls(Box::new(tls)), timeout, permit);
                                Some((io, remote))
                            }
                            _ => {
                                debug!(%remote, "HTTP listener: TLS handshake failed or timed out");
                                None
                            }
                        }
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Who is at the other end of an HTTP connection, for handlers that need
/// to know (the console signs in a client certificate's principal).
#[derive(Clone, Debug)]
pub(crate) struct HttpPeer {
    /// The names its verified TLS client certificate proves, if it sent one.
    pub(crate) identities: Arc<[String]>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for HttpPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        let identities = match &stream.io().stream {
            Stream::Plain(_) => Vec::new(),
            Stream::Tls(tls) => super::tls::identities(tls.get_ref().1.peer_certificates()),
        };
        Self {
            identities: identities.into(),
        }
    }
}

/// One HTTP connection: it fails with `TimedOut` once it has made no
/// progress for its timeout, and holds its slot until dropped.
#[derive(Debug)]
pub(crate) struct HttpIo {
    stream: Stream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl HttpIo {
    fn new(stream: Stream, timeout: Duration, permit: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            _permit: permit,
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// After a pending read or write: an error once the deadline passed.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.deadline.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "no progress on the HTTP connection",
            )
        })
    }
}

impl AsyncRead for HttpIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.stalled(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for HttpIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => match this.stalled(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
