//! `[tls]`: the gRPC listener's certificate and key, and the client CA
//! that turns on mutual TLS. Files are PEM, read at start and again on
//! SIGHUP.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[tls]`: TLS for the gRPC listener; off while no certificate is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to
    /// (mutual TLS): a certificate a client presents is verified, and its
    /// names can identify a principal (`tls_identity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// With a client CA: every client must present a certificate (else a
    /// client may present a token instead).
    pub require_client_certificate: bool,
    /// Serve the HTTP listener (`/metrics`) over TLS too, with the same
    /// certificate and client CA.
    pub http_listener: bool,
}

impl TlsConfig {
    /// True when the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            key,
            value: "(unset)".into(),
            reason: reason.to_owned(),
        };
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return Err(invalid("tls.key_file", "is needed with tls.cert_file")),
            (None, Some(_)) => return Err(invalid("tls.cert_file", "is needed with tls.key_file")),
            _ => {}
        }
        if self.http_listener && self.cert_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls.http_listener",
                value: "true".into(),
                reason: "needs tls.cert_file and tls.key_file".into(),
            });
        }
        if self.require_client_certificate && self.client_ca_file.is_none() {
            return Err(invalid(
                "tls.client_ca_file",
                "is needed with tls.require_client_certificate: without it no client \
                 certificate could be checked",
            ));
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls.client_ca_file",
                value: "(set)".into(),
                reason: "needs tls.cert_file and tls.key_file: mutual TLS is TLS first".into(),
            });
        }
        Ok(())
    }
}
