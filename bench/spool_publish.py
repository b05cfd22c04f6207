"""The gateway's spool and publisher: messages per second, on the machine's disk and broker.

- appends: one message per transaction (an fsync each: synchronous=FULL) and batches of 100
  (`append_many`, one fsync per batch);
- a producer thread appending one by one while a consumer thread reads and deletes, as the
  gateway's pipeline and publisher thread do (each with its own SQLite connection);
- publishing a filled spool to the broker (QoS 1, deleted after PUBACK), and publishing while
  a producer appends.

Payloads are about the size of a reading/1 message (600 bytes).

    .venv/bin/python bench/spool_publish.py [--broker mqtt://127.0.0.1:1883] [--count 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.broker import BrokerConfig
from gateway.messages import Kind
from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.spool import Spool

METERS = 100


def message(gateway_id: str, n: int) -> tuple[Kind, str, dict[str, Any]]:
    meter_id = f"KAM-{n % METERS:08d}"
    body = {
        "schema": "reading/1",
        "gateway_id": gateway_id,
        "meter_id": meter_id,
        "frame": "2E44" + "AB" * 200,
        "readings": [{"quantity": "volume", "unit": "m3", "value": f"{n * 0.001:.3f}"}],
    }
    return "reading", meter_id, body


def appends(directory: Path, count: int) -> tuple[float, float]:
    gateway_id = "bench"
    with Spool(directory / "single.sqlite", gateway_id) as spool:
        started = time.perf_counter()
        for n in range(count):
            spool.append(*message(gateway_id, n))
        single = count / (time.perf_counter() - started)
    with Spool(directory / "batch.sqlite", gateway_id) as spool:
        started = time.perf_counter()
        for first in range(0, count, 100):
            spool.append_many(message(gateway_id, n) for n in range(first, first + 100))
        batched = count / (time.perf_counter() - started)
    return single, batched


def producer_and_consumer(directory: Path, count: int) -> float:
    gateway_id = "bench"
    spool = Spool(directory / "shared.sqlite", gateway_id)
    done = threading.Event()

    def produce() -> None:
        for n in range(count):
            spool.append(*message(gateway_id, n))
        done.set()

    def consume() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            batch = spool.pending(50, after_seq=cursor)
            if batch:
                cursor = batch[-1].seq
                spool.ack_many([m.seq for m in batch])
            elif finished:
                return

    started = time.perf_counter()
    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.close()
    return count / (time.perf_counter() - started)


def publishing(directory: Path, broker: BrokerConfig, count: int, *, live: bool) -> float:
    """Messages per second from the first append (live) or from a filled spool to an empty
    spool, every one acknowledged by the broker."""
    gateway_id = f"bench-{uuid.uuid4().hex[:8]}"
    spool = Spool(directory / f"{gateway_id}.sqlite", gateway_id)
    if not live:
        for first in range(0, count, 100):
            spool.append_many(message(gateway_id, n) for n in range(first, first + 100))
    publisher = Publisher(
        spool, broker, gateway_id, metrics=GatewayMetrics(), status=lambda: {}, window=100
    )
    started = time.perf_counter()
    publisher.start()
    if live:
        for first in range(0, count, 10):
            spool.append_many(message(gateway_id, n) for n in range(first, first + 10))
            publisher.wake()
    while spool.depth():
        time.sleep(0.005)
    rate = count / (time.perf_counter() - started)
    publisher.stop(5)
    spool.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    broker = BrokerConfig.from_url(args.broker)
    count = args.count
    # On the repository's disk (var/ is gitignored), not a tmpfs: fsync is what is measured.
    var = Path(__file__).resolve().parents[1] / "var"
    var.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=var) as name:
        directory = Path(name)
        single, batched = appends(directory, count // 4)
        print(f"spool appends, one per transaction (fsync each):  {single:9,.0f} /s")
        print(f"spool appends, batches of 100 (append_many):      {batched:9,.0f} /s")
        shared = producer_and_consumer(directory, count // 4)
        print(f"producer appending + consumer reading/deleting:   {shared:9,.0f} /s")
        filled = publishing(directory, broker, count, live=False)
        print(f"publish a filled spool to {args.broker} (QoS 1):  {filled:9,.0f} /s")
        live = publishing(directory, broker, count, live=True)
        print(f"append (batches of 10) + publish, end to end:     {live:9,.0f} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
