"""Throughput of one Python worker process: the contact-client package's
Worker (credit 64) beside the seed tutorial's grpcio worker
(`stub.tellResult(get_task(stub))`, no metadata), on the same server in
the same run. Each run queues N tasks on the default queue first, then
times one worker draining them, from its start to the last result.

    python clients/python/bench.py --server 127.0.0.1:50051 --tasks 20000 --rounds 5

Prints tasks/s for each and the package's ratio to the seed-style worker,
per round, and with several rounds their median (this machine is noisy:
a single round's ratio moves by a few tenths).
"""

import argparse
import statistics
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


def seed_style(address, ids):
    """The seed tutorial's worker, as it wrote it: `stub.tellResult(get_task(stub))`
    with no metadata (so the default queue and credit), each result acking
    the oldest task held."""
    channel = grpc.insecure_channel(target(address)[0])
    stub = contact_pb2_grpc.ContactStub(channel)
    stream = stub.getTask(pb.Empty())
    started = time.monotonic()

    def get_task():
        for n, task in enumerate(stream, 1):
            yield pb.Result(ret=f"received {task.task}")
            if n == len(ids):
                return

    stub.tellResult(get_task())
    elapsed = time.monotonic() - started
    stream.cancel()
    channel.close()
    return elapsed


def package(address, ids, producer):
    worker = Worker(address, client_id="pkg-bench", credit=64)
    started = time.monotonic()
    thread = threading.Thread(target=worker.run, args=(lambda task: task.text,), daemon=True)
    thread.start()
    # Tasks start in order; the last 64 (its credit) may finish in any.
    for task_id in ids[-64:]:
        producer.wait(task_id, timeout=600)
    elapsed = time.monotonic() - started
    worker.stop()
    thread.join(timeout=60)
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="seed-style then package, this many times; the median ratio is the figure")
    args = parser.parse_args()
    producer = Producer(args.server)
    ratios = []
    for round_ in range(1, args.rounds + 1):
        runs = {}
        for label, run in [("seed-style grpcio worker", "seed"),
                           ("contact-client Worker, credit 64", "pkg")]:
            # Both on the default queue (the seed worker names none), one
            # after the other, each on tasks queued before it starts.
            ids = queue_tasks(producer, "default", args.tasks)
            if run == "seed":
                elapsed = seed_style(args.server, ids)
            else:
                elapsed = package(args.server, ids, producer)
            # Every task finished: nothing was lost on the way.
            assert all(producer.wait(i, timeout=60).state == "done" for i in ids)
            runs[label] = args.tasks / elapsed
            print(f"round {round_}: {label}: {runs[label]:.0f} tasks/s")
        seed, pkg = runs.values()
        ratios.append(pkg / seed)
        print(f"round {round_}: ratio, package to seed-style: {pkg / seed:.2f}")
    if args.rounds > 1:
        print(f"median ratio over {args.rounds} rounds: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
