"""A contact-server worker in Python, on the contact-client package
(clients/python): what the Rust worker_client example does.

The package does the protocol: receipts, keepalives, acks on sendStatus,
lease extension, cancels, reconnect and resume, and on SIGINT/SIGTERM a
drain (credit 0, finish what it holds, exit 0). This file adds the "work"
(a sleep of --work-ms that stops if the server takes the task back; a task
whose text starts with "fail" fails) and a status report every
--status-every seconds.

    pip install ./clients/python
    python examples/python/worker.py --id py-1 --queues default --work-ms 200
"""

import argparse
import logging
import os
import threading

from contact_client import Worker

log = logging.getLogger("worker")


def grpc_address(address):
    """The address as given; the package takes every form the tools take."""
    return address.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("CONTACT_SERVER", "127.0.0.1:50051"),
                        type=grpc_address,
                        help="host:port, http(s)://host:port or localhost (default: $CONTACT_SERVER "
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

    worker = Worker(
        args.server,
        client_id=args.id,
        queues=args.queues.split(","),
        credit=args.max_in_flight,
        receipts=True,
        token=args.token,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        tls_domain=args.tls_domain,
    )

    def handler(task):
        log.info("working on %s (attempt %d): %s", task.id, task.attempt, task.text)
        # The work: a sleep, cut short if the server takes the task back.
        if task.cancelled.wait(args.work_ms / 1000):
            return None
        if task.text.startswith("fail"):
            raise RuntimeError("the task asked to fail")
        return f"processed {task.text!r} ({len(task.payload)} payload bytes)"

    stopped = threading.Event()

    def report():
        while not stopped.wait(args.status_every):
            running = worker.running
            worker.report_status("idle" if not running else f"running {running} tasks")

    threading.Thread(target=report, daemon=True).start()
    try:
        worker.run(handler)
    finally:
        stopped.set()


if __name__ == "__main__":
    main()
