# The smallest useful worker, as the README shows it: every task's result is
# its text in capitals. CONTACT_SERVER names the server.
import os
from contact_client import Worker

def handler(task):
    return task.text.upper()

Worker(os.environ.get("CONTACT_SERVER", "127.0.0.1:50051"), client_id="py-mini").run(handler)
