//! The gRPC listener's connections, before and around HTTP/2: the accept
//! loop with its cap on open connections ([`accept`]), the deadline for a
//! new connection to start speaking HTTP/2, and the closing of connections
//! that stay idle with no call open ([`conn`], [`calls`]). tonic and hyper
//! take over once a connection has sent its preface; a stranger who opens
//! sockets and says nothing holds one slot for at most the handshake
//! timeout.

pub(crate) mod accept;
pub(crate) mod calls;
pub(crate) mod conn;
pub(crate) mod http_listener;
pub(crate) mod tls;

use std::net::SocketAddr;

pub(crate) use accept::{ConnectionLimits, incoming};

/// The peer address of a call's connection.
pub(crate) fn peer_addr<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<conn::ConnInfo>()
        .and_then(|info| info.remote)
        .or_else(|| request.remote_addr())
}
