//! The cost of security, measured: saturation on a server with TLS and
//! token authentication beside the same server in plain text, one after
//! the other in one run. The token is checked once per call, and a worker's
//! streams and a producer's SubmitStream are one call each, so what the
//! secure run pays for is mostly TLS's encryption.

use std::path::Path;

use contact_server::{auth::token, client::Credentials};
use rcgen::{CertificateParams, KeyPair};

/// A secured server's config and the credentials its clients present.
pub(crate) struct Secured {
    pub(crate) config: String,
    pub(crate) credentials: Credentials,
}

/// `base` with TLS (a fresh self-signed certificate for 127.0.0.1, in
/// `dir`) and one principal, worker and producer, with a fresh token.
pub(crate) fn secure(base: &str, dir: &Path) -> anyhow::Result<Secured> {
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&key)?;
    let cert_file = dir.join("bench-server.crt");
    let key_file = dir.join("bench-server.key");
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    let secret = token::generate().map_err(|_| anyhow::anyhow!("no secure random source"))?;
    let hash = token::hex(&token::sha256(secret.as_bytes()));
    let config = format!(
        "{base}\n[tls]\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\n\n\
         [[auth.principals]]\nname = \"bench\"\ntoken_sha256 = \"{hash}\"\n\
         roles = [\"worker\", \"producer\"]\n"
    );
    let credentials = Credentials::none()
        .with_tls(cert.pem(), None)
        .with_bearer(&secret)?;
    Ok(Secured {
        config,
        credentials,
    })
}
