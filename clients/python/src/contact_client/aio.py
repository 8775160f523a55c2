"""The same client for asyncio: `Producer` with awaitable calls, and a
`Worker` that runs async handlers (`await worker.run(handler)`) or is
iterated (`async for task in worker`, finishing each task with
`await task.done(...)`, `fail`, `fail_permanently` or `retry`), with the
sync worker's protocol handling: receipts, keepalives, acks on sendStatus,
lease extension, cancels, reconnect and resume, drain on `await stop()`."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Deque, Dict, Iterable, List, Optional, Union

import grpc
import grpc.aio

from . import _outcome
from ._connection import Connection, WorkerSettings
from ._proto import contact_pb2 as pb
from ._proto import contact_pb2_grpc
from ._proto.contact.v1 import tasks_pb2 as tpb
from ._proto.contact.v1 import tasks_pb2_grpc
from .errors import ContactError, PermanentFailure, Refused, Retry
from .producer import Submission, TaskInfo, _request, _requests, status_code

log = logging.getLogger("contact_client.aio")

#: getTask end reasons after which the worker must not come back.
FINAL_END_REASONS = {"drained", "disconnected"}


class Producer:
    """`contact_client.Producer`, with awaitable calls."""

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
        connection = Connection(address, token, ca_file, cert_file, key_file, tls_domain)
        self._channel = connection.aio_channel()
        self._stub = tasks_pb2_grpc.TasksStub(self._channel)
        self._metadata = connection.metadata()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "Producer":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as error:
            raise ContactError.from_rpc(error) from None

    async def submit(self, text: str = "", **options: Any) -> str:
        return str((await self._call(self._stub.Submit, _request(text, **options))).task_id)

    async def submit_many(
        self, tasks: Iterable[Submission], **defaults: Any
    ) -> List[Union[str, ContactError]]:
        answers: List[Union[str, ContactError]] = []
        requests = _requests(tasks, defaults)
        try:
            async for reply in self._stub.SubmitStream(requests, metadata=self._metadata):
                if reply.HasField("error"):
                    answers.append(ContactError(status_code(reply.error.code), reply.error.message))
                else:
                    answers.append(reply.task_id)
        except grpc.RpcError as error:
            raise ContactError.from_rpc(error) from None
        return answers

    async def get(self, task_id: str) -> TaskInfo:
        return TaskInfo.from_proto(await self._call(self._stub.Get, tpb.GetRequest(task_id=task_id)))

    async def wait(self, task_id: str, timeout: float = 30.0) -> TaskInfo:
        request = tpb.WaitRequest(task_id=task_id, timeout_ms=max(1, int(timeout * 1000)))
        return TaskInfo.from_proto(await self._call(self._stub.Wait, request, timeout=timeout + 5))

    async def cancel(self, task_id: str) -> TaskInfo:
        request = tpb.CancelRequest(task_id=task_id)
        return TaskInfo.from_proto(await self._call(self._stub.Cancel, request))

    async def broadcast(self, text: str = "", *, queue: str = "", payload: bytes = b"") -> Dict[str, str]:
        request = tpb.BroadcastRequest(text=text, queue=queue, payload=payload)
        reply = await self._call(self._stub.Broadcast, request)
        return {copy.client_id: copy.task_id for copy in reply.copies}

    async def dead_letters(self, queue: str = "", limit: int = 100) -> List[TaskInfo]:
        request = tpb.ListDeadLettersRequest(queue=queue, limit=limit)
        reply = await self._call(self._stub.ListDeadLetters, request)
        return [TaskInfo.from_proto(t) for t in reply.tasks]

    async def requeue(self, task_id: str) -> TaskInfo:
        request = tpb.RequeueRequest(task_id=task_id)
        return TaskInfo.from_proto(await self._call(self._stub.Requeue, request))


@dataclass
class Task:
    """A task pushed to an asyncio worker; finish it with one of its
    awaitable methods (the worker's `run` does that from the handler)."""

    id: str
    text: str
    payload: bytes
    attempt: int
    queue: str = ""
    lease: float = 0.0
    #: Set when the server takes the task back; its result will not count.
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _worker: Optional["Worker"] = field(default=None, repr=False)

    async def done(self, ret: str = "", output: bytes = b"") -> None:
        await self._finish(pb.Result(outcome=pb.OUTCOME_DONE, ret=ret, output=output))

    async def fail(self, error: str) -> None:
        await self._finish(pb.Result(outcome=pb.OUTCOME_FAILED, error=_outcome.text(error)))

    async def fail_permanently(self, error: str) -> None:
        await self._finish(pb.Result(outcome=pb.OUTCOME_FAILED_PERMANENTLY,
                                     error=_outcome.text(error)))

    async def retry(self, after: Optional[float] = None, reason: str = "retry") -> None:
        result = pb.Result(outcome=pb.OUTCOME_RETRY, error=_outcome.text(reason))
        if after is not None:
            result.retry_after_ms = _outcome.milliseconds(after)
        await self._finish(result)

    async def _finish(self, result: Any) -> None:
        assert self._worker is not None
        result.task_id, result.attempt = self.id, self.attempt
        await self._worker._acknowledge(self, result)


AsyncHandler = Callable[[Task], Awaitable[Any]]


class _Control:
    """sendStatus as a control channel: each message gets one reply, in order."""

    def __init__(self, stub: Any, metadata: List[Any]) -> None:
        self._call = stub.sendStatus(metadata=metadata)
        self._waiting: Deque["asyncio.Future[Any]"] = collections.deque()
        self._write = asyncio.Lock()
        self._closed = False
        self._reader = asyncio.ensure_future(self._read_replies())

    async def send(self, message: Any) -> Any:
        loop = asyncio.get_running_loop()
        reply: "asyncio.Future[Any]" = loop.create_future()
        async with self._write:
            if self._closed:
                raise ConnectionError("control channel closed")
            self._waiting.append(reply)
            try:
                await self._call.write(message)
            except (grpc.RpcError, asyncio.InvalidStateError) as error:
                self._waiting.remove(reply)
                raise ConnectionError("control channel lost") from error
        return await reply

    async def _read_replies(self) -> None:
        try:
            while True:
                result = await self._call.read()
                if result is grpc.aio.EOF:
                    break
                if self._waiting:
                    self._waiting.popleft().set_result(result)
        except grpc.RpcError:
            pass
        finally:
            self._closed = True
            while self._waiting:
                waiting = self._waiting.popleft()
                if not waiting.done():
                    waiting.set_exception(ConnectionError("connection lost"))

    async def close(self) -> None:
        self._closed = True
        try:
            await self._call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass
        self._call.cancel()


class Worker:
    """`contact_client.Worker` for asyncio: `await run(handler)` with an
    async handler (return the result, raise Retry or PermanentFailure), or
    `async for task in worker`."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        client_id: Optional[str] = None,
        queues: Iterable[str] = ("default",),
        credit: int = 4,
        keepalive: float = 5.0,
        receipts: bool = False,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        tls_domain: Optional[str] = None,
    ) -> None:
        self.settings = WorkerSettings(client_id, list(queues), credit, keepalive, receipts)
        self._connection = Connection(address, token, ca_file, cert_file, key_file, tls_domain)
        self._held: Dict[str, Task] = {}
        self._changed = asyncio.Condition()
        self._session_id = ""
        self._control: Optional[_Control] = None
        self._call: Optional[Any] = None
        self._draining = False
        self._stopped = asyncio.Event()
        self._arrived: "asyncio.Queue[Optional[Task]]" = asyncio.Queue()
        self._connecting: Optional["asyncio.Task[None]"] = None
        self._background: "set[asyncio.Task[Any]]" = set()

    @property
    def client_id(self) -> Optional[str]:
        """The worker's id: as given, or as the server named it."""
        return self.settings.client_id

    @client_id.setter
    def client_id(self, value: Optional[str]) -> None:
        self.settings.client_id = value

    # --- the two ways to run ---

    async def run(self, handler: AsyncHandler) -> None:
        """Runs until stopped, each task through `handler`, up to the credit
        at once."""
        async for task in self:
            self._spawn(self._work(handler, task))
        async with self._changed:
            await self._changed.wait_for(lambda: not self._held)

    def __aiter__(self) -> AsyncIterator[Task]:
        return self._tasks()

    async def _tasks(self) -> AsyncIterator[Task]:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect_loop())
        while True:
            task = await self._arrived.get()
            if task is None:
                return
            yield task

    async def stop(self) -> None:
        """Drains: no new tasks, finish those held, then iteration ends."""
        if self._draining:
            return
        self._draining = True
        log.info("draining: finishing held tasks")
        if self._control is not None:
            try:
                await self._control.send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
            except ConnectionError:
                pass  # a reconnect registers paused
        async with self._changed:
            await self._changed.wait_for(lambda: not self._held)
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()

    async def set_credit(self, credit: int) -> None:
        await self._send(pb.ClientMsg(credit=pb.Credit(max_in_flight=credit)))

    # --- connection ---

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _connect_loop(self) -> None:
        backoff = 0.1
        try:
            while not self._stopped.is_set():
                final = await self._session()
                if final or self._stopped.is_set() or (self._draining and not self._held):
                    break
                wait = backoff * (0.5 + random.random() / 2)
                log.info("reconnecting in %.2f s", wait)
                try:
                    await asyncio.wait_for(self._stopped.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 10.0)
        finally:
            self._stopped.set()
            await self._arrived.put(None)

    async def _session(self) -> bool:
        channel = self._connection.aio_channel()
        stub = contact_pb2_grpc.ContactStub(channel)
        metadata = self.settings.registration(self._connection, self._draining)
        resuming = bool(self._session_id and self.client_id)
        held = [pb.HeldTask(task_id=t.id, attempt=t.attempt) for t in self._held.values()]
        request = pb.Empty(resume_session_id=self._session_id if resuming else "",
                           held=held if resuming else [])
        call = stub.getTask(request, metadata=metadata)
        self._call = call
        try:
            headers = dict(await call.initial_metadata() or ())
            if "contact-session-id" not in headers:
                # Not registered (no connection, or refused): the call's end
                # says why. What this worker holds waits for the next try.
                await call.code()
                raise grpc.aio.AioRpcError(
                    await call.code(), await call.initial_metadata(),
                    await call.trailing_metadata(), await call.details())
            self._session_id = headers.get("contact-session-id", "")
            resumed = int(headers.get("contact-resumed", "0") or 0)
            log.info("registered as %s (session %s, resumed %d)", self.client_id,
                     self._session_id, resumed)
            if not resuming or resumed == 0:
                async with self._changed:
                    for task in self._held.values():
                        task.cancelled.set()
                    self._held.clear()
                    self._changed.notify_all()
            control_metadata = self._connection.worker_metadata(self.client_id)
            self._control = _Control(stub, control_metadata)
            async with self._changed:
                self._changed.notify_all()
            if self._draining:
                self._spawn(self._send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0))))
            async for message in call:
                await self._on_message(message)
            return False
        except grpc.RpcError as error:
            if self._stopped.is_set():
                return True
            code = error.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.INVALID_ARGUMENT):
                log.error("getTask refused: %s %s", code, error.details())
                return True
            trailers = await call.trailing_metadata() if hasattr(call, "trailing_metadata") else ()
            reason = dict(trailers or ()).get("contact-end-reason", "")
            log.warning("getTask ended: %s %s (%s)", code, error.details(), reason or "lost")
            return reason in FINAL_END_REASONS
        finally:
            if self._control is not None:
                await self._control.close()
            self._control = None
            self._call = None
            await channel.close()

    async def _on_message(self, message: Any) -> None:
        if message.kind == pb.KIND_TASK:
            task = Task(message.task_id, message.task, bytes(message.payload), message.attempt,
                        queue=message.queue, lease=message.lease_ms / 1000, _worker=self)
            self._held[task.id] = task
            if message.receipt_required:
                self._spawn(self._send(pb.ClientMsg(ack=pb.Result(
                    task_id=task.id, attempt=task.attempt, receipt=True))))
            if task.lease > 0:
                self._spawn(self._keep_leased(task))
            await self._arrived.put(task)
        elif message.kind == pb.KIND_KEEPALIVE:
            self._spawn(self._send(pb.ClientMsg(running=len(self._held))))
        elif message.kind == pb.KIND_CANCEL:
            held = self._held.get(message.task_id)
            if held is not None and held.attempt == message.attempt:
                log.info("task %s taken back by the server", held.id)
                held.cancelled.set()
                await self._forget(held)

    async def _send(self, message: Any) -> Optional[Any]:
        control = self._control
        if control is None:
            return None
        try:
            return await control.send(message)
        except ConnectionError:
            return None

    # --- work ---

    async def _keep_leased(self, task: Task) -> None:
        while task.id in self._held and not task.cancelled.is_set():
            try:
                await asyncio.wait_for(task.cancelled.wait(), task.lease / 2)
                return
            except asyncio.TimeoutError:
                pass
            if task.id in self._held:
                await self._send(pb.ClientMsg(extend=pb.Extend(task_id=task.id, attempt=task.attempt)))

    async def _work(self, handler: AsyncHandler, task: Task) -> None:
        try:
            value = await handler(task)
        except Retry as retry:
            await task.retry(retry.after, retry.reason or "retry")
        except PermanentFailure as failure:
            await task.fail_permanently(str(failure) or "failed permanently")
        except Exception as error:  # noqa: BLE001 - any other exception fails the attempt
            await task.fail(_outcome.failure(error))
        else:
            if isinstance(value, (bytes, bytearray)):
                await task.done(output=bytes(value))
            else:
                await task.done("" if value is None else _outcome.text(value))

    async def _acknowledge(self, task: Task, result: Any) -> None:
        """Acks on the control channel, again after a reconnect if the line drops."""
        if task.cancelled.is_set():
            await self._forget(task)
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        while True:
            answer = await self._send(pb.ClientMsg(ack=result))
            if answer is not None:
                if answer.code != 0:
                    log.warning("ack of %s refused: %s", task.id, answer.error)
                    await self._forget(task)
                    raise Refused(status_code(answer.code), answer.error)
                break
            if loop.time() > give_up or (self._stopped.is_set() and not self._draining):
                log.error("ack of %s not delivered; the server will redeliver it", task.id)
                break
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
        await self._forget(task)

    async def _forget(self, task: Task) -> None:
        async with self._changed:
            if self._held.get(task.id) is task:
                del self._held[task.id]
            self._changed.notify_all()
