"""Where the server is and how to reach it: an address in any form the
project's tools take, TLS (a CA, a client certificate) and a bearer token,
turned into a grpcio channel and the metadata every call carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import grpc
import grpc.aio

Metadata = List[Tuple[str, str]]


def target(address: str) -> Tuple[str, bool]:
    """host:port for grpcio, and whether the address asked for TLS."""
    bare = address.strip().rstrip("/")
    tls = bare.startswith("https://")
    bare = bare.removeprefix("http://").removeprefix("https://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():  # no port given (a bare host, or [::1])
        bare = f"{bare}:50051"
    return bare, tls


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


@dataclass(frozen=True)
class Connection:
    """How to dial: see `Producer` and `Worker` for the options."""

    address: str
    token: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    tls_domain: Optional[str] = None

    def _dial(self) -> Tuple[str, Optional[grpc.ChannelCredentials], List[Tuple[str, Any]]]:
        """Where, the TLS credentials (None: plain text) and the options."""
        where, asked_tls = target(self.address)
        options: List[Tuple[str, Any]] = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if not (asked_tls or self.ca_file or self.cert_file):
            return where, None, options
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )
        if self.tls_domain:
            options.append(("grpc.ssl_target_name_override", self.tls_domain))
        return where, credentials, options

    def channel(self) -> grpc.Channel:
        where, credentials, options = self._dial()
        if credentials is None:
            return grpc.insecure_channel(where, options=options)
        return grpc.secure_channel(where, credentials, options=options)

    def aio_channel(self) -> "grpc.aio.Channel":
        """The same, for asyncio."""
        where, credentials, options = self._dial()
        if credentials is None:
            return grpc.aio.insecure_channel(where, options=options)
        return grpc.aio.secure_channel(where, credentials, options=options)

    def metadata(self) -> Metadata:
        """What every call sends: the token, if there is one."""
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def worker_metadata(self, client_id: Optional[str]) -> Metadata:
        """What a worker's calls send: the token and its id."""
        metadata = self.metadata()
        if client_id:
            metadata.append(("contact-client-id", client_id))
        return metadata


@dataclass
class WorkerSettings:
    """What a worker registers with, shared by the sync and asyncio ones."""

    client_id: Optional[str]
    queues: List[str]
    credit: int
    keepalive: float
    receipts: bool

    def __post_init__(self) -> None:
        if self.credit < 1:
            raise ValueError("credit must be at least 1")

    def registration(self, connection: Connection, draining: bool) -> Metadata:
        """getTask's metadata; a draining worker registers paused-to-be."""
        metadata = connection.worker_metadata(self.client_id) + [
            ("contact-queues", ",".join(self.queues)),
            ("contact-max-in-flight", "1" if draining else str(self.credit)),
            ("contact-keepalive-ms", str(int(self.keepalive * 1000))),
        ]
        if self.receipts:
            metadata.append(("contact-receipts", "true"))
        return metadata
