"""The simulated fleet behind a simulated receiver on a pty, for the driver tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from drivers.serial_port import Backoff
from drivers.wmbus_receiver import open_receiver
from drivers.wmbus_receiver_base import Receiver
from firmware_sim.fleet import Fleet, SimClock
from firmware_sim.receivers import ReceiverDevice
from firmware_sim.serve_wmbus import ReceiverServer
from firmware_sim.wmbus_meters import Transmission, WmbusFleet, WmbusMeter

START = datetime(2026, 2, 1, 6, tzinfo=UTC)
FAST = Backoff(initial_s=0.02, factor=2.0, maximum_s=0.2)


@cache
def air(meters: int = 50, seed: int = 7) -> WmbusFleet:
    return WmbusFleet(Fleet.generate(meters, seed), corruption_rate=0.02)


@contextmanager
def serving(
    device: ReceiverDevice,
    *,
    speed: float = 1000.0,
    fault_rate: float = 0.0,
    meters: int = 50,
    tmp_path: Path,
) -> Iterator[tuple[ReceiverServer, SimClock]]:
    clock = SimClock(START, speed)
    server = ReceiverServer(
        device,
        air(meters),
        clock=clock.now,
        link=tmp_path / "ttyWMBUS0",
        fault_rate=fault_rate,
        seed=3,
    )
    with server:
        yield server, clock
    assert not server.errors


def receiver_for(
    server: ReceiverServer, kind: str, *, mode: str = "T1", reconnect_budget_s: float = 3.0
) -> Receiver:
    return open_receiver(
        f"{kind}:{server.url}", mode=mode, backoff=FAST, reconnect_budget_s=reconnect_budget_s
    )


def meter_of(meter_id: str) -> WmbusMeter:
    return next(m for m in air().meters if m.meter is air().fleet.by_meter_id(meter_id))


def clean_transmissions(count: int = 6) -> list[Transmission]:
    """The first telegrams of the fleet that were not damaged on air."""
    return [tx for tx in air().transmissions(START, START + timedelta(minutes=5)) if tx.crc_ok][
        :count
    ]
