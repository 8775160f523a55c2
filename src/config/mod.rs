//! The daemon's configuration: one tree with documented defaults, read from
//! an optional TOML file and checked before anything starts.
//!
//! Precedence, lowest first: the `DEFAULT_*` constants below < the file given
//! with `--config` < `CONTACT_*` environment variables < command-line flags.
//! The last two only cover the listen addresses and the log filter and are
//! applied by `main.rs`; this module owns the file and the defaults.
//! `config/contact-server.toml` lists every key at its default, and a test
//! keeps it equal to [`Config::default`].

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

mod auth;
mod listen_addr;
mod tls;
mod validate;

pub use auth::{AuthConfig, PrincipalConfig};
pub use tls::TlsConfig;

pub use listen_addr::parse_listen_addr;

/// Default gRPC listen address: loopback, the seed's port.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default Prometheus scrape address: loopback, its own port.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
/// Queues with their own `queue` label on the per-queue gauges; the rest
/// share one "(other)" series, so a producer inventing queue names cannot
/// flood Prometheus with series.
pub const DEFAULT_METRICS_QUEUE_LABELS: usize = 64;
/// The most `server.metrics_queue_labels` may be.
pub const MAX_METRICS_QUEUE_LABELS: usize = 10_000;
/// Largest gRPC message the server decodes or encodes, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The most `server.max_message_bytes` may be (64 MiB): the Rust client
/// accepts messages up to this size.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// The longest lease `tasks.max_lease_secs` may allow: leases are kept in
/// milliseconds in 32 bits (about 49 days).
pub const MAX_LEASE_SECS_LIMIT: u64 = u32::MAX as u64 / 1000;
/// How long a stopping server waits for workers to acknowledge what they hold.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;
/// Open connections of the gRPC listener at the most; more are closed at
/// accept. Keep it below the process's file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// HTTP/2 streams (calls) open at once on one connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Streams the server may reset on one connection (for the client's
/// errors) before it closes the connection: the "MadeYouReset" bound.
pub const DEFAULT_MAX_LOCAL_RESET_STREAMS: usize = 128;
/// Seconds a new connection has to send its HTTP/2 preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Seconds a connection may stay open with no call.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// Interval of HTTP/2 keepalive pings to each connection.
pub const DEFAULT_HTTP2_KEEPALIVE_SECS: u64 = 20;
/// Default tracing filter when `RUST_LOG` is unset: quiet dependencies.
pub const DEFAULT_LOG_FILTER: &str = "warn,contact_server=info";
/// In-flight limit of a worker that does not ask for one.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 8;
/// The highest in-flight limit a worker may ask for; it sizes the stream buffer.
pub const DEFAULT_MAX_IN_FLIGHT_CAP: u32 = 1024;
/// Deliveries of a task (counting ones cut short by a lost worker) before it
/// is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Bytes of finished tasks (text, payload, result) kept for `Get`/`Wait`.
pub const DEFAULT_MAX_FINISHED_BYTES: u64 = 256 * 1024 * 1024;
/// Dead letters kept at the most; past it the oldest are dropped.
pub const DEFAULT_DEAD_LETTER_MAX_COUNT: usize = 100_000;
/// Bytes of dead letters (text, payload, result) kept at the most.
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// How long a dead letter is kept: 7 days.
pub const DEFAULT_DEAD_LETTER_MAX_AGE_SECS: u64 = 7 * 24 * 3600;
/// How many finished (done) tasks are kept for `Get`/`Wait`; the oldest go first.
pub const DEFAULT_MAX_FINISHED_TASKS: usize = 100_000;
/// Most pending tasks in one queue (or held for one worker); more is refused.
pub const DEFAULT_MAX_QUEUE_DEPTH: usize = 1_000_000;
/// Most pending tasks in the whole server, whatever their queue.
pub const DEFAULT_MAX_PENDING_TASKS: usize = 2_000_000;
/// Most bytes (text and payload) of unfinished tasks in the whole server:
/// 1 GiB.
pub const DEFAULT_MAX_PENDING_BYTES: u64 = 1024 * 1024 * 1024;
/// Default execution lease of a delivery.
pub const DEFAULT_LEASE_SECS: u64 = 60;
/// The longest lease a task or an extension may ask for.
pub const DEFAULT_MAX_LEASE_SECS: u64 = 3600;
/// How long a task for an offline worker waits for it before it is
/// dead-lettered as undeliverable.
pub const DEFAULT_TARGET_TTL_SECS: u64 = 3600;
/// How long an idempotency key is remembered.
pub const DEFAULT_IDEMPOTENCY_WINDOW_SECS: u64 = 600;
/// First retry delay after a failure.
pub const DEFAULT_RETRY_INITIAL_DELAY_MS: u64 = 1000;
/// Growth of the retry delay per attempt.
pub const DEFAULT_RETRY_FACTOR: f64 = 2.0;
/// Longest retry delay.
pub const DEFAULT_RETRY_MAX_DELAY_MS: u64 = 60_000;
/// The furthest in the future a task's not-before time may be: 30 days.
pub const DEFAULT_MAX_DELAY_SECS: u64 = 30 * 24 * 3600;
/// The longest any duration in the file may be (ten years): longer ones are
/// surely typos, and deadlines built from them would overflow the clock.
pub const MAX_CONFIG_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;
/// How long a worker that asked for receipts has to confirm a task.
pub const DEFAULT_RECEIPT_TIMEOUT_MS: u64 = 5000;
/// How long a worker that asked for keepalives may stay silent.
pub const DEFAULT_LIVENESS_TIMEOUT_SECS: u64 = 15;
/// How long a dropped worker's tasks wait for it to resume.
pub const DEFAULT_RESUME_GRACE_SECS: u64 = 5;
/// The shortest keepalive interval a worker may ask for.
pub const DEFAULT_MIN_KEEPALIVE_MS: u64 = 100;

/// Why a configuration could not be used. Each message names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A key holds a value outside its allowed range.
    #[error("config key {key} = {value} is not valid: {reason}")]
    Invalid {
        /// Dotted key, e.g. `workers.default_max_in_flight`.
        key: &'static str,
        /// The bad value.
        value: String,
        /// What would be valid.
        reason: String,
    },
}

/// Default journal directory, relative to the working directory.
pub const DEFAULT_STORAGE_DIR: &str = "contact-data";
/// A new journal segment is started past this size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and transport limits.
    pub server: ServerConfig,
    /// Worker sessions.
    pub workers: WorkersConfig,
    /// Task handling.
    pub tasks: TasksConfig,
    /// Per-queue overrides of `[tasks]`, by queue name.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Where accepted tasks are kept.
    pub storage: StorageConfig,
    /// TLS for the gRPC listener.
    pub tls: TlsConfig,
    /// Who may call what.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[server]`: listeners and transport limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC listen address.
    #[serde(with = "listen_addr")]
    pub grpc_addr: SocketAddr,
    /// Prometheus `/metrics` listen address.
    #[serde(with = "listen_addr")]
    pub metrics_addr: SocketAddr,
    /// Queues with their own label on per-queue gauges (configured queues
    /// first, then the first others seen); the rest share "(other)".
    pub metrics_queue_labels: usize,
    /// Largest gRPC message, in bytes, in either direction.
    pub max_message_bytes: usize,
    /// Seconds a stopping server waits for workers to finish what they hold.
    pub drain_timeout_secs: u64,
    /// Seconds between HTTP/2 keepalive pings; 0 turns them off.
    pub http2_keepalive_secs: u64,
    /// Open gRPC connections at the most.
    pub max_connections: usize,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Streams the server may reset on one connection before closing it.
    pub max_local_reset_streams: usize,
    /// Seconds a new connection has to send its HTTP/2 preface.
    pub handshake_timeout_secs: u64,
    /// Seconds a connection may have no call open before it is closed; 0:
    /// never.
    pub idle_timeout_secs: u64,
}

/// `[workers]`: worker sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// In-flight limit of a worker that does not ask for one.
    pub default_max_in_flight: u32,
    /// The highest in-flight limit a worker may ask for.
    pub max_in_flight_cap: u32,
    /// Milliseconds a worker that asked for receipts has to confirm a task.
    pub receipt_timeout_ms: u64,
    /// Seconds a worker that asked for keepalives may stay silent before it
    /// is expired and its tasks redelivered.
    pub liveness_timeout_secs: u64,
    /// Seconds a dropped worker (with its own id) has to resume its session.
    pub resume_grace_secs: u64,
    /// The shortest keepalive interval a worker may ask for, in ms.
    pub min_keepalive_ms: u64,
}

/// `[tasks]`: task handling, and the policy of every queue that has no
/// `[queues.NAME]` override.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Deliveries of a task before it is dead-lettered.
    pub max_attempts: u32,
    /// Finished tasks kept for `Get` and `Wait`.
    pub max_finished_tasks: usize,
    /// Bytes of finished tasks kept for `Get` and `Wait`.
    pub max_finished_bytes: u64,
    /// Dead letters kept at the most (the oldest dropped first).
    pub dead_letter_max_count: usize,
    /// Bytes of dead letters kept at the most.
    pub dead_letter_max_bytes: u64,
    /// Seconds a dead letter is kept.
    pub dead_letter_max_age_secs: u64,
    /// Most pending tasks per queue (and per targeted worker).
    pub max_queue_depth: usize,
    /// Most pending tasks in the whole server.
    pub max_pending_tasks: usize,
    /// Bytes (text and payload) of tasks not yet finished, server-wide.
    pub max_pending_bytes: u64,
    /// Default execution lease, in seconds.
    pub lease_secs: u64,
    /// Longest lease a task or extension may ask for, in seconds.
    pub max_lease_secs: u64,
    /// Seconds a task for an offline worker waits before it is dead-lettered.
    pub target_ttl_secs: u64,
    /// Seconds an idempotency key is remembered.
    pub idempotency_window_secs: u64,
    /// First retry delay after a failure, in ms.
    pub retry_initial_delay_ms: u64,
    /// Growth of the retry delay per attempt.
    pub retry_factor: f64,
    /// Longest retry delay, in ms.
    pub retry_max_delay_ms: u64,
    /// The furthest in the future a task's not-before time may be, in seconds.
    pub max_delay_secs: u64,
}

/// `[queues.NAME]`: one queue's overrides; a key left out takes `[tasks]`'s value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Deliveries before dead-lettering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Most pending tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_depth: Option<usize>,
    /// First retry delay, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_initial_delay_ms: Option<u64>,
    /// Growth of the retry delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_factor: Option<f64>,
    /// Longest retry delay, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_delay_ms: Option<u64>,
}

/// Where accepted tasks are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// An append-only journal in `storage.dir`: tasks survive restarts.
    Journal,
    /// Memory only: a restart loses every task.
    Memory,
}

/// When an answer that depends on the journal may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageSync {
    /// Once the record reached the kernel: survives a crash or `kill -9` of
    /// the server, not a power cut.
    Write,
    /// Once the record is on the disk (`fdatasync`): survives a power cut.
    Fsync,
}

/// `[storage]`: where accepted tasks are kept, and how durably.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `journal` (the default) or `memory`.
    pub mode: StorageMode,
    /// The journal's directory (one server per directory).
    pub dir: std::path::PathBuf,
    /// `write` (the default) or `fsync`.
    pub sync: StorageSync,
    /// A new segment is started past this many bytes.
    pub segment_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            mode: StorageMode::Journal,
            dir: DEFAULT_STORAGE_DIR.into(),
            sync: StorageSync::Write,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// `[log]`: logging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter used when `RUST_LOG` is not set.
    pub filter: String,
}

/// Parses a built-in default address; the constants above are valid by
/// construction, and a unit test parses each one.
fn default_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: default_addr(DEFAULT_GRPC_ADDR),
            metrics_addr: default_addr(DEFAULT_METRICS_ADDR),
            metrics_queue_labels: DEFAULT_METRICS_QUEUE_LABELS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
            http2_keepalive_secs: DEFAULT_HTTP2_KEEPALIVE_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_local_reset_streams: DEFAULT_MAX_LOCAL_RESET_STREAMS,
            handshake_timeout_secs: DEFAULT_HANDSHAKE_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            default_max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_cap: DEFAULT_MAX_IN_FLIGHT_CAP,
            receipt_timeout_ms: DEFAULT_RECEIPT_TIMEOUT_MS,
            liveness_timeout_secs: DEFAULT_LIVENESS_TIMEOUT_SECS,
            resume_grace_secs: DEFAULT_RESUME_GRACE_SECS,
            min_keepalive_ms: DEFAULT_MIN_KEEPALIVE_MS,
        }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_finished_tasks: DEFAULT_MAX_FINISHED_TASKS,
            max_finished_bytes: DEFAULT_MAX_FINISHED_BYTES,
            dead_letter_max_count: DEFAULT_DEAD_LETTER_MAX_COUNT,
            dead_letter_max_bytes: DEFAULT_DEAD_LETTER_MAX_BYTES,
            dead_letter_max_age_secs: DEFAULT_DEAD_LETTER_MAX_AGE_SECS,
            max_queue_depth: DEFAULT_MAX_QUEUE_DEPTH,
            max_pending_tasks: DEFAULT_MAX_PENDING_TASKS,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            lease_secs: DEFAULT_LEASE_SECS,
            max_lease_secs: DEFAULT_MAX_LEASE_SECS,
            target_ttl_secs: DEFAULT_TARGET_TTL_SECS,
            idempotency_window_secs: DEFAULT_IDEMPOTENCY_WINDOW_SECS,
            retry_initial_delay_ms: DEFAULT_RETRY_INITIAL_DELAY_MS,
            retry_factor: DEFAULT_RETRY_FACTOR,
            retry_max_delay_ms: DEFAULT_RETRY_MAX_DELAY_MS,
            max_delay_secs: DEFAULT_MAX_DELAY_SECS,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: DEFAULT_LOG_FILTER.to_owned(),
        }
    }
}

impl WorkersConfig {
    /// What a worker's registration may ask for under this configuration.
    pub fn registration_limits(&self) -> crate::domain::RegistrationLimits {
        crate::domain::RegistrationLimits {
            default_max_in_flight: self.default_max_in_flight,
            max_in_flight_cap: self.max_in_flight_cap,
            min_keepalive: Duration::from_millis(self.min_keepalive_ms),
            liveness_timeout: Duration::from_secs(self.liveness_timeout_secs),
        }
    }
}

impl Config {
    /// Reads and validates a config file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// What a submission may ask for under this configuration.
    pub fn submit_limits(&self) -> crate::domain::SubmitLimits {
        crate::domain::SubmitLimits {
            max_delay: Duration::from_secs(self.tasks.max_delay_secs),
            max_message_bytes: self.server.max_message_bytes,
        }
    }

    /// How long a stopping server waits for workers to finish.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.server.drain_timeout_secs)
    }
}

#[cfg(test)]
mod tests;
