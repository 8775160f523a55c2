"""A worker: registers on getTask, runs each pushed task through a handler
in a thread pool up to its credit, and does everything else the protocol
asks for it: receipts confirmed and keepalives answered as they arrive,
acknowledgements on sendStatus (a refused one is logged), tasks the server
takes back marked cancelled, a dropped connection redialled with backoff
and jitter and the session resumed with the tasks it still holds, and a
drain on `stop()` (and SIGINT/SIGTERM when run in the main thread):
credit 0, finish what it holds, leave."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, Optional, Set, Tuple

import grpc

from ._connection import Connection, WorkerSettings, Metadata
from ._proto import contact_pb2 as pb
from ._proto import contact_pb2_grpc
from .errors import PermanentFailure, Retry

log = logging.getLogger("contact_client.worker")

#: getTask end reasons after which the worker must not come back.
FINAL_END_REASONS = {"drained", "disconnected"}


@dataclass
class Task:
    """A task pushed to this worker."""

    id: str
    text: str
    payload: bytes
    attempt: int
    #: The queue it came from ("" when sent to this worker by id).
    queue: str = ""
    #: The execution lease, in seconds (0: none); the worker extends it in
    #: the background while the handler runs.
    lease: float = 0.0
    #: Set when the server takes the task back (cancelled, lease lost):
    #: the handler's result will not count.
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: When its lease is next extended (time.monotonic), while it runs.
    _extend_at: Optional[float] = field(default=None, repr=False)


Handler = Callable[[Task], Any]


class _Control:
    """sendStatus as a control channel: each message gets one reply, in order."""

    def __init__(self, stub: Any, metadata: Metadata, on_lost: Callable[[], Any]) -> None:
        self._on_lost = on_lost
        self._outbox: Deque[Any] = collections.deque()
        self._ready = threading.Condition()
        self._waiting: Deque["concurrent.futures.Future[Any]"] = collections.deque()
        self._closed = False
        self._call = stub.sendStatus(self._messages(), metadata=metadata)
        threading.Thread(target=self._read_replies, daemon=True).start()

    def send(self, message: Any) -> "concurrent.futures.Future[Any]":
        reply: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        with self._ready:
            if self._closed:
                reply.set_exception(ConnectionError("control channel closed"))
                return reply
            self._waiting.append(reply)
            self._outbox.append(message)
            self._ready.notify()
        return reply

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _messages(self) -> Iterator[Any]:
        while True:
            with self._ready:
                while not self._outbox and not self._closed:
                    self._ready.wait()
                if not self._outbox:
                    return
                message = self._outbox.popleft()
            yield message

    def _read_replies(self) -> None:
        try:
            for result in self._call:
                with self._ready:
                    if self._waiting:
                        self._waiting.popleft().set_result(result)
        except grpc.RpcError:
            pass
        finally:
            with self._ready:
                self._closed = True
                self._ready.notify()
                while self._waiting:
                    self._waiting.popleft().set_exception(ConnectionError("connection lost"))
            self._on_lost()


class Worker:
    """A worker of `queues` with `credit` tasks in flight at most.

    `client_id` is needed to resume after a dropped connection (without
    one the server names the worker). With `receipts`, each task's
    arrival is confirmed at once (the server then redelivers a task whose
    receipt does not come within its receipt timeout), at the cost of a
    message per task. `token`, `ca_file`, `cert_file`, `key_file` and
    `tls_domain` are as for `Producer`.
    """

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
        self._lock = threading.Condition()
        self._held: Dict[str, Task] = {}
        self._session_id = ""
        self._control: Optional[_Control] = None
        self._draining = False
        self._stopped = threading.Event()
        self._handler: Optional[Handler] = None
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    @property
    def client_id(self) -> Optional[str]:
        """The worker's id: as given, or as the server named it."""
        return self.settings.client_id

    @client_id.setter
    def client_id(self, value: Optional[str]) -> None:
        self.settings.client_id = value

    # --- running ---

    def run(self, handler: Handler) -> None:
        """Runs until stopped: `stop()`, or SIGINT/SIGTERM when called from
        the main thread, drains; an operator's drain or disconnect ends it."""
        self._handler = handler
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.credit)
        threading.Thread(target=self._keep_leases, daemon=True).start()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stop())
        backoff = 0.1
        try:
            while not self._stopped.is_set():
                final = self._session()
                if final or (self._draining and not self._held):
                    break
                wait = backoff * (0.5 + random.random() / 2)
                log.info("reconnecting in %.2f s", wait)
                self._stopped.wait(wait)
                backoff = min(backoff * 2, 10.0)
        finally:
            self._stopped.set()
            self._pool.shutdown(wait=True)

    def stop(self) -> None:
        """Drains: no new tasks, finish those held, then `run` returns."""
        with self._lock:
            if self._draining:
                return
            self._draining = True
        log.info("draining: finishing held tasks")
        threading.Thread(target=self._finish_drain, daemon=True).start()

    def set_credit(self, credit: int) -> None:
        """Changes how many tasks may be in flight (0 pauses)."""
        self._send(pb.ClientMsg(credit=pb.Credit(max_in_flight=credit)))

    @property
    def running(self) -> int:
        """Tasks held now."""
        with self._lock:
            return len(self._held)

    def report_status(self, text: str) -> None:
        """Tells operators what the worker is doing (ListWorkers shows it),
        with how many tasks it runs."""
        self._send(pb.ClientMsg(msg=text, running=self.running))

    # --- one connection ---

    def _session(self) -> bool:
        """One connection's life; True when the worker must not reconnect."""
        channel = self._connection.channel()
        stub = contact_pb2_grpc.ContactStub(channel)
        metadata = self.settings.registration(self._connection, self._draining)
        with self._lock:
            held = [pb.HeldTask(task_id=t.id, attempt=t.attempt) for t in self._held.values()]
        resuming = bool(self._session_id and self.client_id)
        request = pb.Empty(resume_session_id=self._session_id if resuming else "",
                           held=held if resuming else [])
        stream = stub.getTask(request, metadata=metadata)
        try:
            headers = dict(stream.initial_metadata())
            self.client_id = self.client_id or headers.get("contact-client-id")
            self._session_id = headers.get("contact-session-id", "")
            resumed = int(headers.get("contact-resumed", "0") or 0)
            log.info("registered as %s (session %s, resumed %d)", self.client_id,
                     self._session_id, resumed)
            if not resuming or resumed == 0:
                # A new session: what this worker held goes to others.
                with self._lock:
                    for task in self._held.values():
                        task.cancelled.set()
                    self._held.clear()
                    self._lock.notify_all()
            control_metadata = self._connection.worker_metadata(self.client_id)
            with self._lock:
                self._control = _Control(stub, control_metadata, on_lost=stream.cancel)
                self._lock.notify_all()
            if self._draining:
                self._send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
            for message in stream:
                self._on_message(message)
            return False
        except grpc.RpcError as error:
            reason = dict(error.trailing_metadata() or ()).get("contact-end-reason", "")
            code = error.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.INVALID_ARGUMENT):
                log.error("getTask refused: %s %s", code, error.details())
                raise
            log.warning("getTask ended: %s %s (%s)", code, error.details(), reason or "lost")
            return reason in FINAL_END_REASONS
        finally:
            with self._lock:
                if self._control:
                    self._control.close()
                self._control = None
            channel.close()

    def _on_message(self, message: Any) -> None:
        if message.kind == pb.KIND_TASK:
            task = Task(message.task_id, message.task, bytes(message.payload), message.attempt,
                        queue=message.queue, lease=message.lease_ms / 1000)
            with self._lock:
                self._held[task.id] = task
            if message.receipt_required:
                self._send(pb.ClientMsg(ack=pb.Result(
                    task_id=task.id, attempt=task.attempt, receipt=True)))
            try:
                assert self._pool is not None
                self._pool.submit(self._work, task)
            except RuntimeError:
                log.info("task %s arrived while stopping; left to the server", task.id)
        elif message.kind == pb.KIND_KEEPALIVE:
            self._send(pb.ClientMsg(running=len(self._held)))
        elif message.kind == pb.KIND_CANCEL:
            with self._lock:
                held = self._held.get(message.task_id)
                if held is not None and held.attempt == message.attempt:
                    log.info("task %s taken back by the server", held.id)
                    held.cancelled.set()

    def _send(self, message: Any) -> "Optional[concurrent.futures.Future[Any]]":
        with self._lock:
            control = self._control
        return control.send(message) if control else None

    # --- work ---

    def _keep_leases(self) -> None:
        """One thread for every lease: a task whose handler runs past half
        its lease gets it extended, again each half lease."""
        while not self._stopped.wait(0.2):
            now = time.monotonic()
            with self._lock:
                due = [t for t in self._held.values()
                       if t._extend_at is not None and t._extend_at <= now
                       and not t.cancelled.is_set()]
                for task in due:
                    task._extend_at = now + task.lease / 2
            for task in due:
                self._send(pb.ClientMsg(extend=pb.Extend(task_id=task.id, attempt=task.attempt)))

    def _work(self, task: Task) -> None:
        assert self._handler is not None
        result = pb.Result(task_id=task.id, attempt=task.attempt)
        if task.lease > 0:
            with self._lock:
                task._extend_at = time.monotonic() + task.lease / 2
        try:
            value = self._handler(task)
            result.outcome = pb.OUTCOME_DONE
            if isinstance(value, (bytes, bytearray)):
                result.output = bytes(value)
            elif value is not None:
                result.ret = str(value)
        except Retry as retry:
            result.outcome = pb.OUTCOME_RETRY
            result.error = retry.reason or "retry"
            if retry.after is not None:
                result.retry_after_ms = max(0, int(retry.after * 1000))
        except PermanentFailure as failure:
            result.outcome = pb.OUTCOME_FAILED_PERMANENTLY
            result.error = str(failure) or "failed permanently"
        except Exception as error:  # noqa: BLE001 - any other exception fails the attempt
            result.outcome = pb.OUTCOME_FAILED
            result.error = f"{type(error).__name__}: {error}"
        finally:
            with self._lock:
                task._extend_at = None
        if task.cancelled.is_set():
            self._forget(task)
            return
        self._acknowledge(task, result)

    def _acknowledge(self, task: Task, result: Any) -> None:
        """Acks on the control channel without waiting for the reply (the
        handler's thread is free for the next task); the reply is checked
        when it comes, and an ack the line dropped is sent again."""
        reply = self._send(pb.ClientMsg(ack=result))
        if reply is None:
            self._acknowledge_again(task, result)
            return

        def answered(future: "concurrent.futures.Future[Any]") -> None:
            if future.exception() is not None:
                threading.Thread(
                    target=self._acknowledge_again, args=(task, result), daemon=True
                ).start()
                return
            answer = future.result()
            if answer.code != 0:
                log.warning("ack of %s refused: %s", task.id, answer.error)
            self._forget(task)

        reply.add_done_callback(answered)

    def _acknowledge_again(self, task: Task, result: Any) -> None:
        """Acks, waiting for a connection if there is none, for a minute."""
        give_up = time.monotonic() + 60
        while True:
            reply = self._send(pb.ClientMsg(ack=result))
            try:
                if reply is None:
                    raise ConnectionError("not connected")
                answer = reply.result(timeout=30)
                if answer.code != 0:
                    log.warning("ack of %s refused: %s", task.id, answer.error)
                break
            except (ConnectionError, concurrent.futures.TimeoutError):
                if time.monotonic() > give_up or (self._stopped.is_set() and not self._draining):
                    log.error("ack of %s not delivered; the server will redeliver it", task.id)
                    break
                with self._lock:
                    self._lock.wait(timeout=0.5)  # for the next connection
        self._forget(task)

    def _forget(self, task: Task) -> None:
        with self._lock:
            if self._held.get(task.id) is task:
                del self._held[task.id]
            self._lock.notify_all()

    def _finish_drain(self) -> None:
        paused = self._send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
        try:
            # Once the pause is applied, what was pushed before it has come.
            if paused is not None:
                paused.result(timeout=10)
        except (ConnectionError, concurrent.futures.TimeoutError):
            pass  # a reconnect registers paused
        with self._lock:
            while self._held:
                self._lock.wait()
        self._stopped.set()
        with self._lock:
            if self._control:
                self._control.close()
