"""A process that spools and publishes, for the tests that SIGKILL a gateway.

    python -m tests.gateway.publish_worker SPOOL GATEWAY_ID BROKER_URL COUNT [--hold]

Appends COUNT messages (meters M-0..M-4 in turn, about one per millisecond) while a Publisher
sends them, printing `seq N` once message N is committed. Then it waits for the spool to empty
and prints `drained`; with --hold it then sleeps until killed, else it stops the publisher
gracefully and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time

from gateway.broker import BrokerConfig
from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.spool import Spool

METERS = 5
WINDOW = 16


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spool")
    parser.add_argument("gateway_id")
    parser.add_argument("broker_url")
    parser.add_argument("count", type=int)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()

    spool = Spool(args.spool, args.gateway_id)
    started = time.monotonic()
    publisher = Publisher(
        spool,
        BrokerConfig.from_url(args.broker_url),
        args.gateway_id,
        metrics=GatewayMetrics(),
        status=lambda: {"uptime_s": round(time.monotonic() - started, 3), "depth": spool.depth()},
        window=WINDOW,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
    )
    publisher.start()
    for n in range(args.count):
        meter_id = f"M-{n % METERS}"
        message = {"schema": "reading/1", "gateway_id": args.gateway_id, "meter_id": meter_id}
        spooled = spool.append("reading", meter_id, message)
        publisher.wake()
        print(f"seq {spooled.seq}", flush=True)
        time.sleep(0.001)
    while spool.depth():
        time.sleep(0.01)
    print("drained", flush=True)
    if args.hold:
        while True:
            time.sleep(60)
    publisher.stop(10)
    spool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
