"""contact-client: workers and producers for contact-server.

    from contact_client import Producer, Worker, Retry, PermanentFailure

    producer = Producer("127.0.0.1:50051")
    task_id = producer.submit("resize img-1", queue="images")
    info = producer.wait(task_id, timeout=30)

    def handler(task):
        return task.text.upper()

    Worker("127.0.0.1:50051", client_id="py-1", queues=["images"], credit=4).run(handler)
"""

from .errors import ContactError, PermanentFailure, Refused, Retry
from .producer import Producer, TaskInfo
from .worker import Task, Worker

__all__ = [
    "ContactError",
    "PermanentFailure",
    "Producer",
    "Refused",
    "Retry",
    "Task",
    "TaskInfo",
    "Worker",
]
