//! Server addresses: the forms every Rust tool accepts for "which server"
//! (`host:port`, `http://host:port`, `https://host:port`, `localhost`,
//! ...), turned into the URL and the tonic endpoint dialled, and the
//! dialling itself. The worker's driver and the producer connect through
//! here, and so does `contactctl`.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::ClientError;

/// The port of an address that names none: the server's own default.
const DEFAULT_PORT: u16 = 50051;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL to dial for a server address given in any of the forms people
/// and the Python tools use: `host:port`, `http://host:port`,
/// `https://host:port`, a bare `host` (e.g. `localhost`), or an IPv6
/// address (`[::1]:50051`). Without a scheme it is `http`; without a port,
/// 50051, whatever the form.
///
/// ```
/// use contact_server::client::endpoint_url;
///
/// assert_eq!(endpoint_url("127.0.0.1:50051")?, "http://127.0.0.1:50051");
/// assert_eq!(endpoint_url("localhost")?, "http://localhost:50051");
/// assert_eq!(endpoint_url("https://contact.example:443")?, "https://contact.example:443");
/// # Ok::<(), contact_server::client::ClientError>(())
/// ```
pub fn endpoint_url(address: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::Address {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = address.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), trimmed),
    };
    if scheme != "http" && scheme != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match split_port(authority) {
        ("", _) => return Err(invalid("no host")),
        (_, Some(port)) if port.parse::<u16>().is_err() => {
            return Err(invalid("the port must be a number from 0 to 65535"));
        }
        (_, Some(_)) => authority.to_owned(),
        // An IPv6 address without a port, unbracketed.
        (host, None) if host.contains(':') && !host.starts_with('[') => {
            format!("[{host}]:{DEFAULT_PORT}")
        }
        (host, None) => format!("{host}:{DEFAULT_PORT}"),
    };
    let url = format!("{scheme}://{authority}{path}");
    // What tonic will be given must parse as a URI, with the host seen.
    match http::Uri::try_from(url.as_str()) {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(url),
        Ok(_) => Err(invalid("no host")),
        Err(error) => Err(invalid(&error.to_string())),
    }
}

/// The tonic endpoint of a server address in any form [`endpoint_url`]
/// accepts, with the client library's connection settings (a 5 s connect
/// timeout, no Nagle delay): for a channel of your own, e.g. to the admin
/// or health services.
pub fn endpoint(address: &str) -> Result<Endpoint, ClientError> {
    let url = endpoint_url(address)?;
    let endpoint = Endpoint::from_shared(url).map_err(|source| ClientError::Endpoint {
        endpoint: address.to_owned(),
        source,
    })?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
}

/// Dials the server at `address`, over TLS when `credentials` say so: a
/// channel for clients of your own (admin, health). Calls on it carry no
/// token; wrap it with [`Credentials::channel`](super::Credentials::channel).
pub async fn dial(address: &str, credentials: &super::Credentials) -> Result<Channel, ClientError> {
    let Some(tls) = credentials.tls() else {
        return Ok(endpoint(address)?.connect().await?);
    };
    // TLS settings mean TLS, whatever scheme the address was written with.
    let url = endpoint_url(address)?;
    let url = match url.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => url,
    };
    Ok(endpoint(&url)?.tls_config(tls)?.connect().await?)
}

/// An authority's host and the port it names, if it names one. A bracketed
/// IPv6 host keeps its brackets; an unbracketed one names no port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => match authority[end + 1..].strip_prefix(':') {
                Some(port) => (&authority[..=end], Some(port)),
                None => (authority, None),
            },
            None => (authority, None),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(address: &str) -> String {
        match endpoint_url(address) {
            Ok(url) => url,
            Err(error) => panic!("{address:?} refused: {error}"),
        }
    }

    #[test]
    fn every_form_names_the_same_server() {
        for address in [
            "127.0.0.1:50051",
            "http://127.0.0.1:50051",
            "HTTP://127.0.0.1:50051",
            "  127.0.0.1:50051 ",
            "127.0.0.1",
            "http://127.0.0.1",
        ] {
            assert_eq!(url(address), "http://127.0.0.1:50051", "{address:?}");
        }
        assert_eq!(url("localhost"), "http://localhost:50051");
        assert_eq!(url("localhost:7000"), "http://localhost:7000");
        assert_eq!(url("http://localhost:7000/"), "http://localhost:7000/");
        assert_eq!(
            url("https://contact.example"),
            "https://contact.example:50051"
        );
        assert_eq!(
            url("https://contact.example:443"),
            "https://contact.example:443"
        );
    }

    #[test]
    fn ipv6_addresses_with_and_without_a_port() {
        assert_eq!(url("[::1]:7000"), "http://[::1]:7000");
        assert_eq!(url("http://[::1]:7000"), "http://[::1]:7000");
        assert_eq!(url("[::1]"), "http://[::1]:50051");
        assert_eq!(url("::1"), "http://[::1]:50051");
    }

    #[test]
    fn what_is_not_an_address_is_refused() {
        for address in [
            "",
            "http://",
            ":50051",
            "localhost:port",
            "localhost:99999",
            "grpc://localhost:50051",
            "local host:50051",
        ] {
            match endpoint_url(address) {
                Err(ClientError::Address { address: given, .. }) => assert_eq!(given, address),
                other => panic!("{address:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_endpoint_dials_the_normalised_url() {
        match endpoint("localhost") {
            Ok(endpoint) => assert_eq!(endpoint.uri().to_string(), "http://localhost:50051/"),
            Err(error) => panic!("{error}"),
        }
    }
}
