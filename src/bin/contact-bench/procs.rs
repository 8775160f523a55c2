//! The processes under test: contact-server (and the raw-tonic ceiling
//! server) run as child processes, so their CPU time and memory can be read
//! from /proc apart from the load generator's.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Linux reports CPU time in clock ticks of 1/100 s on every platform we run on.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// A child process we started; killed (by its PID, via `Child`) when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) metrics_addr: Option<SocketAddr>,
}

/// CPU seconds and memory of one process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub(crate) cpu_secs: f64,
    pub(crate) rss_kib: u64,
    pub(crate) peak_rss_kib: u64,
}

impl Usage {
    pub(crate) fn of(pid: &str) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
        let cpu_secs = (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_SEC;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            cpu_secs,
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
        })
    }

    pub(crate) fn since(self, before: Usage) -> Usage {
        Usage {
            cpu_secs: self.cpu_secs - before.cpu_secs,
            rss_kib: self.rss_kib,
            peak_rss_kib: self.peak_rss_kib,
        }
    }
}

impl Proc {
    /// Starts contact-server on loopback ports with the given config text.
    pub(crate) fn contact_server(bin: &Path, config: &str, dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("bench-server.toml");
        std::fs::write(&path, config)?;
        let mut command = Command::new(bin);
        command
            .arg("--config")
            .arg(&path)
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn,contact_server::server=info");
        Self::start(command, "grpc_addr=", Some("metrics_addr="))
    }

    /// Starts this binary's raw-tonic ceiling server.
    pub(crate) fn ceiling_server() -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("ceiling-server");
        Self::start(command, "ceiling listening on ", None)
    }

    fn start(
        mut command: Command,
        addr_key: &str,
        metrics_key: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let value = |line: &str, key: &str| -> Option<SocketAddr> {
            line.split(key)
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let (mut addr, mut metrics_addr) = (None, None);
        for line in lines.by_ref() {
            let line = line?;
            addr = addr.or_else(|| value(&line, addr_key));
            metrics_addr = metrics_addr.or_else(|| metrics_key.and_then(|k| value(&line, k)));
            if addr.is_some() {
                break;
            }
        }
        let Some(addr) = addr else {
            let status = child.wait()?;
            bail!("{command:?} exited ({status}) before listening");
        };
        // Keep draining its log so the pipe never fills.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            addr,
            metrics_addr,
        })
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub(crate) fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(&self.pid())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks the process to stop (SIGTERM, by its PID) and waits up to `grace`.
    pub(crate) fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("process {} did not stop within {grace:?}", self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The contact-server binary: `--server-bin`, else next to this one.
pub(crate) fn server_bin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("contact-server");
    if sibling.exists() {
        Ok(sibling)
    } else {
        bail!(
            "no contact-server binary next to {}; build it (cargo build --release) or pass --server-bin",
            me.display()
        )
    }
}
