//! Checking a configuration: every value that parsing alone cannot, each
//! refusal naming its key, so a bad file stops the daemon at start (exit
//! code 64) instead of misbehaving later.

use super::{Config, ConfigError, MAX_CONFIG_DURATION_SECS, MAX_METRICS_QUEUE_LABELS};

impl Config {
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
        if !(1024..=super::MAX_MESSAGE_BYTES_LIMIT).contains(&s.max_message_bytes) {
            return Err(invalid(
                "server.max_message_bytes",
                s.max_message_bytes,
                "must be from 1024 to 67108864 (64 MiB)",
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
        if t.dead_letter_max_count == 0 || t.dead_letter_max_bytes == 0 || t.max_finished_bytes == 0
        {
            return Err(invalid(
                "tasks.dead_letter_max_count, dead_letter_max_bytes, max_finished_bytes",
                0,
                "must be at least 1",
            ));
        }
        if t.max_queue_depth == 0 {
            return Err(invalid("tasks.max_queue_depth", 0, "must be at least 1"));
        }
        if t.max_pending_tasks == 0 {
            return Err(invalid("tasks.max_pending_tasks", 0, "must be at least 1"));
        }
        if t.max_lease_secs > super::MAX_LEASE_SECS_LIMIT {
            return Err(invalid(
                "tasks.max_lease_secs",
                t.max_lease_secs,
                "must be at most 4294967 (about 49 days)",
            ));
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
        if !(1024 * 1024..=16 * 1024 * 1024 * 1024).contains(&self.storage.segment_bytes) {
            return Err(invalid(
                "storage.segment_bytes",
                self.storage.segment_bytes,
                "must be from 1048576 (1 MiB) to 17179869184 (16 GiB)",
            ));
        }
        if self.storage.mode == super::StorageMode::Journal
            && self.storage.dir.as_os_str().is_empty()
        {
            return Err(invalid("storage.dir", "\"\"", "must name a directory"));
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
        if !(1..=1_000_000).contains(&s.max_connections) {
            return Err(invalid(
                "server.max_connections",
                s.max_connections,
                "must be from 1 to 1000000",
            ));
        }
        if s.max_concurrent_streams < 4 {
            return Err(invalid(
                "server.max_concurrent_streams",
                s.max_concurrent_streams,
                "must be at least 4 (a worker keeps three calls open)",
            ));
        }
        if s.max_local_reset_streams == 0 {
            return Err(invalid(
                "server.max_local_reset_streams",
                0,
                "must be at least 1",
            ));
        }
        if !(1..=300).contains(&s.handshake_timeout_secs) {
            return Err(invalid(
                "server.handshake_timeout_secs",
                s.handshake_timeout_secs,
                "must be from 1 to 300",
            ));
        }
        if self.tasks.max_pending_bytes == 0 {
            return Err(invalid("tasks.max_pending_bytes", 0, "must be at least 1"));
        }
        self.tls.validate()?;
        self.auth.validate()?;
        if self.tls.client_ca_file.is_none()
            && let Some(p) = self
                .auth
                .principals
                .iter()
                .find(|p| p.tls_identity.is_some())
        {
            return Err(invalid(
                "auth.principals.tls_identity",
                &p.name,
                "needs tls.client_ca_file: without it no client certificate is checked",
            ));
        }
        super::auth::check_exposure(self)
    }

    /// Every duration key with its value, and whether it is in milliseconds.
    fn durations(&self) -> Vec<(&'static str, u64, bool)> {
        let (s, w, t) = (&self.server, &self.workers, &self.tasks);
        let mut all = vec![
            ("server.drain_timeout_secs", s.drain_timeout_secs, false),
            ("server.http2_keepalive_secs", s.http2_keepalive_secs, false),
            ("server.idle_timeout_secs", s.idle_timeout_secs, false),
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
            (
                "tasks.dead_letter_max_age_secs",
                t.dead_letter_max_age_secs,
                false,
            ),
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
