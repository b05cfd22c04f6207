"""The GPS reader against the simulated receiver over a real pty: fixes, garbage, outages, and
a receiver that is pulled out and plugged in again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.serial_port import Backoff
from firmware_sim.fleet import Fleet
from firmware_sim.gps import FAULTS, GpsServer, Track, example_route
from gateway.driveby.gps import GpsReader

pytestmark = pytest.mark.timeout(60)

START = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)
FAST = Backoff(initial_s=0.02, factor=2.0, maximum_s=0.1)
TOLERANCE = Decimal("0.0000002")  # 5 decimals of a minute, then 7 decimals of a degree


class Clock:
    """Simulated time that moves only when the test says so."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def track() -> Track:
    return Track.along(example_route(Fleet.generate(20, 1)), START, speed_mps=10.0)


@contextmanager
def receiver(
    tmp_path: Path,
    clock: Clock,
    *,
    garbage_rate: float = 0.0,
    outages: Sequence[tuple[datetime, datetime]] = (),
) -> Iterator[GpsServer]:
    server = GpsServer(
        track(),
        clock=clock,
        link=tmp_path / "ttyACM0",
        period_s=0.02,
        garbage_rate=garbage_rate,
        outages=outages,
        seed=5,
    )
    with server:
        yield server


def fix_time(gps: GpsReader) -> datetime | None:
    location = gps.location()
    return location.fix_at if location else None


def reader(server: GpsServer, stale_after_s: float = 5.0) -> GpsReader:
    return GpsReader(server.url, stale_after_s=stale_after_s, backoff=FAST, read_slice_s=0.05)


def assert_at(reader: GpsReader, clock: Clock) -> None:
    """The reader's fix is where the van is at the simulated instant."""
    location = reader.location()
    assert location is not None
    lat, lon, _, _ = track().position(clock())
    assert abs(location.lat - Decimal(repr(lat))) <= TOLERANCE
    assert abs(location.lon - Decimal(repr(lon))) <= TOLERANCE
    assert location.fix_at == clock() and location.source == "gps"


def test_the_reader_follows_the_van(tmp_path: Path) -> None:
    clock = Clock(START + timedelta(seconds=3))
    with receiver(tmp_path, clock) as server, reader(server) as gps:
        wait_until(lambda: gps.location() is not None, "a first fix")
        assert_at(gps, clock)
        clock.advance(20)
        wait_until(lambda: fix_time(gps) == clock(), "the next fix")
        assert_at(gps, clock)
        status = gps.status()
        assert status.state == "fix" and status.connected and status.satellites == 9
        assert status.bad_checksums == status.unreadable == status.discarded_bytes == 0
        assert status.reconnects == 0 and status.last_error is None


def test_garbage_is_counted_and_the_fixes_go_on(tmp_path: Path) -> None:
    clock = Clock(START)
    with receiver(tmp_path, clock, garbage_rate=0.5) as server, reader(server) as gps:
        wait_until(lambda: set(server.faults) == set(FAULTS), "every kind of garbage")
        before = gps.status().bad_checksums
        server.inject(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\r\n")
        wait_until(lambda: gps.status().bad_checksums > before, "the injected checksum error")
        clock.advance(5)
        wait_until(lambda: fix_time(gps) == clock(), "a fix after garbage")
        assert_at(gps, clock)
        status = gps.status()
        assert status.discarded_bytes > 0 and status.connected


def test_an_outage_reports_no_fix_then_the_fix_returns(tmp_path: Path) -> None:
    clock = Clock(START)
    outage = (START + timedelta(seconds=10), START + timedelta(seconds=20))
    with receiver(tmp_path, clock, outages=[outage]) as server, reader(server) as gps:
        wait_until(lambda: gps.location() is not None, "a fix")
        clock.advance(12)
        wait_until(lambda: gps.location() is None, "the receiver saying it lost the fix")
        assert gps.status().state == "no fix" and gps.status().no_fix > 0
        clock.advance(10)
        wait_until(lambda: gps.location() is not None, "the fix after the outage")
        assert_at(gps, clock)


def test_a_receiver_pulled_out_and_plugged_in_again(tmp_path: Path) -> None:
    clock = Clock(START)
    with receiver(tmp_path, clock) as server, reader(server, stale_after_s=0.3) as gps:
        wait_until(lambda: gps.location() is not None, "a fix")
        server.unplug()
        wait_until(lambda: not gps.status().connected, "the reader noticing")
        status = gps.status()
        assert status.last_error is not None and str(server.link) in status.last_error
        wait_until(lambda: gps.location() is None, "the last fix going stale")
        assert gps.status().state == "no device"
        clock.advance(30)
        server.replug()
        wait_until(lambda: fix_time(gps) == clock(), "a fix after replug")
        assert_at(gps, clock)
        assert gps.status().reconnects == 1


def test_a_receiver_plugged_in_after_the_start(tmp_path: Path) -> None:
    clock = Clock(START)
    server = GpsServer(track(), clock=clock, link=tmp_path / "ttyACM0", period_s=0.02)
    with GpsReader(server.url, backoff=FAST) as gps:
        wait_until(lambda: gps.status().last_error is not None, "a failed open")
        assert gps.status().state == "no device"
        with server:
            wait_until(lambda: gps.location() is not None, "a fix once it is there")
            assert gps.status().reconnects == 1


def test_stop_returns_promptly_while_the_device_is_away(tmp_path: Path) -> None:
    gps = GpsReader(
        str(tmp_path / "absent"), backoff=Backoff(initial_s=30.0, factor=1.0, maximum_s=30.0)
    ).start()
    wait_until(lambda: gps.status().last_error is not None, "a failed open")
    gps.stop(timeout_s=5.0)
    assert not gps.running
