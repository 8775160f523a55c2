"""Submitting tasks and reading what became of them: contact.v1.Tasks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Union

import grpc

from ._connection import Connection
from ._proto.contact.v1 import tasks_pb2 as pb
from ._proto.contact.v1 import tasks_pb2_grpc
from .errors import ContactError

_STATES = {
    pb.TASK_STATE_PENDING: "pending",
    pb.TASK_STATE_DELIVERED: "delivered",
    pb.TASK_STATE_DONE: "done",
    pb.TASK_STATE_DEAD_LETTERED: "dead_lettered",
    pb.TASK_STATE_CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class TaskInfo:
    """A task as the server sees it."""

    id: str
    state: str
    queue: str
    target: str
    attempts: int
    worker: str
    ret: str
    error: str
    output: bytes
    dead_letter_reason: str

    @classmethod
    def from_proto(cls, info: Any) -> "TaskInfo":
        return cls(
            id=info.task_id,
            state=_STATES.get(info.state, "unknown"),
            queue=info.queue,
            target=info.target_client_id,
            attempts=info.attempts,
            worker=info.worker_id,
            ret=info.ret,
            error=info.error,
            output=bytes(info.output),
            dead_letter_reason=info.dead_letter_reason,
        )

    @property
    def finished(self) -> bool:
        return self.state in ("done", "dead_lettered", "cancelled")


def _request(
    text: str = "",
    *,
    queue: str = "",
    target: str = "",
    payload: bytes = b"",
    priority: int = 0,
    delay: Optional[float] = None,
    ttl: Optional[float] = None,
    idempotency_key: str = "",
    lease: Optional[float] = None,
) -> Any:
    not_before = int((time.time() + delay) * 1000) if delay else 0
    return pb.SubmitRequest(
        text=text,
        queue=queue,
        target_client_id=target,
        payload=payload,
        priority=priority,
        not_before_unix_ms=not_before,
        ttl_ms=int(ttl * 1000) if ttl else 0,
        idempotency_key=idempotency_key,
        lease_ms=int(lease * 1000) if lease else 0,
    )


Submission = Union[str, Mapping[str, Any]]


def _requests(tasks: Iterable[Submission], defaults: Mapping[str, Any]) -> Iterator[Any]:
    """SubmitRequests for `submit_many`: each task its text, or a dict of
    `submit`'s options with "text", over `defaults`."""
    for task in tasks:
        if isinstance(task, str):
            yield _request(task, **defaults)
        else:
            fields: Dict[str, Any] = {**defaults, **task}
            yield _request(fields.pop("text", ""), **fields)


class Producer:
    """A client of the Tasks service.

    `address` is host:port, http://host:port or https://host:port; `token`
    a bearer token; `ca_file` (TLS), `cert_file` and `key_file` (mutual
    TLS) are PEM files, `tls_domain` the name the server's certificate
    carries when it is not the host dialled.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        tls_domain: Optional[str] = None,
    ) -> None:
        self._connection = Connection(address, token, ca_file, cert_file, key_file, tls_domain)
        self._channel = self._connection.channel()
        self._stub = tasks_pb2_grpc.TasksStub(self._channel)
        self._metadata = self._connection.metadata()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as error:
            raise ContactError.from_rpc(error) from None

    def submit(self, text: str = "", **options: Any) -> str:
        """Submits one task; its id. Options: queue, target (a worker's id),
        payload, priority, delay and ttl (seconds), idempotency_key, lease
        (seconds)."""
        return str(self._call(self._stub.Submit, _request(text, **options)).task_id)

    def submit_many(self, tasks: Iterable[Submission], **defaults: Any) -> List[Union[str, ContactError]]:
        """Submits many tasks on one pipelined stream: per task its id, or
        the ContactError that refused it (a refusal does not stop the rest).
        Each task is its text, or a dict of `submit`'s options with "text"."""

        answers: List[Union[str, ContactError]] = []
        try:
            for reply in self._stub.SubmitStream(_requests(tasks, defaults), metadata=self._metadata):
                if reply.HasField("error"):
                    answers.append(ContactError(status_code(reply.error.code), reply.error.message))
                else:
                    answers.append(reply.task_id)
        except grpc.RpcError as error:
            raise ContactError.from_rpc(error) from None
        return answers

    def get(self, task_id: str) -> TaskInfo:
        return TaskInfo.from_proto(self._call(self._stub.Get, pb.GetRequest(task_id=task_id)))

    def wait(self, task_id: str, timeout: float = 30.0) -> TaskInfo:
        """The task once it has finished; ContactError(DEADLINE_EXCEEDED)
        if it has not within `timeout` seconds."""
        request = pb.WaitRequest(task_id=task_id, timeout_ms=max(1, int(timeout * 1000)))
        return TaskInfo.from_proto(self._call(self._stub.Wait, request, timeout=timeout + 5))

    def cancel(self, task_id: str) -> TaskInfo:
        return TaskInfo.from_proto(self._call(self._stub.Cancel, pb.CancelRequest(task_id=task_id)))

    def broadcast(self, text: str = "", *, queue: str = "", payload: bytes = b"") -> Dict[str, str]:
        """A copy for every connected worker of `queue`: client id -> task id."""
        request = pb.BroadcastRequest(text=text, queue=queue, payload=payload)
        reply = self._call(self._stub.Broadcast, request)
        return {copy.client_id: copy.task_id for copy in reply.copies}

    def dead_letters(self, queue: str = "", limit: int = 100) -> List[TaskInfo]:
        request = pb.ListDeadLettersRequest(queue=queue, limit=limit)
        return [TaskInfo.from_proto(t) for t in self._call(self._stub.ListDeadLetters, request).tasks]

    def requeue(self, task_id: str) -> TaskInfo:
        return TaskInfo.from_proto(self._call(self._stub.Requeue, pb.RequeueRequest(task_id=task_id)))


def status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a numeric gRPC code."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
