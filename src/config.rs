//! The daemon's configuration: one tree with documented defaults, read from
//! an optional TOML file and checked before anything starts.
//!
//! Precedence, lowest first: the `DEFAULT_*` constants below < the file given
//! with `--config` < `CONTACT_*` environment variables < command-line flags.
//! The last two only cover the listen addresses and the log filter and are
//! applied by `main.rs`; this module owns the file and the defaults.
//! `config/contact-server.toml` lists every key at its default, and a test
//! keeps it equal to [`Config::default`].

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

/// Default gRPC listen address: loopback, the seed's port.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default Prometheus scrape address: loopback, its own port.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and transport limits.
    pub server: ServerConfig,
    /// Worker sessions.
    pub workers: WorkersConfig,
    /// Task handling.
    pub tasks: TasksConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[server]`: listeners and transport limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Prometheus `/metrics` listen address.
    pub metrics_addr: SocketAddr,
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
}

/// `[tasks]`: task handling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Deliveries of a task before it is dead-lettered.
    pub max_attempts: u32,
    /// Finished tasks kept for `Get` and `Wait`.
    pub max_finished_tasks: usize,
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
        }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_finished_tasks: DEFAULT_MAX_FINISHED_TASKS,
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
        let s = &self.server;
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
        if self.tasks.max_attempts == 0 {
            return Err(invalid("tasks.max_attempts", 0, "must be at least 1"));
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

    /// How long a stopping server waits for workers to finish.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.server.drain_timeout_secs)
    }
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
    }

    /// Keys left out keep their defaults.
    #[test]
    fn partial_file_keeps_defaults() {
        let config = Config::from_toml("[tasks]\nmax_attempts = 2\n", "t.toml").unwrap();
        assert_eq!(config.tasks.max_attempts, 2);
        assert_eq!(config.server, ServerConfig::default());
    }
}
