#!/usr/bin/env python3
"""A RabbitMQ consumer that neither re-subscribes nor exits when RabbitMQ cancels it, for
tests/amqp_protocol_faults.rs.

It follows exactly's consumer contract (EXACTLY_AMQP_URL, EXACTLY_QUEUE, EXACTLY_EFFECT_URL,
EXACTLY_PREFETCH): POSTs each body to EXACTLY_EFFECT_URL, then acks it. When a server-sent
basic.cancel ends its subscription, pika's start_consuming() returns; it then keeps its
connection open and idles forever (a consumer that hangs instead of exiting loudly).
"""

import os
import urllib.request

import pika


def main():
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["EXACTLY_AMQP_URL"]))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=int(os.environ.get("EXACTLY_PREFETCH") or 10))

    def on_message(channel, method, _props, body):
        req = urllib.request.Request(
            os.environ["EXACTLY_EFFECT_URL"],
            data=body,
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).read()
        channel.basic_ack(method.delivery_tag)

    ch.basic_consume(os.environ["EXACTLY_QUEUE"], on_message)
    ch.start_consuming()
    print("amqp_ignores_cancel: the broker cancelled the consumer; idling", flush=True)
    while True:
        conn.process_data_events(time_limit=1)


if __name__ == "__main__":
    main()
