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
/// How long a stopping server waits for workers to acknowledge what they hold.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;
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
/// How many finished (done) tasks are kept for `Get`/`Wait`; the oldest go first.
pub const DEFAULT_MAX_FINISHED_TASKS: usize = 100_000;
/// Most pending tasks in one queue (or held for one worker); more is refused.
pub const DEFAULT_MAX_QUEUE_DEPTH: usize = 1_000_000;
/// Most pending tasks in the whole server, whatever their queue.
pub const DEFAULT_MAX_PENDING_TASKS: usize = 2_000_000;
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
    /// Most pending tasks per queue (and per targeted worker).
    pub max_queue_depth: usize,
    /// Most pending tasks in the whole server.
    pub max_pending_tasks: usize,
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

/// `[log]`: logging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter used when `RUST_LOG` is not set.
    pub filter: String,
}

/// Reads a listen address the way every tool of the project reads a server
/// address: `host:port`, `http://host:port` (the scheme and a trailing `/`
/// are dropped) and `localhost:port` (loopback, 127.0.0.1) alike. A listen
/// address needs its port; the host is an IP address or `localhost`.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let bare = text.trim();
    let bare = bare.strip_prefix("http://").unwrap_or(bare);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let bare = match bare.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => bare.to_owned(),
    };
    bare.parse().map_err(|_| {
        format!(
            "{} is not a listen address: give host:port, with an IP address or localhost \
             (e.g. 127.0.0.1:50051, localhost:50051, [::1]:50051)",
            crate::domain::quote(text)
        )
    })
}

/// Listen addresses in the file: read with [`parse_listen_addr`], written
/// as `ip:port`.
mod listen_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(addr: &SocketAddr, out: S) -> Result<S::Ok, S::Error> {
        out.collect_str(addr)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(input)?;
        super::parse_listen_addr(&text).map_err(serde::de::Error::custom)
    }
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
            max_queue_depth: DEFAULT_MAX_QUEUE_DEPTH,
            max_pending_tasks: DEFAULT_MAX_PENDING_TASKS,
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

    /// Checks every value that parsing alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                reason: reason.to_owned(),
            }
        }
        for (key, value, in_ms) in self.durations() {
            let (limit, unit) = if in_ms {
                (MAX_CONFIG_DURATION_SECS * 1000, "ms")
            } else {
                (MAX_CONFIG_DURATION_SECS, "s")
            };
            if value > limit {
                return Err(invalid(
                    key,
                    value,
                    &format!("must be at most ten years ({limit} {unit})"),
                ));
            }
        }
        let s = &self.server;
        if s.metrics_queue_labels > MAX_METRICS_QUEUE_LABELS {
            return Err(invalid(
                "server.metrics_queue_labels",
                s.metrics_queue_labels,
                "must be at most 10000",
            ));
        }
        if s.max_message_bytes < 1024 {
            return Err(invalid(
                "server.max_message_bytes",
                s.max_message_bytes,
                "must be at least 1024",
            ));
        }
        if s.drain_timeout_secs == 0 {
            return Err(invalid(
                "server.drain_timeout_secs",
                0,
                "must be at least 1",
            ));
        }
        let w = &self.workers;
        if w.max_in_flight_cap == 0 || w.max_in_flight_cap > 65_536 {
            return Err(invalid(
                "workers.max_in_flight_cap",
                w.max_in_flight_cap,
                "must be from 1 to 65536",
            ));
        }
        if w.default_max_in_flight == 0 || w.default_max_in_flight > w.max_in_flight_cap {
            return Err(invalid(
                "workers.default_max_in_flight",
                w.default_max_in_flight,
                "must be from 1 to workers.max_in_flight_cap",
            ));
        }
        if w.receipt_timeout_ms == 0 {
            return Err(invalid(
                "workers.receipt_timeout_ms",
                0,
                "must be at least 1",
            ));
        }
        if w.liveness_timeout_secs == 0 {
            return Err(invalid(
                "workers.liveness_timeout_secs",
                0,
                "must be at least 1",
            ));
        }
        if w.min_keepalive_ms == 0 || w.min_keepalive_ms >= w.liveness_timeout_secs * 1000 {
            return Err(invalid(
                "workers.min_keepalive_ms",
                w.min_keepalive_ms,
                "must be at least 1 and below workers.liveness_timeout_secs",
            ));
        }
        let t = &self.tasks;
        if t.max_attempts == 0 {
            return Err(invalid("tasks.max_attempts", 0, "must be at least 1"));
        }
        if t.max_queue_depth == 0 {
            return Err(invalid("tasks.max_queue_depth", 0, "must be at least 1"));
        }
        if t.max_pending_tasks == 0 {
            return Err(invalid("tasks.max_pending_tasks", 0, "must be at least 1"));
        }
        if t.lease_secs == 0 || t.lease_secs > t.max_lease_secs {
            return Err(invalid(
                "tasks.lease_secs",
                t.lease_secs,
                "must be from 1 to tasks.max_lease_secs",
            ));
        }
        if t.target_ttl_secs == 0 {
            return Err(invalid("tasks.target_ttl_secs", 0, "must be at least 1"));
        }
        check_retry(
            "tasks.retry_factor",
            t.retry_factor,
            "tasks.retry_max_delay_ms",
            t.retry_initial_delay_ms,
            t.retry_max_delay_ms,
        )?;
        for (name, queue) in &self.queues {
            if crate::domain::QueueName::parse(name).is_err() {
                return Err(invalid(
                    "queues",
                    name,
                    "is not a queue name (letters, digits, '-', '_', '.', ':')",
                ));
            }
            if queue.max_attempts == Some(0) {
                return Err(invalid("queues.*.max_attempts", name, "must be at least 1"));
            }
            if queue.max_queue_depth == Some(0) {
                return Err(invalid(
                    "queues.*.max_queue_depth",
                    name,
                    "must be at least 1",
                ));
            }
            check_retry(
                "queues.*.retry_factor",
                queue.retry_factor.unwrap_or(t.retry_factor),
                "queues.*.retry_max_delay_ms",
                queue
                    .retry_initial_delay_ms
                    .unwrap_or(t.retry_initial_delay_ms),
                queue.retry_max_delay_ms.unwrap_or(t.retry_max_delay_ms),
            )?;
        }
        if self
            .log
            .filter
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(invalid(
                "log.filter",
                &self.log.filter,
                "is not a tracing filter such as \"warn,contact_server=info\"",
            ));
        }
        Ok(())
    }

    /// Every duration key with its value, and whether it is in milliseconds.
    fn durations(&self) -> Vec<(&'static str, u64, bool)> {
        let (s, w, t) = (&self.server, &self.workers, &self.tasks);
        let mut all = vec![
            ("server.drain_timeout_secs", s.drain_timeout_secs, false),
            ("server.http2_keepalive_secs", s.http2_keepalive_secs, false),
            ("workers.receipt_timeout_ms", w.receipt_timeout_ms, true),
            (
                "workers.liveness_timeout_secs",
                w.liveness_timeout_secs,
                false,
            ),
            ("workers.resume_grace_secs", w.resume_grace_secs, false),
            ("workers.min_keepalive_ms", w.min_keepalive_ms, true),
            ("tasks.lease_secs", t.lease_secs, false),
            ("tasks.max_lease_secs", t.max_lease_secs, false),
            ("tasks.target_ttl_secs", t.target_ttl_secs, false),
            (
                "tasks.idempotency_window_secs",
                t.idempotency_window_secs,
                false,
            ),
            (
                "tasks.retry_initial_delay_ms",
                t.retry_initial_delay_ms,
                true,
            ),
            ("tasks.retry_max_delay_ms", t.retry_max_delay_ms, true),
            ("tasks.max_delay_secs", t.max_delay_secs, false),
        ];
        for queue in self.queues.values() {
            all.extend(
                queue
                    .retry_initial_delay_ms
                    .map(|ms| ("queues.*.retry_initial_delay_ms", ms, true)),
            );
            all.extend(
                queue
                    .retry_max_delay_ms
                    .map(|ms| ("queues.*.retry_max_delay_ms", ms, true)),
            );
        }
        all
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

fn check_retry(
    factor_key: &'static str,
    factor: f64,
    max_key: &'static str,
    initial_ms: u64,
    max_ms: u64,
) -> Result<(), ConfigError> {
    if !(1.0..=100.0).contains(&factor) {
        return Err(ConfigError::Invalid {
            key: factor_key,
            value: factor.to_string(),
            reason: "must be from 1.0 to 100.0".into(),
        });
    }
    if max_ms < initial_ms {
        return Err(ConfigError::Invalid {
            key: max_key,
            value: max_ms.to_string(),
            reason: "must be at least the initial retry delay".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The example file documents exactly the defaults: it cannot drift.
    #[test]
    fn example_file_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/contact-server.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
    }

    /// The default address constants parse, so `default_addr` never falls back.
    #[test]
    fn default_addresses_parse() {
        assert!(DEFAULT_GRPC_ADDR.parse::<SocketAddr>().is_ok());
        assert!(DEFAULT_METRICS_ADDR.parse::<SocketAddr>().is_ok());
        Config::default().validate().unwrap();
    }

    /// An unknown key stops the daemon with a message naming it.
    #[test]
    fn unknown_key_is_named() {
        let err =
            Config::from_toml("[server]\ngrpc_adr = \"127.0.0.1:1\"\n", "t.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("grpc_adr"), "{text}");
        assert!(text.contains("t.toml"), "{text}");
    }

    /// A bad value is named with its key, whether parsing or validation finds it.
    #[test]
    fn bad_values_are_named() {
        let err = Config::from_toml("[server]\ngrpc_addr = \"nowhere\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("grpc_addr"), "{err}");
        let err =
            Config::from_toml("[workers]\ndefault_max_in_flight = 0\n", "t.toml").unwrap_err();
        assert!(
            err.to_string().contains("workers.default_max_in_flight"),
            "{err}"
        );
        let err = Config::from_toml("[tasks]\nmax_attempts = -1\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
        let err =
            Config::from_toml("[queues.\"bad name\"]\nmax_attempts = 2\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("bad name"), "{err}");
        let err = Config::from_toml("[queues.mail]\nretry_factor = 0.5\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("queues.*.retry_factor"), "{err}");
    }

    /// Absurd durations are refused at start, naming the key, instead of
    /// overflowing a deadline later.
    #[test]
    fn absurd_durations_are_refused() {
        for text in [
            "[tasks]\nidempotency_window_secs = 18446744073709551615\n",
            "[workers]\nresume_grace_secs = 999999999999\n",
            "[queues.mail]\nretry_max_delay_ms = 18446744073709551615\n",
        ] {
            let err = Config::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(err.contains("ten years"), "{err}");
        }
        let err = Config::from_toml("[workers]\nmin_keepalive_ms = 15000\n", "t.toml").unwrap_err();
        assert!(
            err.to_string().contains("workers.min_keepalive_ms"),
            "{err}"
        );
    }

    /// Listen addresses take the forms every tool takes; a missing port or a
    /// host name other than localhost is refused with the forms that work.
    #[test]
    fn listen_addresses_take_every_form() {
        for text in ["127.0.0.1:7000", "localhost:7000", "http://localhost:7000/"] {
            assert_eq!(
                parse_listen_addr(text),
                Ok("127.0.0.1:7000".parse().unwrap())
            );
        }
        assert_eq!(
            parse_listen_addr("[::1]:7000"),
            Ok("[::1]:7000".parse().unwrap())
        );
        for bad in ["localhost", "example.com:80", "127.0.0.1"] {
            assert!(
                parse_listen_addr(bad)
                    .unwrap_err()
                    .contains("localhost:50051"),
                "{bad}"
            );
        }
        let config = Config::from_toml("[server]\ngrpc_addr = \"localhost:7001\"\n", "t").unwrap();
        assert_eq!(config.server.grpc_addr, "127.0.0.1:7001".parse().unwrap());
    }

    /// A queue section overrides only the keys it names.
    #[test]
    fn queue_overrides_parse() {
        let config = Config::from_toml("[queues.mail]\nmax_attempts = 9\n", "t.toml").unwrap();
        assert_eq!(config.queues["mail"].max_attempts, Some(9));
        assert_eq!(config.queues["mail"].retry_factor, None);
    }

    /// Keys left out keep their defaults.
    #[test]
    fn partial_file_keeps_defaults() {
        let config = Config::from_toml("[tasks]\nmax_attempts = 2\n", "t.toml").unwrap();
        assert_eq!(config.tasks.max_attempts, 2);
        assert_eq!(config.server, ServerConfig::default());
    }
}
