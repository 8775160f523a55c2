//! TLS for the HTTP listener (`/metrics`), as an axum listener: handshakes
//! run in their own tasks, each bounded by the handshake timeout, so a
//! slow or silent client holds up no one else; the configuration of the
//! moment is used, so SIGHUP renews this listener's certificate too.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, net::TcpStream, task::JoinSet};
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::tls::Tls;

/// Handshakes under way at the most; a connection past them is closed.
const MAX_HANDSHAKES: usize = 256;

/// The pause after a failed accept (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A TCP listener whose connections are TLS streams.
#[derive(Debug)]
pub(crate) struct TlsListener {
    tcp: TcpListener,
    tls: Arc<Tls>,
    handshake_timeout: Duration,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, tls: Arc<Tls>, handshake_timeout: Duration) -> Self {
        Self {
            tcp,
            tls,
            handshake_timeout,
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
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
                    if self.handshakes.len() >= MAX_HANDSHAKES {
                        debug!(%remote, "HTTP listener: too many handshakes under way");
                        continue;
                    }
                    let Some(acceptor) = self.tls.http_acceptor() else {
                        continue;
                    };
                    let timeout = self.handshake_timeout;
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => Some((stream, remote)),
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

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
