#!/usr/bin/env python3
"""A RabbitMQ consumer in Python whose effect is a row in PostgreSQL (psycopg 3), to show that
the postgres sink watches any language's writes where they land.

It follows exactly's consumer contract (EXACTLY_AMQP_URL, EXACTLY_QUEUE, EXACTLY_PREFETCH) and
writes each message as (message_id, payload) into the table EXACTLY_DB_TABLE (default
`orders`) of DATABASE_URL (the plan's consumer.env gives both). --mode:

- dedup-table: the row and processed(message_id) in one transaction, an ID already in
  `processed` skipped (ON CONFLICT DO NOTHING); basic.ack after the transaction committed.
  A redelivery writes nothing (effectively exactly-once).
- db-then-ack: the row in its own transaction, then basic.ack (at-least-once).

--also adds one more database write per message, for the sink's tests:
- rollback: first the same row in a transaction that is rolled back (never an effect);
- update: after the row, an UPDATE that changes its payload (a second effect);
- touch: after the row, an UPDATE that sets the payload to what it already is (changes
  nothing: replayed, when the table has REPLICA IDENTITY FULL).

--work-ms N sleeps between the committed write and the ack (the window a kill lands in).
The message ID is the message_id property, else the exactly-id header, else the body.
"""

import argparse
import os
import sys
import time

import pika
import psycopg


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


def write(db, table, mode, also, msg_id, payload):
    """The message's database work; True when its row was written."""
    insert = f"INSERT INTO {table} (message_id, payload) VALUES (%s, %s::jsonb)"
    if also == "rollback":
        with db.transaction(force_rollback=True):
            db.execute(insert, (msg_id, payload))
    with db.transaction():
        if mode == "dedup-table":
            cur = db.execute(
                "INSERT INTO processed (message_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (msg_id,),
            )
            if cur.rowcount == 0:
                print(f"postgres_consumer: {msg_id} already in processed: skipped", file=sys.stderr)
                return False
        db.execute(insert, (msg_id, payload))
    if also == "update":
        db.execute(
            f"UPDATE {table} SET payload = payload || '{{\"touched\": true}}' WHERE message_id = %s",
            (msg_id,),
        )
    elif also == "touch":
        db.execute(f"UPDATE {table} SET payload = payload WHERE message_id = %s", (msg_id,))
    return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["dedup-table", "db-then-ack"], default="dedup-table")
    parser.add_argument("--also", choices=["rollback", "update", "touch"])
    parser.add_argument("--work-ms", type=int, default=0)
    args = parser.parse_args()
    table = os.environ.get("EXACTLY_DB_TABLE", "orders")
    db = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["EXACTLY_AMQP_URL"]))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=int(os.environ.get("EXACTLY_PREFETCH") or 10))
    print(f"postgres_consumer: mode {args.mode}, also {args.also}, table {table}", file=sys.stderr)

    def on_message(ch, method, properties, body):
        msg_id = message_id(properties, body)
        write(db, table, args.mode, args.also, msg_id, body.decode("utf-8", "replace"))
        time.sleep(args.work_ms / 1000)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_consume(queue=os.environ["EXACTLY_QUEUE"], on_message_callback=on_message)
    try:
        channel.start_consuming()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
