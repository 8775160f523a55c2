//! TLS for the gRPC listener: the certificate chain, key and (for mutual
//! TLS) client CA read from PEM files; read again on SIGHUP, so that a
//! renewed certificate is served to new connections while established ones
//! keep theirs; and the identity a client's certificate proves: its
//! subject alternative names (DNS names and URIs) and its subject's common
//! name, which principals name as `tls_identity`.

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
    /// For the gRPC listener (ALPN h2).
    current: RwLock<Arc<ServerConfig>>,
    /// For the HTTP listener (ALPN http/1.1).
    http: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the files; `None` when `[tls]` sets no certificate.
    pub(crate) fn load(files: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        if !files.enabled() {
            return Ok(None);
        }
        let (grpc, http) = server_configs(files)?;
        Ok(Some(Arc::new(Self {
            files: files.clone(),
            current: RwLock::new(Arc::new(grpc)),
            http: RwLock::new(Arc::new(http)),
        })))
    }

    /// Reads the files again; on an error the old configuration stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let (grpc, http) = server_configs(&self.files)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(grpc);
        *self
            .http
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(http);
        Ok(())
    }

    /// An acceptor for the gRPC listener, as configured at the moment.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        // A poisoned lock still holds a whole configuration: use it, never
        // fall back to plain text.
        let config = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    /// An acceptor for the HTTP listener, as configured at the moment.
    pub(crate) fn http_acceptor(&self) -> TlsAcceptor {
        let config = self
            .http
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    /// Whether the HTTP listener speaks TLS too.
    pub(crate) fn covers_http(&self) -> bool {
        self.files.http_listener
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

/// The gRPC listener's configuration and the HTTP listener's, which
/// differ only in the application protocol they offer.
fn server_configs(files: &TlsConfig) -> Result<(ServerConfig, ServerConfig), TlsError> {
    let grpc = server_config(files, b"h2")?;
    let http = server_config(files, b"http/1.1")?;
    Ok((grpc, http))
}

fn server_config(files: &TlsConfig, alpn: &[u8]) -> Result<ServerConfig, TlsError> {
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
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The names a verified client certificate proves: its DNS and URI
/// subject alternative names, then its subject's common names.
pub(crate) fn identities(peer: Option<&[CertificateDer<'_>]>) -> Vec<String> {
    let Some(leaf) = peer.and_then(|chain| chain.first()) else {
        return Vec::new();
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .valid_dns_names()
        .chain(cert.valid_uri_names())
        .map(str::to_owned)
        .collect();
    names.extend(common_names(cert.subject()));
    names
}

/// One DER element: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x83 => {
            let n = usize::from(first & 0x7f);
            let (bytes, rest) = (rest.get(..n)?, rest.get(n..)?);
            let len = bytes
                .iter()
                .fold(0usize, |len, b| (len << 8) | usize::from(*b));
            (len, rest)
        }
        _ => return None,
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The common names (OID 2.5.4.3) of a certificate subject: the contents
/// of its Name, a sequence of sets of (OID, string) sequences. Anything it
/// does not understand is skipped, never a panic.
fn common_names(mut subject: &[u8]) -> Vec<String> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    // UTF8String, PrintableString, IA5String: text as UTF-8.
    const TEXT: [u8; 3] = [0x0c, 0x13, 0x16];
    let mut names = Vec::new();
    while let Some((tag, mut set, rest)) = der_element(subject) {
        subject = rest;
        if tag != SET {
            continue;
        }
        while let Some((tag, attribute, rest)) = der_element(set) {
            set = rest;
            if tag != SEQUENCE {
                continue;
            }
            let Some((OID, oid, value)) = der_element(attribute) else {
                continue;
            };
            if oid != COMMON_NAME {
                continue;
            }
            if let Some((kind, text, _)) = der_element(value)
                && TEXT.contains(&kind)
                && let Ok(text) = std::str::from_utf8(text)
            {
                names.push(text.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A certificate proves its SAN names and its common name.
    #[test]
    fn identities_are_the_sans_then_the_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["san.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Contact");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cn-worker");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().clone();
        assert_eq!(
            identities(Some(&[der])),
            vec!["san.example".to_owned(), "cn-worker".to_owned()]
        );
        assert!(identities(None).is_empty());
    }

    /// Random bytes as a subject never panic the reader.
    #[test]
    fn random_subjects_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..5000 {
            let len = rng.usize(0..48);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if len > 2 && rng.bool() {
                bytes[0] = 0x31;
            }
            let _ = common_names(&bytes);
        }
        let long_form = [0x31, 0x82, 0xff, 0xff, 0x30];
        assert!(common_names(&long_form).is_empty());
    }
}
