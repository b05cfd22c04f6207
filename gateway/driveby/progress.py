"""Where a drive-by stands: which meters of the route were collected, which are still missing,
which failed to decode, and which meters were heard that are not on the route.

The pipeline hands one DrivebyEvent per frame it received (after the duplicate filter), built
from the reading/1 or raw/1 message it publishes (event_from_message), so what the engineer
sees is what went to the spool. DrivebyProgress keeps the state; snapshot() gives a frozen
DrivebySnapshot for the view and the report, so the pipeline's thread and the screen's never
share anything mutable. No I/O here; the clock is injected.

A route meter counts as collected once a frame gave its volume (the index a billing system
takes). One heard only as frames that did not decode (no key, a wrong key) is not collected: a
walk-by would hear the same; the key must come from the office, and the view says so.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from gateway.driveby.route import Route, RouteEntry
from gateway.frames import Location
from metergate.keys import canonical_meter_id

READING_SCHEMA = "reading/1"
RAW_SCHEMA = "raw/1"


def _aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")


@dataclass(frozen=True, slots=True)
class DrivebyEvent:
    """One frame as the drive-by counts it.

    `decoded` frames carry the meter's volume when the telegram had one (`volume`, `unit`,
    `measured_at`); the others name the DecodeError subclass that stopped them (`error`, e.g.
    "MissingKeyError"). `meter_id` is None when nothing in the frame names its meter.
    """

    meter_id: str | None
    received_at: datetime
    decoded: bool
    error: str | None = None
    volume: Decimal | None = None
    unit: str | None = None
    measured_at: datetime | None = None
    rssi_dbm: Decimal | None = None
    location: Location | None = None

    def __post_init__(self) -> None:
        _aware(self.received_at, "received_at")
        if self.measured_at is not None:
            _aware(self.measured_at, "measured_at")
        if self.decoded == (self.error is not None):
            raise ValueError("a frame is either decoded or has an error")
        if (self.volume is None) != (self.unit is None) or (
            self.volume is not None and not self.decoded
        ):
            raise ValueError("a volume comes with its unit, from a decoded frame")


def _volume(readings: object) -> dict[str, Any] | None:
    """The meter's present index: storage 0, tariff 0, subunit 0, instantaneous volume."""
    if not isinstance(readings, list):
        return None
    for reading in readings:
        if isinstance(reading, dict) and (
            reading.get("quantity") == "volume"
            and reading.get("storage") == 0
            and reading.get("tariff") == 0
            and reading.get("subunit") == 0
            and reading.get("function") == "instantaneous"
        ):
            return reading
    return None


def event_from_message(message: Mapping[str, Any]) -> DrivebyEvent:
    """The event of a reading/1 or raw/1 payload (gateway.messages); ValueError for others."""
    schema = message.get("schema")
    try:
        received_at = datetime.fromisoformat(str(message["received_at"]))
        rssi = message.get("rssi_dbm")
        place = message.get("location")
        location = (
            Location(Decimal(str(place["lat"])), Decimal(str(place["lon"])))
            if isinstance(place, Mapping)
            else None
        )
        common: dict[str, Any] = {
            "meter_id": message.get("meter_id"),
            "received_at": received_at,
            "rssi_dbm": Decimal(str(rssi)) if rssi is not None else None,
            "location": location,
        }
        if schema == RAW_SCHEMA:
            return DrivebyEvent(decoded=False, error=str(message["error"]["type"]), **common)
        if schema != READING_SCHEMA:
            raise ValueError(f"not a reading/1 or raw/1 message: schema {schema!r}")
        volume = _volume(message.get("readings"))
        if volume is None:
            return DrivebyEvent(decoded=True, **common)
        return DrivebyEvent(
            decoded=True,
            volume=Decimal(str(volume["value"])),
            unit=str(volume["unit"]),
            measured_at=datetime.fromisoformat(str(volume["measured_at"])),
            **common,
        )
    except (KeyError, TypeError, InvalidOperation) as error:
        raise ValueError(f"a malformed {schema} message: {error!r}") from None


@dataclass(frozen=True, slots=True)
class MeterProgress:
    """A meter heard during the drive. `errors` counts frames that failed, by error type."""

    meter_id: str
    entry: RouteEntry | None  # None: not on the route
    first_heard: datetime
    last_heard: datetime
    frames: int = 0
    values: int = 0  # frames that gave a volume
    volume: Decimal | None = None
    unit: str | None = None
    measured_at: datetime | None = None
    value_received_at: datetime | None = None
    value_location: Location | None = None  # where the van was when the value came
    rssi_dbm: Decimal | None = None  # of the last frame
    best_rssi_dbm: Decimal | None = None
    errors: tuple[tuple[str, int], ...] = ()

    @property
    def collected(self) -> bool:
        return self.volume is not None

    @property
    def status(self) -> str:
        """`collected`, `no volume` (decoded, none in it yet), or the errors that stopped it."""
        if self.collected:
            return "collected"
        if not self.errors:
            return "no volume"
        return ", ".join(f"{kind} x{count}" for kind, count in self.errors)

    def heard(self, event: DrivebyEvent) -> MeterProgress:
        """This meter after one more frame."""
        rssi = event.rssi_dbm
        best = self.best_rssi_dbm
        if rssi is not None and (best is None or rssi > best):
            best = rssi
        changes: dict[str, Any] = {
            "first_heard": min(self.first_heard, event.received_at),
            "last_heard": max(self.last_heard, event.received_at),
            "frames": self.frames + 1,
            "rssi_dbm": rssi if event.received_at >= self.last_heard else self.rssi_dbm,
            "best_rssi_dbm": best,
        }
        if event.error is not None:
            errors = Counter(dict(self.errors))
            errors[event.error] += 1
            changes["errors"] = tuple(sorted(errors.items()))
        if event.volume is not None:
            changes["values"] = self.values + 1
            # Frames of several receivers may arrive out of order: the newest value stays.
            if self.value_received_at is None or event.received_at >= self.value_received_at:
                changes |= {
                    "volume": event.volume,
                    "unit": event.unit,
                    "measured_at": event.measured_at or event.received_at,
                    "value_received_at": event.received_at,
                    "value_location": event.location,
                }
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class StreetProgress:
    street: str
    expected: int
    collected: int
    failed: int  # heard, but only as frames that did not decode

    @property
    def missing(self) -> int:
        return self.expected - self.collected


@dataclass(frozen=True, slots=True)
class DrivebySnapshot:
    """The drive-by at `taken_at`. `meters` holds every meter heard, on the route or not;
    `recent` the last frames, newest first."""

    route: Route
    started_at: datetime
    taken_at: datetime
    meters: Mapping[str, MeterProgress]
    recent: tuple[DrivebyEvent, ...]
    frames: int
    decoded: int
    unidentified: int  # frames that named no meter

    @property
    def expected(self) -> int:
        return len(self.route)

    @property
    def collected(self) -> int:
        return sum(1 for entry in self.route if self.is_collected(entry.meter_id))

    @property
    def percent(self) -> int:
        """Whole percent collected, rounded down: 100 only when every meter is in."""
        return self.collected * 100 // self.expected if self.expected else 100

    def is_collected(self, meter_id: str) -> bool:
        progress = self.meters.get(meter_id)
        return progress is not None and progress.collected

    def on_route(self) -> tuple[MeterProgress, ...]:
        """The route meters heard, in route order."""
        return tuple(self.meters[e.meter_id] for e in self.route if e.meter_id in self.meters)

    def missing(self) -> tuple[RouteEntry, ...]:
        """Route meters not collected (not heard, or heard without a value), route order."""
        return tuple(entry for entry in self.route if not self.is_collected(entry.meter_id))

    def missing_by_street(self) -> dict[str, tuple[RouteEntry, ...]]:
        out: dict[str, list[RouteEntry]] = {}
        for entry in self.missing():
            out.setdefault(entry.street, []).append(entry)
        return {street: tuple(entries) for street, entries in out.items()}

    def failed(self) -> tuple[MeterProgress, ...]:
        """Route meters heard only as frames that failed: a key is missing or wrong."""
        return tuple(m for m in self.on_route() if not m.collected and m.errors)

    def unknown(self) -> tuple[MeterProgress, ...]:
        """Meters heard that are not on the route, strongest signal first."""
        heard = [m for m in self.meters.values() if m.entry is None]
        return tuple(sorted(heard, key=lambda m: (-(m.best_rssi_dbm or -999), m.meter_id)))

    def streets(self) -> tuple[StreetProgress, ...]:
        counts: dict[str, list[int]] = {street: [0, 0, 0] for street in self.route.streets()}
        for entry in self.route:
            tally = counts[entry.street]
            tally[0] += 1
            progress = self.meters.get(entry.meter_id)
            if progress is not None and progress.collected:
                tally[1] += 1
            elif progress is not None and progress.errors:
                tally[2] += 1
        return tuple(StreetProgress(street, *tally) for street, tally in counts.items())

    def status(self, entry: RouteEntry) -> str:
        """`collected`, `not heard`, `no volume`, or the errors of a route meter."""
        progress = self.meters.get(entry.meter_id)
        return "not heard" if progress is None else progress.status


class DrivebyProgress:
    """The live state of one drive-by; record() from the pipeline, snapshot() from anywhere."""

    def __init__(self, route: Route, *, clock: Callable[[], datetime], recent: int = 20) -> None:
        self.route = route
        self.clock = clock
        self.started_at = clock()
        _aware(self.started_at, "the clock's time")
        self._meters: dict[str, MeterProgress] = {}
        self._recent: deque[DrivebyEvent] = deque(maxlen=recent)
        self._frames = self._decoded = self._unidentified = 0
        self._lock = threading.Lock()

    def record(self, event: DrivebyEvent) -> None:
        with self._lock:
            self._frames += 1
            self._decoded += event.decoded
            self._recent.appendleft(event)
            named = event.meter_id
            meter_id = (canonical_meter_id(named) or named) if named else None
            if meter_id is None:
                self._unidentified += 1
                return
            progress = self._meters.get(meter_id)
            if progress is None:
                progress = MeterProgress(
                    meter_id, self.route.get(meter_id), event.received_at, event.received_at
                )
            self._meters[meter_id] = progress.heard(event)

    def snapshot(self) -> DrivebySnapshot:
        with self._lock:
            return DrivebySnapshot(
                route=self.route,
                started_at=self.started_at,
                taken_at=self.clock(),
                meters=MappingProxyType(dict(self._meters)),
                recent=tuple(self._recent),
                frames=self._frames,
                decoded=self._decoded,
                unidentified=self._unidentified,
            )
