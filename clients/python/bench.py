"""Throughput of one Python worker process: the contact-client package's
Worker (credit 64) beside a seed-style grpcio worker
(`stub.tellResult(acks(stub.getTask(...)))`), on the same server in the
same run. Each run queues N tasks first, then times one worker draining
them, from its start to the last result.

    python clients/python/bench.py --server 127.0.0.1:50051 --tasks 20000

Prints tasks/s for each and the package's ratio to the seed-style worker.
"""

import argparse
import threading
import time

import grpc

from contact_client import Producer, Worker
from contact_client._connection import target
from contact_client._proto import contact_pb2 as pb
from contact_client._proto import contact_pb2_grpc


def queue_tasks(producer, queue, n):
    ids = producer.submit_many(("x" for _ in range(n)), queue=queue)
    assert all(isinstance(i, str) for i in ids), ids[:3]
    return ids


def seed_style(address, queue, ids):
    """The tutorial's loop: one getTask stream, acks on one tellResult."""
    channel = grpc.insecure_channel(target(address)[0])
    stub = contact_pb2_grpc.ContactStub(channel)
    metadata = [("contact-client-id", f"seed-{queue}"), ("contact-queues", queue),
                ("contact-max-in-flight", "64")]
    stream = stub.getTask(pb.Empty(), metadata=metadata)
    started = time.monotonic()

    def acks():
        for n, task in enumerate(stream, 1):
            yield pb.Result(task_id=task.task_id, attempt=task.attempt,
                            outcome=pb.OUTCOME_DONE, ret=task.task)
            if n == len(ids):
                return

    stub.tellResult(acks(), metadata=metadata)
    elapsed = time.monotonic() - started
    stream.cancel()
    channel.close()
    return elapsed


def package(address, queue, ids, producer):
    worker = Worker(address, client_id=f"pkg-{queue}", queues=[queue], credit=64)
    started = time.monotonic()
    thread = threading.Thread(target=worker.run, args=(lambda task: task.text,), daemon=True)
    thread.start()
    producer.wait(ids[-1], timeout=600)
    elapsed = time.monotonic() - started
    worker.stop()
    thread.join(timeout=60)
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--tasks", type=int, default=20000)
    args = parser.parse_args()
    producer = Producer(args.server)
    runs = {}
    for label, run in [("seed-style grpcio worker", "seed"), ("contact-client Worker, credit 64", "pkg")]:
        queue = f"bench-{run}-{time.time_ns()}"
        ids = queue_tasks(producer, queue, args.tasks)
        if run == "seed":
            elapsed = seed_style(args.server, queue, ids)
        else:
            elapsed = package(args.server, queue, ids, producer)
        # Every task finished: nothing was lost on the way.
        assert producer.wait(ids[-1], timeout=60).state == "done"
        runs[label] = args.tasks / elapsed
        print(f"{label}: {runs[label]:.0f} tasks/s")
    seed, pkg = runs.values()
    print(f"ratio, package to seed-style: {pkg / seed:.2f}")


if __name__ == "__main__":
    main()
