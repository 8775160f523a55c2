//! TLS for the gRPC listener: the certificate chain, key and (for mutual
//! TLS) client CA read from PEM files; read again on SIGHUP, so that a
//! renewed certificate is served to new connections while established ones
//! keep theirs; and the identity a client's certificate proves: its
//! subject alternative names (DNS names and URIs), which principals name
//! as `tls_identity`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::WebPkiClientVerifier,
    },
};

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// "certificate", "key" or "client CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match the
    /// certificate, say).
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The listener's TLS, swappable while it runs.
#[derive(Debug)]
pub(crate) struct Tls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the files; `None` when `[tls]` sets no certificate.
    pub(crate) fn load(files: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        if !files.enabled() {
            return Ok(None);
        }
        let config = server_config(files)?;
        Ok(Some(Arc::new(Self {
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
        })))
    }

    /// Reads the files again; on an error the old configuration stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.files)?);
        if let Ok(mut current) = self.current.write() {
            *current = config;
        }
        Ok(())
    }

    /// An acceptor with the configuration of the moment.
    pub(crate) fn acceptor(&self) -> Option<TlsAcceptor> {
        let config = self.current.read().ok()?.clone();
        Some(TlsAcceptor::from(config))
    }
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn server_config(files: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&files.cert_file, &files.key_file) else {
        return Err(TlsError::Setup(
            "tls.cert_file and tls.key_file are needed".into(),
        ));
    };
    let chain = certificates("certificate", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_error("key", key_file, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &files.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client CA", ca_file)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("client CA", ca_file, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // Optional: a presented certificate must still verify; a client
            // without one authenticates by token instead.
            let verifier = if files.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The names a verified client certificate proves: its DNS and URI
/// subject alternative names.
pub(crate) fn identities(peer: Option<&[CertificateDer<'_>]>) -> Vec<String> {
    let Some(leaf) = peer.and_then(|chain| chain.first()) else {
        return Vec::new();
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return Vec::new();
    };
    cert.valid_dns_names()
        .chain(cert.valid_uri_names())
        .map(str::to_owned)
        .collect()
}
