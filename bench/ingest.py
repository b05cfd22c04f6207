"""Readings per second from MQTT to committed rows, with 1 and 2 ingest workers, beside a raw
COPY of the same rows into the same table in the same run (the ceiling). Issue 5's target: one
worker reaches at least 40 % of the COPY rate.

Each run: a fresh database (dropped at the end) on the PostgreSQL of --database-url, a private
Mosquitto with the queue settings of deploy/mosquitto.conf, `metergate ingest run` workers as
subprocesses. The workers are subscribed and held up by a lock on `readings` while every
message is published; the clock starts when the lock is released and stops when the last row
is committed, so the figure is the ingest's own rate (delivery, validation, write, ack), not
the publisher's.

Messages are shaped like a water meter's telegrams: values of the moment (storage 0: the
index and the other quantities a meter reports) and the last month's register, which a meter
repeats in every telegram of the month, so most messages bring one reading the table already
has (stored once; the COPY ceiling copies each row once too).

    .venv/bin/python bench/ingest.py [--messages 20000] [--per-message 4] [--meters 1000]
        [--batch-size 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ingest.migrate import migrate
from ingest.payload import Message, ReadingMessage, parse_message
from ingest.store import READING_COLUMNS, READING_TYPES, Store, copy_rows, reading_rows
from tests.ingest.messages import BASE, encode, iso, reading
from tests.ingest.services import PrivateBroker, Publisher, WorkerProcess, wait_until

ADMIN_URL = os.environ.get(
    "METERGATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


QUANTITIES = ("volume", "volume_flow", "flow_temperature", "external_temperature", "on_time")


def telegram(seq: int, *, meters: int, values: int) -> tuple[str, bytes]:
    """Message `seq`: `values` readings, the last of them the month-end register of its meter
    (the same for every message of the meter), the others new instantaneous values."""
    topic, payload = reading(seq, meter_id=f"KAM-{seq % meters:08d}", count=values)
    now, register = payload["readings"][0], payload["readings"][-1]
    payload["readings"] = [
        {**now, "quantity": QUANTITIES[n % len(QUANTITIES)], "subunit": n // len(QUANTITIES)}
        for n in range(values - 1)
    ] + [{**register, "storage": 1, "measured_at": iso(BASE), "value": f"{seq % meters}.000"}]
    return encode((topic, payload))


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, meter_status, meters, engine_marks")
        conn.execute("VACUUM ANALYZE readings")


def copy_rate(url: str, rows: list[tuple[object, ...]]) -> float:
    start = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        copy_rows(cur, "readings", READING_COLUMNS, READING_TYPES, rows)
    elapsed = time.perf_counter() - start
    assert count_rows(url) == len(rows)
    return len(rows) / elapsed


def store_rate(url: str, messages: list[Message], batch_size: int) -> tuple[float, float]:
    """The worker's write alone, no MQTT (Store.write in batches): rows/s and ms per batch."""
    batches = [messages[n : n + batch_size] for n in range(0, len(messages), batch_size)]
    rows = 0
    with Store(url) as store:
        started = time.perf_counter()
        for batch in batches:
            rows += store.write(batch).readings
        elapsed = time.perf_counter() - started
    return rows / elapsed, elapsed / len(batches) * 1e3


def worker_args(url: str, broker: PrivateBroker, run: str, n: int, batch_size: int) -> list[str]:
    return [
        "--database-url", url, "--mqtt-url", broker.url, "--client-id", f"bench-{run}-{n}",
        "--share-group", f"bench{run}", "--batch-size", str(batch_size), "--session-expiry", "600",
    ]  # fmt: skip


def ingest_rate(
    url: str,
    broker: PrivateBroker,
    messages: list[tuple[str, bytes]],
    *,
    expected_rows: int,
    workers: int,
    batch_size: int,
    directory: Path,
) -> float:
    run = uuid.uuid4().hex[:8]
    processes = [
        WorkerProcess(
            directory / f"worker-{run}-{n}.log", *worker_args(url, broker, run, n, batch_size)
        )
        for n in range(workers)
    ]
    publisher = Publisher(broker.url)
    try:
        # Subscribed: the broker has their sessions, so it queues for them from now on.
        for process in processes:
            process.wait_for_log("subscribed to")
        with psycopg.connect(url) as blocker:
            blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            publisher.publish(messages, timeout_s=600)
            start = time.perf_counter()
        wait_until(lambda: count_rows(url) >= expected_rows, 600, "every row committed")
        elapsed = time.perf_counter() - start
    finally:
        publisher.close()
        for process in processes:
            process.terminate()
    assert count_rows(url) == expected_rows
    return expected_rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=ADMIN_URL, help="a database to CREATE from")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--per-message", type=int, default=4, help="readings per message")
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    if args.per_message < 2:
        parser.error("a message carries at least a value and the register")

    encoded = [
        telegram(seq, meters=args.meters, values=args.per_message) for seq in range(args.messages)
    ]
    parsed = [parse_message(topic, payload) for topic, payload in encoded]
    # Each row once, the first message's (what the ingest stores), in the order they came.
    unique: dict[tuple[object, ...], tuple[object, ...]] = {}
    for message in parsed:
        if isinstance(message, ReadingMessage):
            for row in reading_rows(message):
                unique.setdefault(row[:7], row)
    rows = list(unique.values())

    name = f"metergate_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(args.database_url, dbname=name)
    with tempfile.TemporaryDirectory(prefix="metergate-bench-") as scratch:
        directory = Path(scratch)
        broker = PrivateBroker(directory)
        try:
            migrate(url)
            print(
                f"{args.messages} messages x {args.per_message} readings of {args.meters} meters"
                f" = {len(rows)} rows (each register stored once), batches of"
                f" {args.batch_size}; broker: {' / '.join(broker.config_lines)}"
            )
            empty(url)
            ceiling = copy_rate(url, rows)
            print(f"raw COPY into readings:  {ceiling:10.0f} rows/s")
            empty(url)
            alone, per_batch = store_rate(url, parsed, args.batch_size)
            print(
                f"Store.write alone:       {alone:10.0f} rows/s ({per_batch:.1f} ms a batch,"
                f" {100 * alone / ceiling:.0f} % of COPY; bench/mqtt_receive.py: paho's share)"
            )
            for workers in (1, 2):
                empty(url)
                rate = ingest_rate(
                    url, broker, encoded, expected_rows=len(rows), workers=workers,
                    batch_size=args.batch_size, directory=directory,
                )  # fmt: skip
                print(
                    f"MQTT -> rows, {workers} worker{'s' if workers > 1 else ' '}: {rate:10.0f}"
                    f" rows/s ({rate * args.messages / len(rows):.0f} messages/s,"
                    f" {100 * rate / ceiling:.0f} % of COPY)"
                )
        finally:
            broker.stop()
            with psycopg.connect(args.database_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


if __name__ == "__main__":
    main()
