#!/usr/bin/env python3
"""A RabbitMQ consumer that publishes, for tests/amqp_protocol_faults.rs (`amqp: blocked`).

It follows exactly's consumer contract (EXACTLY_AMQP_URL, EXACTLY_QUEUE, EXACTLY_EFFECT_URL,
EXACTLY_PREFETCH). For each message it publishes the body to a queue of its own (exclusive,
deleted with the connection) on the same connection, in confirm mode: the publish returns once
RabbitMQ confirmed it. Then it POSTs the body to EXACTLY_EFFECT_URL and acks the message. So an
effect is seen only after its publish landed: a held publish delays it.

pika announces the `connection.blocked` capability by default; `--no-blocked-capability`
replaces its capabilities table with one that leaves it out. connection.blocked and
connection.unblocked are logged on stderr with the time they arrived.
"""

import os
import sys
import time
import urllib.request

import pika


def log(what):
    print(f"amqp_publishes: {time.time():.3f} {what}", file=sys.stderr, flush=True)


def main():
    params = pika.URLParameters(os.environ["EXACTLY_AMQP_URL"])
    if "--no-blocked-capability" in sys.argv[1:]:
        params.client_properties = {
            "capabilities": {
                "authentication_failure_close": True,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "publisher_confirms": True,
            }
        }
    conn = pika.BlockingConnection(params)
    conn.add_on_connection_blocked_callback(
        lambda _c, frame: log(f"connection.blocked ({frame.method.reason})")
    )
    conn.add_on_connection_unblocked_callback(lambda _c, _f: log("connection.unblocked"))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=int(os.environ.get("EXACTLY_PREFETCH") or 10))
    out = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()

    def on_message(channel, method, _props, body):
        started = time.time()
        channel.basic_publish("", out, body)
        waited = time.time() - started
        if waited > 0.5:
            log(f"publish confirmed after {waited:.3f}s")
        req = urllib.request.Request(
            os.environ["EXACTLY_EFFECT_URL"],
            data=body,
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).read()
        channel.basic_ack(method.delivery_tag)

    ch.basic_consume(os.environ["EXACTLY_QUEUE"], on_message)
    try:
        ch.start_consuming()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
