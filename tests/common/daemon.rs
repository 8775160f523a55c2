//! The real `contact-server` binary as a child process, for the tests where
//! crashes and restarts are the point: started on loopback ports and a
//! journal directory of the test's, its log read for the address it bound,
//! killed with SIGKILL or stopped with SIGTERM by its own PID, and killed on
//! drop if a test fails first.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
};

use contact_server::proto::v1::tasks_client::TasksClient;
use tonic::transport::Channel;

use super::within;

const BIN: &str = env!("CARGO_BIN_EXE_contact-server");

/// A running daemon.
pub struct Daemon {
    child: Child,
    pub grpc_addr: String,
    log: Arc<Mutex<String>>,
    exited: bool,
}

impl Daemon {
    /// Starts the daemon on `data_dir` with `extra` arguments, and waits
    /// for the line that says where it listens.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_at(data_dir, "127.0.0.1:0", extra).await
    }

    /// [`Daemon::start`] on a given gRPC address: a restart on the port a
    /// worker already dials.
    pub async fn start_at(data_dir: &Path, grpc_addr: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--grpc-addr", grpc_addr, "--metrics-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn,contact_server::server=info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("grpc_addr=").nth(1)
                    && let Some(tx) = addr_tx.take()
                {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_owned());
                }
                let mut log = lines.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut daemon = Self {
            child,
            grpc_addr: String::new(),
            log,
            exited: false,
        };
        match within("the daemon's listening line", addr_rx).await {
            Ok(addr) => daemon.grpc_addr = addr,
            Err(_) => panic!("the daemon did not start:\n{}", daemon.log()),
        }
        daemon
    }

    /// Runs the daemon to its exit, expecting it not to start: its exit
    /// code and log.
    pub async fn refused(data_dir: &Path) -> (Option<i32>, String) {
        let output = within(
            "the daemon to refuse",
            tokio::process::Command::new(BIN)
                .args([
                    "--grpc-addr",
                    "127.0.0.1:0",
                    "--metrics-addr",
                    "127.0.0.1:0",
                ])
                .arg("--data-dir")
                .arg(data_dir)
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub async fn tasks(&self) -> TasksClient<Channel> {
        within("connect", TasksClient::connect(self.url()))
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} failed");
    }

    /// SIGHUP: reload the TLS files.
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// SIGKILL: the crash the journal is for. Waits for the process to go.
    pub async fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.wait().await;
    }

    /// SIGTERM, then the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        self.signal("-TERM");
        self.wait().await
    }

    /// Waits (bounded) for the daemon to stop by itself; its exit code.
    pub async fn exit_code(mut self) -> Option<i32> {
        self.wait().await
    }

    /// Waits (bounded) for the process to exit; its exit code.
    async fn wait(&mut self) -> Option<i32> {
        let child = &mut self.child;
        let status = super::eventually("the daemon to exit", || {
            let exited = child.try_wait().unwrap();
            std::future::ready(exited)
        })
        .await;
        self.exited = true;
        status.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.exited {
            let _ = Command::new("kill")
                .args(["-KILL", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}
