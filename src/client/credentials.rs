//! What a client proves itself with: a bearer token sent as
//! `authorization: Bearer <token>` on every call, by a tonic interceptor on
//! the channel (so no call can forget it).

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use super::ClientError;
use crate::auth::AUTHORIZATION_KEY;

/// A channel whose calls carry the client's credentials.
pub type AuthChannel = InterceptedService<Channel, Credentials>;

/// A client's credentials; the default is none.
#[derive(Clone, Default)]
pub struct Credentials {
    header: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Credentials")
            .field("token", &self.header.as_ref().map(|_| "<set>"))
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
        let mut header = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| ClientError::InvalidOption("the token must be ASCII".into()))?;
        header.set_sensitive(true);
        Ok(Self {
            header: Some(header),
        })
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
