"""Reading and finding wired M-Bus meters at 2400 Bd, beside what the standard's times allow.

A seeded fleet of simulated meters sits behind a pty that keeps the pace of the baud rate
(firmware_sim.serve_mbus: 11 bit times per character, answers after the shortest turnaround).
The master reads every meter by primary address (link reset, then every telegram of its
multi-telegram answer), then finds them all with the secondary search. Each phase is timed
and set beside its physical limit: the same exchanges with every byte at 11 bit times,
answers after the shortest turnaround (11 bit times) and silence after the longest (330 bit
times + 50 ms, EN 13757-2; PROTOCOL_NOTES §8.5). The ratio is how close the master comes.

    .venv/bin/python bench/mbus_scan.py [--meters 250] [--baud 2400] [--seed 1]

At 2400 Bd the default run takes about 15 minutes; --meters 40 gives a first idea in 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.mbus_master import MbusMaster
from drivers.mbus_timing import BusStats, MbusTiming
from drivers.serial_port import SerialPort
from firmware_sim.fleet import BUILDING_MEDIA, Fleet
from firmware_sim.mbus_slave import SlaveBus
from firmware_sim.serve_mbus import PtyMbusServer


def report(name: str, elapsed: float, stats: BusStats, timing: MbusTiming) -> None:
    limit = stats.physical_limit_s(timing)
    print(f"  {name}")
    print(
        f"    {stats.requests} exchanges ({stats.silent} unanswered, {stats.retries} repeated),"
        f" {stats.request_bytes + stats.reply_bytes:,} bytes on the wire"
    )
    print(
        f"    {elapsed:8.1f} s measured, {limit:8.1f} s the standard's times allow,"
        f" ratio {elapsed / limit:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=250)
    parser.add_argument("--baud", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.01,
        help="the master's allowance for adapter latency (a pty has none to speak of)",
    )
    args = parser.parse_args()
    if not 1 <= args.meters <= 250:
        parser.error("--meters: primary addresses go up to 250")
    fleet = Fleet.generate(args.meters, args.seed, media=BUILDING_MEDIA, events=False)
    timing = MbusTiming(baud=args.baud, latency_s=args.latency)
    print(
        f"wired M-Bus, {args.meters} simulated meters (seed {args.seed}) behind a pty paced at"
        f" {args.baud} Bd 8E1; the master allows {args.latency * 1000:.0f} ms latency"
    )
    with (
        tempfile.TemporaryDirectory(prefix="metergate-bench-") as directory,
        PtyMbusServer(
            SlaveBus.from_fleet(fleet), link=Path(directory) / "ttyMBUS0", baud=args.baud
        ) as server,
    ):
        port = SerialPort(server.url, baudrate=args.baud)
        port.open()
        with MbusMaster(port, timing=timing) as master:
            started = time.monotonic()
            telegrams = sum(len(master.read(m.primary_address).frames) for m in fleet)
            elapsed = time.monotonic() - started
            report(
                f"read {args.meters} meters by primary address, {telegrams} telegrams",
                elapsed,
                master.stats,
                timing,
            )
            master.stats = BusStats()
            started = time.monotonic()
            scan = master.scan_secondary()
            elapsed = time.monotonic() - started
            expected = {m.identity.secondary for m in fleet}
            found = {r.secondary.to_bytes() for r in scan.found if r.secondary}
            report(
                f"secondary search: {len(found)} of {args.meters} meters found"
                f" ({'exactly the fleet' if found == expected else 'NOT the fleet'}),"
                f" {scan.probes} selects",
                elapsed,
                master.stats,
                timing,
            )
    return 0 if found == expected else 1


if __name__ == "__main__":
    sys.exit(main())
