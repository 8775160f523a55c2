"""A worker: registers on getTask and runs pushed tasks through a handler
in a few threads, each of which reads its own next task (see `_Lane`), and
does everything else the protocol asks for it: receipts confirmed as tasks
arrive, a heartbeat once per keepalive interval however busy its threads,
acknowledgements on sendStatus (a refused one is logged), leases
extended while handlers run, tasks the
server takes back marked cancelled, a dropped connection redialled with
backoff and jitter and the session resumed with the tasks it still holds,
and a drain on `stop()` (and SIGINT/SIGTERM when run in the main thread):
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
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import grpc

from . import _outcome
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
    """sendStatus as a control channel for what is not an ack (lease
    extensions, credit, status, acks sent again): each message gets one
    reply, in order."""

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


#: How long every lane may be busy in a handler before the session's
#: read-ahead thread reads the stream for them, so that receipts, leases
#: and cancels of tasks waiting for a thread are seen to as they arrive. A
#: quick handler is back sooner, and then no message changes threads.
READ_AHEAD_AFTER = 0.05


class _Feed:
    """One session's getTask stream, shared by its lanes: one reads at a
    time. It ends when a lane finds it ended, when the call itself ends
    (seen by grpcio's callback: every lane may be busy in a handler), or
    when a call the session needs is lost; the first to see it records how.

    While every lane has been busy for READ_AHEAD_AFTER, the read-ahead
    thread reads instead: each task it takes is accepted (held, its receipt
    sent, its lease kept) and waits in the worker's queue for a lane."""

    def __init__(self, worker: "Worker", stream: Any) -> None:
        self._worker = worker
        self.stream = stream
        self._reading = threading.Lock()
        self._state = threading.Lock()
        #: Lanes wanting their next task, and since when none has.
        self._wanting = 0
        self._idle_since = time.monotonic()
        self.ended = threading.Event()
        #: How it ended: None for OK, else the call's error.
        self.error: Optional[grpc.RpcError] = None
        self._end_lock = threading.Lock()
        stream.add_done_callback(self.call_done)

    def end(self, error: Optional[grpc.RpcError]) -> None:
        with self._end_lock:
            if not self.ended.is_set():
                self.error = error
                self.ended.set()

    def call_done(self, call: Any) -> None:
        """grpcio's callback for a call of the session that ended."""
        self.end(None if call.code() == grpc.StatusCode.OK else call)

    def _read(self) -> Optional[Any]:
        """The stream's next message (the caller holds `_reading`), or None
        once it has ended."""
        if self.ended.is_set():
            return None
        try:
            return next(self.stream)
        except StopIteration:
            self.end(None)
        except grpc.RpcError as error:
            self.end(error)
        return None

    def next_task(self) -> Optional[Task]:
        """A lane's next task: one waiting, else the next off the stream;
        None once the stream has ended."""
        worker = self._worker
        with self._state:
            self._wanting += 1
        try:
            with self._reading:
                while True:
                    task = worker._take_waiting()
                    if task is not None:
                        return task
                    message = self._read()
                    if message is None:
                        return None
                    task = worker._accept(message)
                    if task is not None:
                        return task
        finally:
            with self._state:
                self._wanting -= 1
                if self._wanting == 0:
                    self._idle_since = time.monotonic()

    def read_ahead(self) -> None:
        """The read-ahead thread: reads while every lane is busy, until the
        stream ends."""
        while not self.ended.is_set():
            with self._state:
                busy = (self._wanting == 0
                        and time.monotonic() - self._idle_since >= READ_AHEAD_AFTER)
            if not busy or not self._reading.acquire(timeout=READ_AHEAD_AFTER):
                self.ended.wait(READ_AHEAD_AFTER / 2)
                continue
            try:
                message = self._read()
                task = self._worker._accept(message) if message is not None else None
                if task is not None:
                    self._worker._keep_waiting(task)
            finally:
                self._reading.release()


class _Lane:
    """One handler thread, with a sendStatus call of its own.

    grpc consumes a call's requests on a thread it starts for the call;
    here that thread is the handler's: it takes the next message off the
    session's shared getTask stream, runs the task and yields the ack, so
    a task crosses no Python thread on its way in or out (the shape of the
    seed's `stub.tellResult(get_task(stub))` loop: a hand-off between
    threads costs as much as a small task).

    Its acks are quiet: the server answers only refusals, and confirms the
    rest by count. Nothing waits for those answers while tasks flow (a
    thread blocked reading the call would be woken by every send on it);
    the lane reads them itself when 256 are due, and a drain reads the
    rest. A task is forgotten when its ack is sent; an ack the connection
    lost before its answer is sent again, its task claimed on resume.
    Whatever must not wait for a handler to finish (receipts, heartbeats,
    lease extensions) goes on the worker's control channel instead. A lane
    whose call ends ends the session: grpcio would never resume it."""

    #: Answers left unread before the lane reads them (the server confirms
    #: at most 256 quiet messages at a time).
    MAX_UNANSWERED = 256

    def __init__(self, worker: "Worker", stub: Any, metadata: Metadata, feed: _Feed) -> None:
        self._worker = worker
        self._feed = feed
        self._started = threading.Event()
        #: Acks sent and not yet answered, oldest first, with their tasks
        #: (guarded by the worker's lock).
        self._unanswered: Deque[Tuple[Task, Any]] = collections.deque()
        self._lost = False
        #: One reader of the call's answers at a time.
        self._reading = threading.Lock()
        self._call = stub.sendStatus(self._messages(), metadata=metadata)
        self._call.add_done_callback(feed.call_done)
        self._started.set()

    def _sent(self, task: Task, message: Any) -> bool:
        """Notes an ack about to be sent; False once the call is lost."""
        with self._worker._lock:
            if self._lost:
                return False
            self._unanswered.append((task, message))
            if self._worker._held.get(task.id) is task:
                del self._worker._held[task.id]
                self._worker._lock.notify_all()
            return True

    def _messages(self) -> Iterator[Any]:
        self._started.wait()
        worker = self._worker
        while True:
            if len(self._unanswered) >= self.MAX_UNANSWERED:
                self.read_answers(until=self.MAX_UNANSWERED - 1, timeout=30)
            task = self._feed.next_task()
            if task is None:
                return
            ack = pb.ClientMsg(quiet=True)
            if not worker._run(task, ack.ack):
                continue
            if not self._sent(task, ack):
                worker._acknowledge_later(task, ack.ack)
                return
            yield ack

    def read_answers(self, until: int = 0, timeout: float = 10.0) -> bool:
        """Reads answers until at most `until` messages are unanswered; False
        if the call ended first, or was given up (cancelled) after `timeout`."""
        with self._reading:
            with self._worker._lock:
                if len(self._unanswered) <= until:
                    return True
            deadline = threading.Timer(timeout, self._call.cancel)
            deadline.daemon = True
            deadline.start()
            try:
                while True:
                    try:
                        answer = next(self._call)
                    except (grpc.RpcError, StopIteration):
                        return False
                    self._answered(answer)
                    with self._worker._lock:
                        if len(self._unanswered) <= until:
                            return True
            finally:
                deadline.cancel()

    def _answered(self, answer: Any) -> None:
        with self._worker._lock:
            if answer.quiet_applied:
                for _ in range(min(answer.quiet_applied, len(self._unanswered))):
                    self._unanswered.popleft()
                return
            if not self._unanswered:
                return
            task, message = self._unanswered.popleft()
        log.warning("ack of %s refused: %s", message.ack.task_id, answer.error)

    def lost(self) -> List[Tuple[Task, Any]]:
        """Ends the lane: the acks sent without an answer, to send again."""
        self._call.cancel()
        with self._worker._lock:
            self._lost = True
            unanswered = [(task, message.ack) for task, message in self._unanswered]
            self._unanswered.clear()
        return unanswered


class Worker:
    """A worker of `queues` with `credit` tasks in flight at most.

    `client_id` is needed to resume after a dropped connection (without
    one the server names the worker). With `receipts`, each task's
    arrival is confirmed at once (the server then redelivers a task whose
    receipt does not come within its receipt timeout), at the cost of a
    message per task. `token`, `ca_file`, `cert_file`, `key_file` and
    `tls_domain` are as for `Producer`.

    Handlers run in `threads` threads (default: the credit, at most 2);
    the rest of the credit is tasks waiting their turn, already on their
    way. Python runs one thread's code at a time, so more threads only
    help handlers that wait (on I/O, on other processes); past a few, for
    quick handlers, they cost more than they bring.
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
        threads: Optional[int] = None,
    ) -> None:
        self.settings = WorkerSettings(client_id, list(queues), credit, keepalive, receipts)
        self.threads = min(credit, 2) if threads is None else threads
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        self._connection = Connection(address, token, ca_file, cert_file, key_file, tls_domain)
        self._lock = threading.Condition()
        self._held: Dict[str, Task] = {}
        self._session_id = ""
        self._control: Optional[_Control] = None
        self._draining = False
        self._stopped = threading.Event()
        self._handler: Optional[Handler] = None
        self._lanes: List[_Lane] = []
        #: Tasks the read-ahead thread took, waiting for a lane (they are
        #: held: a resumed session runs them).
        self._waiting: Deque[Task] = collections.deque()
        #: Set while a session's end puts its unanswered acks back.
        self._settling = False

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
        feed = _Feed(self, stream)
        lanes: List[_Lane] = []
        try:
            headers = dict(stream.initial_metadata() or ())
            if "contact-session-id" not in headers:
                # Not registered (no connection, or refused): the call's end
                # says why. What this worker holds waits for the next try.
                stream.code()
                raise stream
            self.client_id = self.client_id or headers.get("contact-client-id")
            self._session_id = headers.get("contact-session-id", "")
            resumed = int(headers.get("contact-resumed", "0") or 0)
            if self._session_id:
                log.info("registered as %s (session %s, resumed %d)", self.client_id,
                         self._session_id, resumed)
            if not resuming or resumed == 0:
                # A new session: what this worker held goes to others.
                with self._lock:
                    for task in self._held.values():
                        task.cancelled.set()
                    self._held.clear()
                    self._waiting.clear()
                    self._lock.notify_all()
            control_metadata = self._connection.worker_metadata(self.client_id)
            with self._lock:
                self._control = _Control(stub, control_metadata, on_lost=stream.cancel)
                self._lock.notify_all()
            if self._draining:
                self._send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
            lanes = [_Lane(self, stub, control_metadata, feed)
                     for _ in range(self.threads)]
            with self._lock:
                self._lanes = lanes
            threading.Thread(target=feed.read_ahead, daemon=True).start()
            while not feed.ended.wait(timeout=1.0):
                pass  # a timeout, so that signal handlers run in the main thread
            if feed.error is None:
                return False
            raise feed.error
        except grpc.RpcError as error:
            reason = dict(error.trailing_metadata() or ()).get("contact-end-reason", "")
            code = error.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.INVALID_ARGUMENT):
                log.error("getTask refused: %s %s", code, error.details())
                raise
            if code == grpc.StatusCode.CANCELLED:
                # Cancelled here: by a finished drain, or for a lost connection.
                if self._stopped.is_set():
                    return True
                log.warning("connection lost")
                return False
            log.warning("getTask ended: %s %s (%s)", code, error.details(), reason or "lost")
            return reason in FINAL_END_REASONS
        finally:
            with self._lock:
                if self._control:
                    self._control.close()
                self._control = None
            with self._lock:
                self._settling = True
                self._lanes = []
            for lane in lanes:
                # What the server answered before the end (a shutdown
                # confirms every ack it applied) need not be sent again.
                lane.read_answers(timeout=1)
                for task, result in lane.lost():
                    with self._lock:
                        self._held.setdefault(task.id, task)  # claimed on resume
                    self._acknowledge_later(task, result)
            with self._lock:
                self._settling = False
                self._lock.notify_all()
            stream.cancel()
            channel.close()

    # --- what the lanes call ---

    def _tell(self, message: Any, what: str) -> None:
        """Sends on the control channel; a refusal is logged."""
        reply = self._send(message)

        def answered(future: "concurrent.futures.Future[Any]") -> None:
            if future.exception() is None and future.result().code != 0:
                log.warning("%s refused: %s", what, future.result().error)

        if reply is not None:
            reply.add_done_callback(answered)

    def _accept(self, message: Any) -> Optional[Task]:
        """What a message read off getTask does: a task is held (its lease
        kept from now on) and its receipt confirmed; a cancel marks its
        task; a keepalive needs nothing (heartbeats keep their own time)."""
        if message.kind == pb.KIND_TASK:
            task = Task(message.task_id, message.task, bytes(message.payload), message.attempt,
                        queue=message.queue, lease=message.lease_ms / 1000)
            with self._lock:
                self._held[task.id] = task
                if task.lease > 0:
                    task._extend_at = time.monotonic() + task.lease / 2
            if message.receipt_required:
                self._tell(pb.ClientMsg(ack=pb.Result(
                    task_id=task.id, attempt=task.attempt, receipt=True)), "receipt")
            return task
        if message.kind == pb.KIND_CANCEL:
            self._cancelled(message.task_id, message.attempt)
        return None

    def _keep_waiting(self, task: Task) -> None:
        """A task read ahead, for the next free lane."""
        with self._lock:
            self._waiting.append(task)

    def _take_waiting(self) -> Optional[Task]:
        """The oldest task read ahead that is still held, if any."""
        with self._lock:
            while self._waiting:
                task = self._waiting.popleft()
                if self._held.get(task.id) is task:
                    return task
        return None

    def _cancelled(self, task_id: str, attempt: int) -> None:
        with self._lock:
            held = self._held.get(task_id)
            if held is not None and held.attempt == attempt:
                log.info("task %s taken back by the server", held.id)
                held.cancelled.set()

    def _send(self, message: Any) -> "Optional[concurrent.futures.Future[Any]]":
        with self._lock:
            control = self._control
        return control.send(message) if control else None

    # --- work ---

    def _keep_leases(self) -> None:
        """One thread for every lease and for proof of life: a task whose
        handler runs past half its lease gets it extended, again each half
        lease, and a heartbeat goes once per keepalive interval, so a
        worker whose every thread is in a long handler is still heard."""
        keepalive = self.settings.keepalive
        heartbeat_at = time.monotonic() + keepalive
        while not self._stopped.wait(0.2):
            now = time.monotonic()
            with self._lock:
                due = [t for t in self._held.values()
                       if t._extend_at is not None and t._extend_at <= now
                       and not t.cancelled.is_set()]
                for task in due:
                    task._extend_at = now + task.lease / 2
            for task in due:
                self._tell(pb.ClientMsg(extend=pb.Extend(task_id=task.id, attempt=task.attempt)),
                           f"lease extension of {task.id}")
            if keepalive > 0 and now >= heartbeat_at:
                heartbeat_at = now + keepalive
                self._tell(pb.ClientMsg(running=self.running), "heartbeat")

    def _run(self, task: Task, result: Any) -> bool:
        """Runs the handler and fills in `result`, its ack; False when the
        server took the task back meanwhile."""
        assert self._handler is not None
        if task.cancelled.is_set():  # taken back while it waited for a lane
            self._forget(task)
            return False
        result.task_id = task.id
        result.attempt = task.attempt
        if task.lease > 0:
            with self._lock:
                task._extend_at = time.monotonic() + task.lease / 2
        try:
            value = self._handler(task)
            result.outcome = pb.OUTCOME_DONE
            if isinstance(value, (bytes, bytearray)):
                result.output = bytes(value)
            elif value is not None:
                result.ret = _outcome.text(value)
        except Retry as retry:
            result.outcome = pb.OUTCOME_RETRY
            result.error = _outcome.text(retry.reason or "retry")
            if retry.after is not None:
                result.retry_after_ms = _outcome.milliseconds(retry.after)
        except PermanentFailure as failure:
            result.outcome = pb.OUTCOME_FAILED_PERMANENTLY
            result.error = _outcome.text(failure) or "failed permanently"
        except BaseException as error:  # noqa: BLE001 - anything else fails the attempt
            # SystemExit in a handler thread included: the task must be acked.
            result.outcome = pb.OUTCOME_FAILED
            result.error = _outcome.failure(error)
        finally:
            with self._lock:
                task._extend_at = None
        if task.cancelled.is_set():
            self._forget(task)
            return False
        return True

    def _acknowledge_later(self, task: Task, result: Any) -> None:
        """An ack whose call was lost: sent again on the next connection."""
        threading.Thread(target=self._acknowledge_again, args=(task, result), daemon=True).start()

    def _acknowledge_again(self, task: Task, result: Any) -> None:
        """Acks again, waiting for a connection if there is none, for a minute."""
        give_up = time.monotonic() + 60
        while True:
            reply = self._send(pb.ClientMsg(ack=result))
            try:
                if reply is None:
                    raise ConnectionError("not connected")
                answer = reply.result(timeout=30)
                if answer.code != 0:
                    # The first one may have landed before its answer was lost.
                    log.info("ack of %s, sent again, refused: %s", task.id, answer.error)
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
        while not self._stopped.is_set():
            # The pause goes again each round: a connection made since the
            # last has not had it (and a refused one is tried again).
            self._send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
            with self._lock:
                while (self._held or self._settling) and not self._stopped.is_set():
                    self._lock.wait(timeout=1.0)
                lanes = list(self._lanes)
            # Every ack is sent; leaving before the server has applied them
            # could hand their tasks to another worker. An answer lost with
            # the connection puts its ack back in `_held`, sent again.
            if all(lane.read_answers(timeout=10) for lane in lanes) and self._nothing_unread():
                break
            with self._lock:
                self._lock.wait(timeout=0.05)
        self._stopped.set()
        with self._lock:
            if self._control:
                self._control.close()

    def _nothing_unread(self) -> bool:
        """Whether the server, paused, counts nothing in flight: with every
        ack confirmed, anything it counts was pushed before the pause and is
        still unread in the stream (credit above the threads). The pause
        and the question go on the same call, so the answer follows it."""
        with self._lock:
            control = self._control
        if control is None:
            return False
        paused = control.send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
        asked = control.send(pb.ClientMsg(running=0))
        try:
            pause, answer = paused.result(timeout=10), asked.result(timeout=10)
        except (ConnectionError, concurrent.futures.TimeoutError):
            return False
        return bool(pause.code == 0 and answer.code == 0 and answer.in_flight == 0)
