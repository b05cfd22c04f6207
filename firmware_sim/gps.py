"""A simulated drive-by: the fleet's meters placed on streets, the route list an office would
hand out for them, and an NMEA 0183 GPS receiver on a pty reporting a van driving past.

The streets carry real Riga names on a made-up layout: straight lines from a start point,
houses every HOUSE_SPACING_M metres, households in apartments of up to six, a building's or an
office's meter in a house of its own. Every tenth meter of the fleet is left off the route, so a
drive past hears meters it was not sent for, as a van does.

GpsServer emits a GGA, an RMC and a VTG sentence per epoch (1 Hz on a real receiver; tests run
faster) for the van's position at the injected clock's time, with checksums (NMEA 0183 §6.1.7:
XOR of the characters between `$` and `*`). At a seeded rate it sends garbage instead: a wrong
checksum, line noise, a sentence cut short, binary (u-blox UBX) bytes. During an outage it
reports no fix, as a receiver does under a bridge. unplug() and replug() take the device away
and bring it back on a new pty behind the same symlink.

`python -m firmware_sim.gps route --meters 50 --seed 1` prints examples/route.csv;
`python -m firmware_sim.gps serve ...` serves a receiver and prints its port as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import tty
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType

from firmware_sim.fleet import Fleet, SimClock
from gateway.driveby.route import Route, RouteEntry, format_route

# name, start latitude, start longitude, bearing in degrees from north
STREETS = (
    ("Brīvības iela", 56.95850, 24.12150, 52.0),
    ("Tērbatas iela", 56.95620, 24.12680, 55.0),
    ("Lāčplēša iela", 56.96000, 24.13800, 150.0),
    ("Ģertrūdes iela", 56.95450, 24.13300, 55.0),
)
HOUSE_SPACING_M = 25.0
APARTMENTS = 6
NOTES = ("meter in the basement", "key at the neighbour", "dog in the yard", "call before")
_METRES_PER_DEGREE = 111_320.0
_KNOTS_PER_MPS = 3600 / 1852
FAULTS = ("checksum", "noise", "cut", "binary")
_PREMISES = {"building": "", "office": "office"}  # a building's meter has the house to itself


def _offset(lat: float, lon: float, bearing: float, metres: float) -> tuple[float, float]:
    north = metres * math.cos(math.radians(bearing)) / _METRES_PER_DEGREE
    east = metres * math.sin(math.radians(bearing))
    return lat + north, lon + east / (_METRES_PER_DEGREE * math.cos(math.radians(lat)))


def _note(meter_id: str) -> str:
    pick = hashlib.blake2b(meter_id.encode(), digest_size=1).digest()[0] % (len(NOTES) * 3)
    return NOTES[pick] if pick < len(NOTES) else ""


def example_route(fleet: Fleet, *, off_route_every: int = 10) -> Route:
    """The route list for `fleet`: every meter but each `off_route_every`-th, on STREETS."""
    on_route = [m for i, m in enumerate(fleet) if (i + 1) % off_route_every]
    per_street = -(-len(on_route) // len(STREETS))
    entries: list[RouteEntry] = []
    for number, (street, lat0, lon0, bearing) in enumerate(STREETS):
        house, apartment = 0, APARTMENTS
        for meter in on_route[number * per_street : (number + 1) * per_street]:
            shared = meter.pattern == "household"
            if not shared or apartment >= APARTMENTS:
                house, apartment = house + 1, 0
            lat, lon = _offset(lat0, lon0, bearing, house * HOUSE_SPACING_M)
            apartment += 1
            if not shared:
                apartment = APARTMENTS  # the next household needs a house of its own
            entries.append(
                RouteEntry(
                    meter_id=meter.identity.meter_id,
                    street=street,
                    house=str(2 * house - 1),
                    premise=f"dz. {apartment}" if shared else _PREMISES[meter.pattern],
                    note=_note(meter.identity.meter_id),
                    lat=Decimal(f"{lat:.6f}"),
                    lon=Decimal(f"{lon:.6f}"),
                )
            )
    return Route(tuple(entries), "<example>")


@dataclass(frozen=True, slots=True)
class Track:
    """A van driving through `waypoints` (lat, lon) at `speed_mps` from `start`, then parked."""

    waypoints: tuple[tuple[float, float], ...]
    start: datetime
    speed_mps: float = 8.0

    def __post_init__(self) -> None:
        if not self.waypoints or self.speed_mps <= 0:
            raise ValueError("a track has waypoints and a positive speed")

    @classmethod
    def along(cls, route: Route, start: datetime, speed_mps: float = 8.0) -> Track:
        points = [
            (float(e.lat), float(e.lon)) for e in route if e.lat is not None and e.lon is not None
        ]
        return cls(tuple(dict.fromkeys(points)), start, speed_mps)

    def position(self, t: datetime) -> tuple[float, float, float, float]:
        """lat, lon, course (degrees true) and speed (m/s) at `t`."""
        travelled = max(0.0, (t - self.start).total_seconds()) * self.speed_mps
        for (lat1, lon1), (lat2, lon2) in zip(self.waypoints, self.waypoints[1:], strict=False):
            north = (lat2 - lat1) * _METRES_PER_DEGREE
            east = (lon2 - lon1) * _METRES_PER_DEGREE * math.cos(math.radians(lat1))
            length = math.hypot(north, east)
            if travelled < length:
                share = travelled / length
                course = math.degrees(math.atan2(east, north)) % 360
                return (
                    lat1 + share * (lat2 - lat1),
                    lon1 + share * (lon2 - lon1),
                    course,
                    self.speed_mps,
                )
            travelled -= length
        lat, lon = self.waypoints[-1]
        return lat, lon, 0.0, 0.0


def sentence(body: str) -> bytes:
    """`$body*hh<CR><LF>` with the XOR checksum of the body (NMEA 0183 §6.1.7)."""
    checksum = 0
    for char in body.encode("ascii"):
        checksum ^= char
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def _angle(value: float, degree_digits: int, hemispheres: str) -> tuple[str, str]:
    minutes = round(abs(value) * 60, 5)
    degrees, minutes = divmod(minutes, 60)
    text = f"{int(degrees):0{degree_digits}d}{minutes:08.5f}"
    return text, hemispheres[0] if value >= 0 else hemispheres[1]


def epoch_sentences(
    t: datetime, track: Track, *, fix: bool = True, satellites: int = 9, talker: str = "GP"
) -> bytes:
    """GGA, RMC and VTG for the instant `t` (rounded to 10 ms, as the time field shows it)."""
    t = t.astimezone(UTC)
    t = t.replace(microsecond=t.microsecond // 10_000 * 10_000)
    clock = f"{t:%H%M%S}.{t.microsecond // 10_000:02d}"
    day = f"{t:%d%m%y}"
    if not fix:
        return (
            sentence(f"{talker}GGA,{clock},,,,,0,00,99.99,,,,,,")
            + sentence(f"{talker}RMC,{clock},V,,,,,,,{day},,,N")
            + sentence(f"{talker}VTG,,T,,M,,N,,K,N")
        )
    lat, lon, course, speed = track.position(t)
    lat_text, ns = _angle(lat, 2, "NS")
    lon_text, ew = _angle(lon, 3, "EW")
    knots = speed * _KNOTS_PER_MPS
    return (
        sentence(
            f"{talker}GGA,{clock},{lat_text},{ns},{lon_text},{ew},1,{satellites:02d},0.9,"
            "11.2,M,22.5,M,,"
        )
        + sentence(
            f"{talker}RMC,{clock},A,{lat_text},{ns},{lon_text},{ew},{knots:.2f},{course:.1f},"
            f"{day},,,A"
        )
        + sentence(f"{talker}VTG,{course:.1f},T,,M,{knots:.2f},N,{speed * 3.6:.2f},K,A")
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


class GpsServer:
    """A GPS receiver on a pty behind a symlink, as udev names one (/dev/ttyACM0)."""

    def __init__(
        self,
        track: Track,
        *,
        clock: Callable[[], datetime] = utc_now,
        link: str | Path | None = None,
        period_s: float = 1.0,
        garbage_rate: float = 0.0,
        outages: Sequence[tuple[datetime, datetime]] = (),
        seed: int = 0,
        talker: str = "GP",
    ) -> None:
        if not 0.0 <= garbage_rate <= 1.0:
            raise ValueError("the garbage rate is a probability")
        self.track = track
        self.clock = clock
        self.period_s = period_s
        self.garbage_rate = garbage_rate
        self.outages = tuple(outages)
        self.talker = talker
        self._rng = random.Random(f"metergate-gps:{seed}")
        self._own_dir = None if link else tempfile.mkdtemp(prefix="metergate-gps-")
        self.link = Path(link) if link else Path(self._own_dir or ".") / "ttyGPS0"
        self.tty = ""
        self.epochs = self.unplugged_for = self.dropped = 0
        self.faults: Counter[str] = Counter()
        self._fds: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="GpsServer", daemon=True)

    @property
    def url(self) -> str:
        return str(self.link)

    def start(self) -> GpsServer:
        self.replug()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.unplug()
        if self._own_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self._own_dir)

    def __enter__(self) -> GpsServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def replug(self) -> None:
        with self._lock:
            if self._fds is not None:
                return
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no CR/LF translation
            os.set_blocking(master, False)
            self._fds = master, slave
            self.tty = os.ttyname(slave)
            temporary = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(self.tty)
            temporary.replace(self.link)

    def unplug(self) -> None:
        with self._lock:
            if self._fds is None:
                return
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def inject(self, data: bytes) -> None:
        """Send `data` to the host as they are."""
        with self._lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._fds is None:
            self.unplugged_for += 1
            return
        try:
            os.write(self._fds[0], data)
        except (BlockingIOError, OSError):  # nobody reads: a receiver has no flow control
            self.dropped += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            t = self.clock()
            fix = not any(start <= t < end for start, end in self.outages)
            data = epoch_sentences(t, self.track, fix=fix, talker=self.talker)
            if self._rng.random() < self.garbage_rate:
                data = self._garbage(data)
            with self._lock:
                self._write(data)
                self.epochs += 1

    def _garbage(self, data: bytes) -> bytes:
        rng = self._rng
        kind = rng.choice(FAULTS)
        self.faults[kind] += 1
        first, rest = data.split(b"\n", 1)
        first = first.rstrip(b"\r")
        if kind == "checksum":
            wrong = b"0" if first[-1:] != b"0" else b"1"
            return first[:-1] + wrong + b"\r\n" + rest
        if kind == "noise":
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) + b"\r\n" + data
        if kind == "cut":
            return first[: rng.randrange(1, len(first))] + b"\r\n" + rest
        return b"\xb5\x62\x01\x07" + rng.randbytes(rng.randrange(8, 92)) + data


def _serve(args: argparse.Namespace) -> int:
    clock = SimClock(args.start, args.speed)
    route = example_route(Fleet.generate(args.meters, args.seed))
    track = Track.along(route, clock.start, args.van_speed)
    server = GpsServer(
        track, clock=clock.now, link=args.link, period_s=args.period, garbage_rate=args.garbage
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        print(json.dumps({"port": server.url, "tty": server.tty}), flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim.gps", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("route", "serve"):
        command = commands.add_parser(name)
        command.add_argument("--meters", type=int, default=50)
        command.add_argument("--seed", type=int, default=1)
    serve = commands.choices["serve"]
    serve.add_argument("--link", help="the symlink to create (default: a temporary one)")
    serve.add_argument("--period", type=float, default=1.0, help="s between epochs")
    serve.add_argument("--speed", type=float, default=1.0, help="simulated s per real s")
    serve.add_argument("--van-speed", type=float, default=8.0, help="m/s")
    serve.add_argument("--start", help="simulated start time, ISO 8601 with zone")
    serve.add_argument("--garbage", type=float, default=0.0, help="share of spoilt epochs")
    args = parser.parse_args(argv)
    if args.meters < 1:
        parser.error("--meters: at least one meter")
    if args.command == "serve":
        try:
            args.start = datetime.fromisoformat(args.start) if args.start else None
        except ValueError:
            parser.error("--start: not an ISO 8601 time")
        if args.start is not None and args.start.tzinfo is None:
            parser.error("--start: give the time zone (e.g. 2026-02-01T06:00Z)")
        if args.period <= 0 or args.speed <= 0 or args.van_speed <= 0:
            parser.error("--period, --speed and --van-speed are positive")
    if args.command == "route":
        sys.stdout.write(format_route(example_route(Fleet.generate(args.meters, args.seed))))
        return 0
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
