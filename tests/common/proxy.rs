//! A loopback TCP proxy whose connections a test can cut, to drop a
//! worker's connection the way a network does, while the server runs on.
//! It can also hold back what clients send, so that a message is sent and
//! then lost with the connection.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// Forwards every connection made to [`Proxy::addr`] to the target.
pub struct Proxy {
    pub addr: SocketAddr,
    cuts: watch::Sender<u64>,
    holding: watch::Sender<bool>,
    held_bytes: Arc<AtomicU64>,
    /// While set, new connections are closed at once (an outage).
    blocked: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

/// Copies what a client sends to the server, except while holding: then
/// it counts what it reads and keeps it until released or cut.
async fn upstream(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut holding: watch::Receiver<bool>,
    held_bytes: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *holding.borrow_and_update() {
            held_bytes.fetch_add(n as u64, Ordering::SeqCst);
            if holding.wait_for(|holding| !*holding).await.is_err() {
                return;
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cuts, watching) = watch::channel(0u64);
        let (holding, held) = watch::channel(false);
        let held_bytes = Arc::new(AtomicU64::new(0));
        let counted = held_bytes.clone();
        let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let (is_blocked, refusals) = (blocked.clone(), refused.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if is_blocked.load(Ordering::SeqCst) {
                    refusals.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let mut cut = watching.clone();
                cut.mark_unchanged();
                let held = held.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_reads, mut client_writes) = inbound.into_split();
                    let (mut server_reads, server_writes) = outbound.into_split();
                    tokio::select! {
                        // A cut wins over releasing what was held.
                        biased;
                        _ = cut.changed() => {}
                        () = upstream(client_reads, server_writes, held, counted) => {}
                        _ = tokio::io::copy(&mut server_reads, &mut client_writes) => {}
                    }
                    // Dropping both sockets closes them: the cut.
                });
            }
        });
        Self {
            addr,
            cuts,
            holding,
            held_bytes,
            blocked,
            refused,
            accept,
        }
    }

    /// The proxy's address as a gRPC endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds back what clients send from now on, until the next cut, which
    /// drops it.
    pub fn hold_upstream(&self) {
        self.holding.send_replace(true);
    }

    /// Starts an outage: open connections are cut and new ones closed at
    /// once, counted, until [`Proxy::unblock`].
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Ends the outage.
    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    /// Connections closed during outages.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// How many bytes clients sent while held.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes.load(Ordering::SeqCst)
    }

    /// Closes every connection open now; new ones are still accepted.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
        self.holding.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
