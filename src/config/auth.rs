//! `[auth]`: the principals that may call the server, each known by the
//! SHA-256 hash of its bearer token, and protected mode, which keeps a
//! server with none of them on loopback.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::auth::{Principal, Principals, Role, token};
use crate::domain::{ClientId, QueueName};

/// `[auth]`: who may call what.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Listen on addresses other than loopback with no principal
    /// configured: anyone who reaches the port may do anything.
    pub allow_unauthenticated: bool,
    /// The SHA-256 (hex) of the token `GET /metrics` asks for; empty:
    /// none (the HTTP listener is on loopback by default).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metrics_token_sha256: String,
    /// The principals; none turns authentication off.
    pub principals: Vec<PrincipalConfig>,
}

/// `[[auth.principals]]`: one caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// Its name, for logs and messages.
    pub name: String,
    /// The SHA-256 of its token, in hex (`contact-server token` prints it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_sha256: String,
    /// A name its TLS client certificate proves (a DNS or URI subject
    /// alternative name, or the subject's common name), with `[tls]
    /// client_ca_file` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_identity: Option<String>,
    /// What it may do: `worker`, `producer`, `admin`.
    pub roles: Vec<Role>,
    /// The queues it may submit to or take tasks from; empty: every queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// The only worker id it may register and act as; no other principal
    /// may act as that worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

fn invalid(key: &'static str, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

impl AuthConfig {
    /// Checks every principal.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.metrics_token_sha256.is_empty()
            && token::parse_hex_hash(&self.metrics_token_sha256).is_none()
        {
            return Err(invalid(
                "auth.metrics_token_sha256",
                crate::domain::quote(&self.metrics_token_sha256),
                "must be the 64 hex digits of a SHA-256 (contact-server token prints one)",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        let mut pinned = std::collections::HashSet::new();
        let mut identities = std::collections::HashSet::new();
        for p in &self.principals {
            if p.name.trim().is_empty() || p.name.len() > 128 {
                return Err(invalid(
                    "auth.principals.name",
                    &p.name,
                    "must be 1 to 128 characters",
                ));
            }
            if !names.insert(&p.name) {
                return Err(invalid("auth.principals.name", &p.name, "is used twice"));
            }
            if p.token_sha256.is_empty() && p.tls_identity.is_none() {
                return Err(invalid(
                    "auth.principals.token_sha256",
                    &p.name,
                    "or tls_identity is needed: how else would it prove who it is",
                ));
            }
            if !p.token_sha256.is_empty() {
                let Some(hash) = token::parse_hex_hash(&p.token_sha256) else {
                    return Err(invalid(
                        "auth.principals.token_sha256",
                        &p.name,
                        "must be the 64 hex digits of a SHA-256 (contact-server token prints one)",
                    ));
                };
                if !hashes.insert(hash) {
                    return Err(invalid(
                        "auth.principals.token_sha256",
                        &p.name,
                        "is another principal's token too",
                    ));
                }
            }
            if let Some(identity) = &p.tls_identity
                && !identities.insert(identity)
            {
                return Err(invalid(
                    "auth.principals.tls_identity",
                    identity,
                    "names two principals",
                ));
            }
            if p.roles.is_empty() {
                return Err(invalid(
                    "auth.principals.roles",
                    &p.name,
                    "must name at least one of worker, producer, admin",
                ));
            }
            for queue in &p.queues {
                if QueueName::parse(queue).is_err() {
                    return Err(invalid(
                        "auth.principals.queues",
                        queue,
                        "is not a queue name",
                    ));
                }
            }
            if let Some(id) = &p.client_id {
                if ClientId::parse(id).is_err() {
                    return Err(invalid(
                        "auth.principals.client_id",
                        id,
                        "is not a client id",
                    ));
                }
                if !pinned.insert(id) {
                    return Err(invalid(
                        "auth.principals.client_id",
                        id,
                        "is pinned to two principals",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The hash of the metrics token, if one is set.
    pub(crate) fn metrics_token(&self) -> Option<[u8; 32]> {
        token::parse_hex_hash(&self.metrics_token_sha256)
    }

    /// True when calls are authenticated.
    pub fn enabled(&self) -> bool {
        !self.principals.is_empty()
    }

    /// The principals, for the server's auth layer. Validated configs
    /// only: a hash that does not parse authenticates no token.
    pub(crate) fn principals(&self) -> Principals {
        Principals::new(self.principals.iter().map(|p| {
            (
                token::parse_hex_hash(&p.token_sha256),
                p.tls_identity.clone(),
                Principal {
                    name: p.name.as_str().into(),
                    roles: p.roles.clone(),
                    queues: (!p.queues.is_empty()).then(|| p.queues.clone()),
                    client_id: p.client_id.clone(),
                },
            )
        }))
    }
}

/// Protected mode: with no authentication configured, a listener on an
/// address other than loopback is refused unless the config says so.
pub(super) fn check_exposure(config: &super::Config) -> Result<(), ConfigError> {
    if config.auth.enabled() || config.auth.allow_unauthenticated {
        return Ok(());
    }
    for (key, addr) in [
        ("server.grpc_addr", config.server.grpc_addr),
        ("server.metrics_addr", config.server.metrics_addr),
    ] {
        if !addr.ip().is_loopback() {
            return Err(invalid(
                key,
                addr,
                "is not a loopback address and no authentication is configured \
                 (protected mode): add [[auth.principals]] (`contact-server token` \
                 prints one), or set auth.allow_unauthenticated = true to let anyone \
                 who reaches the port do anything",
            ));
        }
    }
    Ok(())
}
