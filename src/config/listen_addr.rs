//! Listen addresses as every tool of the project reads a server address:
//! `host:port`, `http://host:port` and `localhost:PORT` alike, for the
//! daemon's flags and the config file.

use std::net::SocketAddr;

use serde::{Deserialize as _, Deserializer, Serializer};

/// Reads a listen address the way every tool of the project reads a server
/// address: `host:port`, `http://host:port` (the scheme and a trailing `/`
/// are dropped) and `localhost:port` (loopback, 127.0.0.1) alike. A listen
/// address needs its port; the host is an IP address or `localhost`.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let bare = text.trim();
    let bare = bare.strip_prefix("http://").unwrap_or(bare);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let bare = match bare.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => bare.to_owned(),
    };
    bare.parse().map_err(|_| {
        format!(
            "{} is not a listen address: give host:port, with an IP address or localhost \
             (e.g. 127.0.0.1:50051, localhost:50051, [::1]:50051)",
            crate::domain::quote(text)
        )
    })
}

/// Writes a listen address into a file as `ip:port`.
pub(super) fn serialize<S: Serializer>(addr: &SocketAddr, out: S) -> Result<S::Ok, S::Error> {
    out.collect_str(addr)
}

/// Reads a listen address from a file with [`parse_listen_addr`].
pub(super) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(input)?;
    parse_listen_addr(&text).map_err(serde::de::Error::custom)
}
