#!/usr/bin/env python3
"""A RabbitMQ consumer that settles messages with nack or reject, for tests/mechanisms.rs.

It follows exactly's consumer contract (EXACTLY_AMQP_URL, EXACTLY_QUEUE, EXACTLY_EFFECT_URL,
EXACTLY_PREFETCH) and POSTs each effect (the message body, as JSON) to EXACTLY_EFFECT_URL.
--mode:

- requeue-once: effect, then basic.reject with requeue=true on the first delivery of each
  message; on its redelivery (marked redelivered by the broker), effect again, then basic.ack.
  Every message is applied twice by the same process: no rebalance, no other consumer.
- nack-every-10th: basic.nack with requeue=false, before any effect, for IDs ending in a
  multiple of 10 (<run>-10, <run>-20...); effect, then basic.ack, for the rest.

The message ID is the message_id property, else the exactly-id header, else the body.
"""

import os
import sys
import urllib.request

import pika


def message_id(properties, body):
    if properties.message_id:
        return properties.message_id
    headers = properties.headers or {}
    found = headers.get("exactly-id")
    if isinstance(found, bytes):
        return found.decode("utf-8", "replace")
    if found:
        return str(found)
    return body.decode("utf-8", "replace")


def effect(url, body):
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def tenth(msg_id):
    tail = msg_id.rsplit("-", 1)[-1]
    return tail.isdigit() and int(tail) % 10 == 0


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "--mode":
        sys.exit("usage: amqp_settle.py --mode requeue-once|nack-every-10th")
    mode = sys.argv[2]
    if mode not in ("requeue-once", "nack-every-10th"):
        sys.exit(f"unknown mode {mode}")
    url = os.environ["EXACTLY_EFFECT_URL"]
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["EXACTLY_AMQP_URL"]))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=int(os.environ.get("EXACTLY_PREFETCH") or 10))

    def on_message(ch, method, properties, body):
        msg_id = message_id(properties, body)
        if mode == "requeue-once":
            effect(url, body)
            if method.redelivered:
                ch.basic_ack(method.delivery_tag)
            else:
                ch.basic_reject(method.delivery_tag, requeue=True)
        elif tenth(msg_id):
            print(f"amqp_settle: {msg_id} nacked without requeue", file=sys.stderr, flush=True)
            ch.basic_nack(method.delivery_tag, requeue=False)
        else:
            effect(url, body)
            ch.basic_ack(method.delivery_tag)

    channel.basic_consume(os.environ["EXACTLY_QUEUE"], on_message, auto_ack=False)
    print(f"amqp_settle: mode {mode}", file=sys.stderr, flush=True)
    channel.start_consuming()


if __name__ == "__main__":
    main()
