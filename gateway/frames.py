"""What a driver hands the gateway: one frame as received, with where and when (DESIGN.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

PROTOCOLS = frozenset({"wmbus", "mbus", "modbus"})


def _aware_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, not naive {value.isoformat()}")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Location:
    """A WGS 84 position in decimal degrees, exact as the GPS receiver or the config gave it.

    `fix_at` is when a GPS fix was taken (None for a configured, fixed position); `source` says
    where the position came from ("gps" or "config").
    """

    lat: Decimal
    lon: Decimal
    fix_at: datetime | None = None
    source: str = "gps"

    def __post_init__(self) -> None:
        if not (self.lat.is_finite() and -90 <= self.lat <= 90):
            raise ValueError(f"latitude {self.lat} is not within -90..90 degrees")
        if not (self.lon.is_finite() and -180 <= self.lon <= 180):
            raise ValueError(f"longitude {self.lon} is not within -180..180 degrees")
        if self.fix_at is not None:
            object.__setattr__(self, "fix_at", _aware_utc(self.fix_at, "fix_at"))


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One frame as a driver received it.

    `data` is what the decoder takes: a CRC-stripped wM-Bus frame from the L-field (as the USB
    receivers deliver it), a wired M-Bus long frame, or the registers a Modbus poll read.
    `received_at` is normalised to UTC; `source` names the receiver, bus or unit it came from.
    """

    data: bytes
    received_at: datetime
    source: str
    protocol: str
    rssi_dbm: Decimal | None = None
    location: Location | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol is one of {sorted(PROTOCOLS)}, not {self.protocol!r}")
        object.__setattr__(self, "received_at", _aware_utc(self.received_at, "received_at"))
