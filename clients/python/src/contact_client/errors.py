"""What a handler raises to steer its task, and what calls raise."""

from __future__ import annotations

from typing import Optional

import grpc


class Retry(Exception):
    """Raised by a handler: try the task again, after `after` seconds (the
    server's backoff when None). The attempt counts."""

    def __init__(self, after: Optional[float] = None, reason: str = "") -> None:
        super().__init__(reason or "retry")
        self.after = after
        self.reason = reason


class PermanentFailure(Exception):
    """Raised by a handler: the task cannot succeed; dead-letter it now."""


class ContactError(Exception):
    """A call the server refused or that failed: its gRPC code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "ContactError":
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")


class Refused(ContactError):
    """The server refused an acknowledgement or a control message."""
