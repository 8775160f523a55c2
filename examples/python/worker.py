"""A contact-server worker in Python, doing what the Rust worker_client does.

It registers on getTask (id, queues and credit in metadata; receipts and
keepalives asked for), runs pushed tasks in a thread pool up to its credit,
confirms each receipt and answers keepalives as they come, acknowledges on
sendStatus (one reply per message, so a refused ack is reported and the
call goes on), stops work the server takes back, redials with backoff and
jitter and resumes its session with the tasks it still holds, and on
SIGINT/SIGTERM drains: credit 0, finish what it holds, exit 0.

    pip install -r requirements.txt
    python worker.py --id py-1 --queues default --work-ms 200

The "work" is a sleep of --work-ms; a task whose text starts with "fail" is
reported as failed. Stubs: stubs/, from gen_stubs.py.
"""

import argparse
import collections
import concurrent.futures
import logging
import os
import pathlib
import random
import signal
import sys
import threading
import time

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "stubs"))
import contact_pb2 as pb  # noqa: E402
import contact_pb2_grpc  # noqa: E402

log = logging.getLogger("worker")
FINAL_END_REASONS = {"drained", "disconnected"}  # an operator wants it gone


class Control:
    """sendStatus as a control channel: each message gets one reply, in order."""

    def __init__(self, stub, metadata, on_lost):
        self._on_lost = on_lost  # the session is useless without its control channel
        self._outbox = collections.deque()
        self._ready = threading.Condition()
        self._waiting = collections.deque()
        self._closed = False
        self._call = stub.sendStatus(self._messages(), metadata=metadata)
        threading.Thread(target=self._read_replies, daemon=True).start()

    def send(self, message):
        """Queues a message; a future of the server's Result for it."""
        reply = concurrent.futures.Future()
        with self._ready:
            if self._closed:
                reply.set_exception(ConnectionError("control channel closed"))
                return reply
            self._waiting.append(reply)
            self._outbox.append(message)
            self._ready.notify()
        return reply

    def close(self):
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _messages(self):
        while True:
            with self._ready:
                while not self._outbox and not self._closed:
                    self._ready.wait()
                if not self._outbox:
                    return
                message = self._outbox.popleft()
            yield message

    def _read_replies(self):
        try:
            for result in self._call:
                with self._ready:
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
    def __init__(self, args):
        self.args = args
        # Sent on every call: a server with authentication needs a token
        # with the worker role.
        self.credentials = [("authorization", f"Bearer {args.token}")] if args.token else []
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.max_in_flight)
        self.lock = threading.Condition()
        self.held = {}  # task id -> attempt
        self.cancelled = set()  # (task id, attempt) the server took back
        self.session_id = ""
        self.control = None
        self.draining = False
        self.stop = threading.Event()

    # --- connection ---

    def run(self):
        backoff = 0.1
        while not self.stop.is_set():
            final = self.run_session()
            if final or (self.draining and not self.held):
                break
            wait = backoff * (0.5 + random.random() / 2)
            log.info("reconnecting in %.2f s", wait)
            self.stop.wait(wait)
            backoff = min(backoff * 2, 10.0)
        self.stop.set()

    def open_channel(self):
        """A plain channel, or TLS with --ca-file (and mutual TLS with a client certificate)."""
        args = self.args
        if not args.ca_file:
            return grpc.insecure_channel(args.server)
        read = lambda path: open(path, "rb").read() if path else None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca_file),
            private_key=read(args.key_file),
            certificate_chain=read(args.cert_file),
        )
        options = [("grpc.ssl_target_name_override", args.tls_domain)] if args.tls_domain else []
        return grpc.secure_channel(args.server, credentials, options=options)

    def run_session(self):
        """One connection's life; True when the worker must not reconnect."""
        channel = self.open_channel()
        stub = contact_pb2_grpc.ContactStub(channel)
        metadata = self.credentials + [
            ("contact-client-id", self.args.id),
            ("contact-queues", self.args.queues),
            ("contact-max-in-flight", "1" if self.draining else str(self.args.max_in_flight)),
            ("contact-receipts", "true"),
            ("contact-keepalive-ms", "5000"),
        ]
        with self.lock:
            held = [pb.HeldTask(task_id=t, attempt=a) for t, a in self.held.items()]
        request = pb.Empty(resume_session_id=self.session_id, held=held if self.session_id else [])
        stream = stub.getTask(request, metadata=metadata)
        try:
            headers = dict(stream.initial_metadata())
            self.session_id = headers.get("contact-session-id", "")
            log.info("registered as %s (session %s, resumed %s)", self.args.id,
                     self.session_id, headers.get("contact-resumed", "0"))
            with self.lock:
                self.control = Control(stub, self.credentials + [("contact-client-id", self.args.id)],
                                       on_lost=stream.cancel)
                self.lock.notify_all()
            if self.draining:
                self.control.send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
            for message in stream:
                self.on_message(message)
            return False
        except grpc.RpcError as error:
            reason = dict(error.trailing_metadata() or ()).get("contact-end-reason", "")
            log.warning("getTask ended: %s %s (%s)", error.code(), error.details(),
                        reason or "lost")
            return reason in FINAL_END_REASONS
        finally:
            with self.lock:
                if self.control:
                    self.control.close()
                self.control = None
            channel.close()

    def on_message(self, message):
        if message.kind == pb.KIND_TASK:
            with self.lock:
                self.held[message.task_id] = message.attempt
            if message.receipt_required:
                self.send(pb.ClientMsg(ack=pb.Result(
                    task_id=message.task_id, attempt=message.attempt, receipt=True)))
            try:
                self.pool.submit(self.work, message)
            except RuntimeError:
                # Shutting down: never started, so the server redelivers it.
                log.info("task %s arrived while stopping; left to the server", message.task_id)
        elif message.kind == pb.KIND_KEEPALIVE:
            self.send(pb.ClientMsg(running=len(self.held)))
        elif message.kind == pb.KIND_CANCEL:
            log.info("task %s taken back by the server", message.task_id)
            with self.lock:
                if self.held.get(message.task_id) == message.attempt:
                    self.cancelled.add((message.task_id, message.attempt))

    def send(self, message):
        """Sends on the current control channel; the reply's future, or None."""
        with self.lock:
            control = self.control
        return control.send(message) if control else None

    # --- work ---

    def work(self, task):
        log.info("working on %s (attempt %d): %s", task.task_id, task.attempt, task.task)
        deadline = time.monotonic() + self.args.work_ms / 1000
        while time.monotonic() < deadline:
            with self.lock:
                if (task.task_id, task.attempt) in self.cancelled:
                    self.cancelled.discard((task.task_id, task.attempt))
                    if self.held.get(task.task_id) == task.attempt:
                        del self.held[task.task_id]
                    self.lock.notify_all()
                    return
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if task.task.startswith("fail"):
            result = pb.Result(outcome=pb.OUTCOME_FAILED, error="the task asked to fail")
        else:
            result = pb.Result(outcome=pb.OUTCOME_DONE,
                               ret=f"processed {task.task!r} ({len(task.payload)} payload bytes)")
        result.task_id, result.attempt = task.task_id, task.attempt
        self.acknowledge(result)

    def acknowledge(self, result):
        """Acks on the control channel, again after a reconnect if the line drops."""
        give_up = time.monotonic() + 60
        while True:
            reply = self.send(pb.ClientMsg(ack=result))
            try:
                if reply is None:
                    raise ConnectionError("not connected")
                answer = reply.result(timeout=30)
                if answer.code != 0:
                    log.warning("ack of %s refused: %s", result.task_id, answer.error)
                break
            except (ConnectionError, concurrent.futures.TimeoutError):
                if self.stop.is_set() or time.monotonic() > give_up:
                    log.error("ack of %s not delivered; the server will redeliver it",
                              result.task_id)
                    break
                with self.lock:
                    self.lock.wait(timeout=0.5)  # for the next connection
        with self.lock:
            if self.held.get(result.task_id) == result.attempt:
                del self.held[result.task_id]
            self.lock.notify_all()

    # --- status and drain ---

    def report_status(self):
        while not self.stop.wait(self.args.status_every):
            running = len(self.held)
            self.send(pb.ClientMsg(msg="idle" if not running else f"running {running} tasks",
                                   running=running))

    def drain(self, *_):
        if self.draining:
            return
        log.info("draining: finishing held tasks, then exiting")
        self.draining = True
        threading.Thread(target=self._finish_drain, daemon=True).start()

    def _finish_drain(self):
        paused = self.send(pb.ClientMsg(credit=pb.Credit(max_in_flight=0)))
        try:
            # Once the pause is applied, what was pushed before it has come.
            if paused is not None:
                paused.result(timeout=10)
        except (ConnectionError, concurrent.futures.TimeoutError):
            pass  # a reconnect registers paused
        with self.lock:
            while self.held:
                self.lock.wait()
        self.stop.set()


def grpc_target(address):
    """A server address as grpcio wants it (host:port), from any form the
    project's tools take: host:port, http(s)://host:port, localhost."""
    bare = address.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():  # no port given (a bare host, or [::1])
        return f"{bare}:50051"
    return bare


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("CONTACT_SERVER", "127.0.0.1:50051"),
                        type=grpc_target,
                        help="host:port, http://host:port or localhost (default: $CONTACT_SERVER "
                             "or 127.0.0.1:50051)")
    parser.add_argument("--id", required=True, help="this worker's id (needed to resume)")
    parser.add_argument("--queues", default="default", help="comma-separated")
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--work-ms", type=int, default=100)
    parser.add_argument("--status-every", type=float, default=5.0)
    parser.add_argument("--token", default=os.environ.get("CONTACT_TOKEN"),
                        help="bearer token, for a server with authentication "
                             "(default: $CONTACT_TOKEN)")
    parser.add_argument("--ca-file", default=os.environ.get("CONTACT_CA_FILE"),
                        help="speak TLS, trusting these CA certificates (PEM)")
    parser.add_argument("--tls-domain", help="the name the server's certificate carries")
    parser.add_argument("--cert-file", help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--key-file", help="its key (PEM)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    worker = Worker(args)
    signal.signal(signal.SIGINT, worker.drain)
    signal.signal(signal.SIGTERM, worker.drain)
    threading.Thread(target=worker.run, daemon=True).start()
    threading.Thread(target=worker.report_status, daemon=True).start()
    while not worker.stop.wait(0.2):
        pass
    worker.pool.shutdown(wait=True)
    log.info("worker stopped")


if __name__ == "__main__":
    main()
