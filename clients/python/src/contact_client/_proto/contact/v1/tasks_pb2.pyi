from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_DELIVERED: _ClassVar[TaskState]
    TASK_STATE_DONE: _ClassVar[TaskState]
    TASK_STATE_DEAD_LETTERED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_DELIVERED: TaskState
TASK_STATE_DONE: TaskState
TASK_STATE_DEAD_LETTERED: TaskState
TASK_STATE_CANCELLED: TaskState

class SubmitRequest(_message.Message):
    __slots__ = ("queue", "target_client_id", "text", "payload", "priority", "not_before_unix_ms", "ttl_ms", "idempotency_key", "lease_ms")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    target_client_id: str
    text: str
    payload: bytes
    priority: int
    not_before_unix_ms: int
    ttl_ms: int
    idempotency_key: str
    lease_ms: int
    def __init__(self, queue: _Optional[str] = ..., target_client_id: _Optional[str] = ..., text: _Optional[str] = ..., payload: _Optional[bytes] = ..., priority: _Optional[int] = ..., not_before_unix_ms: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class SubmitError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("task_id", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    error: SubmitError
    def __init__(self, task_id: _Optional[str] = ..., error: _Optional[_Union[SubmitError, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("task_id", "timeout_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    timeout_ms: int
    def __init__(self, task_id: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("task_id", "state", "queue", "target_client_id", "attempts", "worker_id", "ret", "output", "error", "priority", "not_before_unix_ms", "dead_letter_reason", "broadcast_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RET_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_REASON_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    state: TaskState
    queue: str
    target_client_id: str
    attempts: int
    worker_id: str
    ret: str
    output: bytes
    error: str
    priority: int
    not_before_unix_ms: int
    dead_letter_reason: str
    broadcast_id: str
    def __init__(self, task_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., queue: _Optional[str] = ..., target_client_id: _Optional[str] = ..., attempts: _Optional[int] = ..., worker_id: _Optional[str] = ..., ret: _Optional[str] = ..., output: _Optional[bytes] = ..., error: _Optional[str] = ..., priority: _Optional[int] = ..., not_before_unix_ms: _Optional[int] = ..., dead_letter_reason: _Optional[str] = ..., broadcast_id: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("queue", "limit")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    limit: int
    def __init__(self, queue: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDeadLettersReply(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...

class RequeueRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class BroadcastRequest(_message.Message):
    __slots__ = ("queue", "text", "payload")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    queue: str
    text: str
    payload: bytes
    def __init__(self, queue: _Optional[str] = ..., text: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class BroadcastReply(_message.Message):
    __slots__ = ("broadcast_id", "copy_count", "copies")
    BROADCAST_ID_FIELD_NUMBER: _ClassVar[int]
    COPY_COUNT_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    broadcast_id: str
    copy_count: int
    copies: _containers.RepeatedCompositeFieldContainer[BroadcastCopy]
    def __init__(self, broadcast_id: _Optional[str] = ..., copy_count: _Optional[int] = ..., copies: _Optional[_Iterable[_Union[BroadcastCopy, _Mapping]]] = ...) -> None: ...

class BroadcastCopy(_message.Message):
    __slots__ = ("task_id", "client_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    client_id: str
    def __init__(self, task_id: _Optional[str] = ..., client_id: _Optional[str] = ...) -> None: ...

class GetBroadcastRequest(_message.Message):
    __slots__ = ("broadcast_id",)
    BROADCAST_ID_FIELD_NUMBER: _ClassVar[int]
    broadcast_id: str
    def __init__(self, broadcast_id: _Optional[str] = ...) -> None: ...

class BroadcastInfo(_message.Message):
    __slots__ = ("broadcast_id", "copies")
    BROADCAST_ID_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    broadcast_id: str
    copies: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, broadcast_id: _Optional[str] = ..., copies: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...
