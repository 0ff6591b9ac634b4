"""A consumer for tests/evidence.rs: prints one `effect <ID>` line per message on its stdout (the
stdout sink) and acks after it. Its first incarnation, at the message whose ID ends in `-12`,
writes that line cut after `-1` with no newline (the bytes a block-buffered stdout had let out
when the process died) and SIGKILLs itself: the cut line reads as the valid ID `...-1`, which
must never become a second effect of message 1.
"""

import json
import os
import signal
import sys

import pika

url = os.environ["EXACTLY_AMQP_URL"]
queue = os.environ["EXACTLY_QUEUE"]
first = os.environ["EXACTLY_INCARNATION"] == "1"

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.basic_qos(prefetch_count=1)
for method, _properties, body in channel.consume(queue):
    message_id = json.loads(body)["order_id"]
    line = f"effect {message_id}\n"
    if first and message_id.endswith("-12"):
        sys.stdout.flush()
        os.write(1, line[: -len("2\n")].encode())
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdout.write(line)
    sys.stdout.flush()
    channel.basic_ack(method.delivery_tag)
