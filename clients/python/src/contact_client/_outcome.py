"""What a handler's outcome becomes on the wire, for both workers: values a
handler may hand over (an infinite delay, text with lone surrogates) that
protobuf would refuse are made sendable here, so building an ack never
raises and a task is never left without one."""

from __future__ import annotations

import math

#: The longest delay an ack can carry (uint64 milliseconds).
_MAX_MS = 2**64 - 1


def milliseconds(seconds: float) -> int:
    """A delay in whole milliseconds, within what the field holds."""
    if math.isnan(seconds) or seconds <= 0:
        return 0
    if math.isinf(seconds) or seconds * 1000 >= _MAX_MS:
        return _MAX_MS
    return int(seconds * 1000)


def text(value: object) -> str:
    """`str(value)`, with anything UTF-8 cannot carry replaced."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def failure(error: BaseException) -> str:
    """How an unexpected exception is reported: its type, then its message."""
    return text(f"{type(error).__name__}: {error}")
