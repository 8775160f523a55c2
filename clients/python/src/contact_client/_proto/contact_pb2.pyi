from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_TASK: _ClassVar[Kind]
    KIND_KEEPALIVE: _ClassVar[Kind]
    KIND_CANCEL: _ClassVar[Kind]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_DONE: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
    OUTCOME_RETRY: _ClassVar[Outcome]
    OUTCOME_FAILED_PERMANENTLY: _ClassVar[Outcome]
KIND_TASK: Kind
KIND_KEEPALIVE: Kind
KIND_CANCEL: Kind
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_DONE: Outcome
OUTCOME_FAILED: Outcome
OUTCOME_RETRY: Outcome
OUTCOME_FAILED_PERMANENTLY: Outcome

class Extend(_message.Message):
    __slots__ = ("task_id", "attempt", "lease_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    lease_ms: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("max_in_flight",)
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    max_in_flight: int
    def __init__(self, max_in_flight: _Optional[int] = ...) -> None: ...

class ClientMsg(_message.Message):
    __slots__ = ("msg", "running", "ack", "extend", "credit", "quiet")
    MSG_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    EXTEND_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    QUIET_FIELD_NUMBER: _ClassVar[int]
    msg: str
    running: int
    ack: Result
    extend: Extend
    credit: Credit
    quiet: bool
    def __init__(self, msg: _Optional[str] = ..., running: _Optional[int] = ..., ack: _Optional[_Union[Result, _Mapping]] = ..., extend: _Optional[_Union[Extend, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ..., quiet: _Optional[bool] = ...) -> None: ...

class ServerMsg(_message.Message):
    __slots__ = ("task", "task_id", "payload", "queue", "attempt", "kind", "lease_ms", "receipt_required", "broadcast_id", "priority")
    TASK_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    task: str
    task_id: str
    payload: bytes
    queue: str
    attempt: int
    kind: Kind
    lease_ms: int
    receipt_required: bool
    broadcast_id: str
    priority: int
    def __init__(self, task: _Optional[str] = ..., task_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., queue: _Optional[str] = ..., attempt: _Optional[int] = ..., kind: _Optional[_Union[Kind, str]] = ..., lease_ms: _Optional[int] = ..., receipt_required: _Optional[bool] = ..., broadcast_id: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class HeldTask(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ("resume_session_id", "held")
    RESUME_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    resume_session_id: str
    held: _containers.RepeatedCompositeFieldContainer[HeldTask]
    def __init__(self, resume_session_id: _Optional[str] = ..., held: _Optional[_Iterable[_Union[HeldTask, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("ret", "task_id", "outcome", "output", "error", "attempt", "retry_after_ms", "receipt", "code", "quiet_applied", "in_flight")
    RET_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    QUIET_APPLIED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ret: str
    task_id: str
    outcome: Outcome
    output: bytes
    error: str
    attempt: int
    retry_after_ms: int
    receipt: bool
    code: int
    quiet_applied: int
    in_flight: int
    def __init__(self, ret: _Optional[str] = ..., task_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., output: _Optional[bytes] = ..., error: _Optional[str] = ..., attempt: _Optional[int] = ..., retry_after_ms: _Optional[int] = ..., receipt: _Optional[bool] = ..., code: _Optional[int] = ..., quiet_applied: _Optional[int] = ..., in_flight: _Optional[int] = ...) -> None: ...
