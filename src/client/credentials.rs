//! What a client proves itself with and whom it trusts: a bearer token sent
//! as `authorization: Bearer <token>` on every call, by a tonic interceptor
//! on the channel (so no call can forget it), and TLS: the CA that signed
//! the server's certificate, and a client certificate for mutual TLS.

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use super::ClientError;
use crate::auth::AUTHORIZATION_KEY;

/// A channel whose calls carry the client's credentials.
pub type AuthChannel = InterceptedService<Channel, Credentials>;

/// A client's credentials; the default is none.
#[derive(Clone, Default)]
pub struct Credentials {
    header: Option<MetadataValue<Ascii>>,
    tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Credentials")
            .field("token", &self.header.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Credentials {
    /// No credentials: for a server without authentication.
    pub fn none() -> Self {
        Self::default()
    }

    /// A bearer token (as `contact-server token` prints it).
    pub fn bearer(token: &str) -> Result<Self, ClientError> {
        Self::none().with_bearer(token)
    }

    /// These credentials with a bearer token.
    pub fn with_bearer(mut self, token: &str) -> Result<Self, ClientError> {
        let mut header = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| ClientError::InvalidOption("the token must be ASCII".into()))?;
        header.set_sensitive(true);
        self.header = Some(header);
        Ok(self)
    }

    /// Speaks TLS, trusting the CA certificates in `ca_pem` (PEM) for the
    /// server's certificate, which must name `domain` (the host dialled,
    /// when `None`).
    pub fn with_tls(mut self, ca_pem: impl AsRef<[u8]>, domain: Option<&str>) -> Self {
        let mut tls = self
            .tls
            .take()
            .unwrap_or_default()
            .ca_certificate(Certificate::from_pem(ca_pem));
        if let Some(domain) = domain {
            tls = tls.domain_name(domain);
        }
        self.tls = Some(tls);
        self
    }

    /// Presents this client certificate chain and key (PEM) for mutual
    /// TLS; implies TLS.
    pub fn with_client_certificate(
        mut self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.identity(Identity::from_pem(cert_pem, key_pem)));
        self
    }

    /// The TLS settings, if the client speaks TLS.
    pub(crate) fn tls(&self) -> Option<ClientTlsConfig> {
        self.tls.clone()
    }

    /// Wraps `channel` so every call carries these credentials.
    pub fn channel(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.clone())
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_KEY, header.clone());
        }
        Ok(request)
    }
}
