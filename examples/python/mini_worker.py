# The smallest useful worker, as the README shows it: every task's result is
# its text in capitals. CONTACT_SERVER names the server.
import os, sys
import grpc
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "stubs"))
import contact_pb2 as pb, contact_pb2_grpc

stub = contact_pb2_grpc.ContactStub(
    grpc.insecure_channel(os.environ.get("CONTACT_SERVER", "127.0.0.1:50051").removeprefix("http://")))
me = [("contact-client-id", "py-mini"), ("contact-queues", "default")]

def acks():
    for task in stub.getTask(pb.Empty(), metadata=me):
        yield pb.Result(task_id=task.task_id, attempt=task.attempt,
                        outcome=pb.OUTCOME_DONE, ret=task.task.upper())

stub.tellResult(acks(), metadata=me)
