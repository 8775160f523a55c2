//! The `contact-server` binary itself: it refuses a bad config with exit code
//! 64 and a message naming the key, and on SIGTERM it drains and exits 0;
//! and the files that run it as a service (systemd unit, Grafana dashboard)
//! stay true to it.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use common::within;
use contact_server::proto::v1::{SubmitRequest, tasks_client::TasksClient};

const BIN: &str = env!("CARGO_BIN_EXE_contact-server");

/// Runs the daemon on a config file holding `text`; it must refuse to start
/// with exit code 64. Returns what it printed on stderr.
fn refused_config(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("contact-server-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let output = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(output.status.code(), Some(64));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config with an unknown key or a bad value stops the daemon at start,
/// with a message naming the key.
#[test]
fn bad_config_exits_64_naming_the_key() {
    let stderr = refused_config("typo.toml", "[workers]\ndefault_max_in_flihgt = 3\n");
    assert!(stderr.contains("default_max_in_flihgt"), "{stderr}");
    let stderr = refused_config("zero.toml", "[tasks]\nmax_attempts = 0\n");
    assert!(stderr.contains("tasks.max_attempts"), "{stderr}");
}

/// The daemon serves on the addresses it is given (in any of the forms the
/// tools take), and SIGTERM makes it drain and exit 0.
#[tokio::test]
async fn daemon_serves_and_exits_0_on_sigterm() {
    let data = common::TempDir::new("daemon");
    let mut child = Command::new(BIN)
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/contact-server.toml"),
        ])
        // The address forms every tool takes: localhost:PORT, http://host:port.
        .args([
            "--grpc-addr",
            "localhost:0",
            "--metrics-addr",
            "http://127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data.0)
        .env("RUST_LOG", "contact_server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop {
        pid: child.id(),
        exited: false,
    };
    let stderr = child.stderr.take().unwrap();
    // The daemon logs the addresses it bound; read them off its log.
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let log_reader = std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        let mut log = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split("grpc_addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().to_owned();
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr);
                }
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let addr = within("the daemon's listening line", addr_rx)
        .await
        .unwrap();
    let mut tasks = within("connect", TasksClient::connect(format!("http://{addr}")))
        .await
        .unwrap();
    let reply = within("submit", tasks.submit(SubmitRequest::default()))
        .await
        .unwrap();
    assert!(!reply.into_inner().task_id.is_empty());
    drop(tasks);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = within(
        "the daemon to exit",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .unwrap()
    .unwrap();
    let log = log_reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stop signal received"), "{log}");
    assert!(log.contains("contact-server stopped"), "{log}");
    guard.exited = true;
}

/// Kills the daemon (by the PID we started) if the test fails before it exits.
struct KillOnDrop {
    pid: u32,
    exited: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.exited {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// The systemd unit gives the drain time to finish: TimeoutStopSec covers the
/// default drain timeout plus the last shutdown steps.
#[test]
fn systemd_unit_waits_out_the_drain() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("config/contact-server.service")).unwrap();
    let stop_secs: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let grace = contact_server::server::STOP_GRACE.as_secs() * 4;
    let drain = contact_server::Config::default().server.drain_timeout_secs;
    assert!(
        stop_secs >= drain + grace,
        "TimeoutStopSec={stop_secs} < {drain} + {grace}"
    );
    assert!(unit.contains("RestartPreventExitStatus=64"));
}

/// The Grafana dashboard only charts metrics the server exports.
#[test]
fn grafana_dashboard_uses_real_metric_names() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("config/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    // Every metric name is a constant in the metrics module's root.
    let exported = std::fs::read_to_string(root.join("src/metrics/mod.rs")).unwrap();
    let mut charted = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("contact_") {
                    // A histogram is charted by its series, named after it.
                    let metric = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| word.strip_suffix(suffix))
                        .unwrap_or(word);
                    assert!(
                        exported.contains(&format!("\"{metric}\"")),
                        "{metric} is not exported"
                    );
                    charted += 1;
                }
            }
        }
    }
    assert!(charted >= 10, "only {charted} metrics charted");
}
