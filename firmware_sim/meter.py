"""One simulated metering point: the device's identity, its keys and radio habits, and the
register it shows at any instant.

Nothing here runs in time: a meter's index is a pure function of the instant, exact to the
litre, from its consumption profile (firmware_sim.consumption). A replacement puts another
device in the same place from an instant on, with a new serial and an index near zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from math import floor
from typing import Any
from zoneinfo import ZoneInfo

from decoders.manufacturer import encode_id, encode_manufacturer, medium_name
from decoders.telegram import Address
from firmware_sim.consumption import ConsumptionProfile, Event, litres_to_m3, seconds

LOCAL_ZONE = ZoneInfo("Europe/Riga")  # month ends follow the legal local time (DESIGN.md §2)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a meter says it is: the long TPL header's ID, M-field, version and device type."""

    manufacturer: str
    id: str
    version: int
    device_type: int

    def __post_init__(self) -> None:
        encode_manufacturer(self.manufacturer)
        encode_id(self.id)
        if not (0 <= self.version <= 0xFF and 0 <= self.device_type <= 0xFF):
            raise ValueError("version and device type are single bytes")

    @property
    def m_raw(self) -> int:
        return encode_manufacturer(self.manufacturer)

    @property
    def meter_id(self) -> str:
        return f"{self.manufacturer}-{self.id}"

    @property
    def address(self) -> Address:
        return Address(self.manufacturer, self.id, self.version, self.device_type, self.m_raw)

    @property
    def secondary(self) -> bytes:
        """The 8 bytes a select frame compares: ID, M-field, version, medium (§8.4)."""
        return (
            encode_id(self.id)
            + self.m_raw.to_bytes(2, "little")
            + bytes((self.version, self.device_type))
        )

    def describe(self) -> dict[str, Any]:
        """Who the device is, as JSON-ready values."""
        return {
            "meter_id": self.meter_id,
            "manufacturer": self.manufacturer,
            "id": self.id,
            "version": self.version,
            "device_type": self.device_type,
            "medium": medium_name(self.device_type),
        }

    @property
    def secondary_text(self) -> str:
        """As M-Bus tools print it: ID, M-field, version, medium in hex (16 digits)."""
        return f"{self.id.upper()}{self.m_raw:04X}{self.version:02X}{self.device_type:02X}"


@dataclass(frozen=True, slots=True)
class Replacement:
    """From `at` on, another device (new serial, index from `start_index`) sits in this place."""

    at: datetime
    identity: Identity
    start_index: Decimal
    key: bytes | None
    access_no: int = 0


@dataclass(frozen=True, slots=True)
class Meter:
    """One metering point: its device (and the one replacing it), keys, radio habits, water."""

    identity: Identity
    epoch: datetime  # the instant `start_index` was read
    start_index: Decimal  # m3, whole litres
    key: bytes | None = None
    security_mode: int = 0  # 0, 5 or 7 (EN 13757-7); the wireless simulators use it
    interval_s: int = 120  # wireless transmission interval
    phase_s: int = 0  # first transmission after the epoch
    access_no: int = 0  # access number of the last transmission before the epoch
    clock_offset_s: int = 0  # the meter's clock runs this far ahead of UTC
    primary_address: int = 0  # wired M-Bus; 0 is "not configured"
    pattern: str = "household"
    daily_litres: int = 300
    noise_seed: int = 0
    events: tuple[Event, ...] = ()
    replacement: Replacement | None = None

    def __post_init__(self) -> None:
        self.profile  # noqa: B018 - checks the pattern and the events
        if self.start_index != self.start_index.quantize(Decimal("0.001")):
            raise ValueError("indexes are whole litres")
        if not 0 <= self.primary_address <= 250:
            raise ValueError("primary addresses are 0-250")
        if self.interval_s <= 0:
            raise ValueError("the transmission interval must be positive")
        seconds(self.epoch)  # timezone-aware

    # --- water -----------------------------------------------------------------------------

    @property
    def profile(self) -> ConsumptionProfile:
        return ConsumptionProfile(self.pattern, self.daily_litres, self.noise_seed, self.events)

    def _device_start(self, t: datetime) -> tuple[datetime, Decimal]:
        rep = self.replacement
        if rep is not None and t >= rep.at:
            return rep.at, rep.start_index
        return self.epoch, self.start_index

    def index_at(self, t: datetime) -> Decimal:
        """The register (m3, whole litres) of the device installed at `t`."""
        since, start = self._device_start(t)
        profile = self.profile
        return start + litres_to_m3(floor(profile.litres(t) - profile.litres(since)))

    def backward_at(self, t: datetime) -> Decimal:
        """Reverse-flow volume (m3) the installed device has counted since it was read at the
        epoch or installed; index_at already has it subtracted."""
        since, _ = self._device_start(t)
        profile = self.profile
        litres = profile.litres(t, backward_only=True) - profile.litres(since, backward_only=True)
        return litres_to_m3(floor(-litres))

    def flow_at(self, t: datetime) -> Decimal:
        """Volume flow at `t` in m3/h, to the litre per hour."""
        return self.profile.flow_at(t)

    def flags_at(self, t: datetime) -> frozenset[str]:
        """The events going on at `t`: the truth a meter's alarms approximate."""
        return self.profile.flags_at(t)

    def month_end_indexes(self, t: datetime, months: int) -> list[tuple[date, Decimal]]:
        """The register at the last `months` month ends before `t`, newest first, as the meter
        stores them: at midnight local time by its own clock, with the date of the last day."""
        local = (t + timedelta(seconds=self.clock_offset_s)).astimezone(LOCAL_ZONE)
        year, month = local.year, local.month
        out: list[tuple[date, Decimal]] = []
        for _ in range(months):
            boundary = datetime(year, month, 1, tzinfo=LOCAL_ZONE)
            instant = boundary.astimezone(UTC) - timedelta(seconds=self.clock_offset_s)
            out.append((boundary.date() - timedelta(days=1), self.index_at(instant)))
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        return out

    # --- the device ------------------------------------------------------------------------

    def identity_at(self, t: datetime) -> Identity:
        rep = self.replacement
        return rep.identity if rep is not None and t >= rep.at else self.identity

    def key_at(self, t: datetime) -> bytes | None:
        rep = self.replacement
        return rep.key if rep is not None and t >= rep.at else self.key

    def clock_at(self, t: datetime) -> datetime:
        """What the meter's own clock says at the true instant `t`."""
        return t + timedelta(seconds=self.clock_offset_s)

    def transmissions(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """The instants in [start, end) at which the meter transmits (every interval_s)."""
        first = self.epoch + timedelta(seconds=self.phase_s)
        step = timedelta(seconds=self.interval_s)
        k = max(0, -(-(start - first) // step))
        t = first + k * step
        while t < end:
            yield t
            t += step

    def access_no_at(self, t: datetime) -> int:
        """Access number of the last transmission at or before `t` (EN 13757-4: +1 each)."""
        rep = self.replacement
        if rep is not None and t >= rep.at:
            start, base = rep.at, rep.access_no
        else:
            start, base = self.epoch, self.access_no
        first = self.epoch + timedelta(seconds=self.phase_s)
        step = timedelta(seconds=self.interval_s)

        def sent_by(u: datetime) -> int:
            return 0 if u < first else (u - first) // step + 1

        return (base + sent_by(t) - sent_by(start)) % 256

    def describe(self) -> dict[str, Any]:
        """The facts a test or an operator needs, as JSON-ready values (keys in hex)."""
        out = _identity_json(self.identity, self.key)
        out |= {
            "primary_address": self.primary_address,
            "security_mode": self.security_mode,
            "interval_s": self.interval_s,
            "events": [
                {
                    "kind": e.kind,
                    "start": e.start.isoformat(),
                    "end": e.end.isoformat() if e.end else None,
                    "rate_lph": e.rate_lph,
                }
                for e in self.events
            ],
        }
        if self.replacement is not None:
            rep = self.replacement
            out["replacement"] = _identity_json(rep.identity, rep.key) | {
                "at": rep.at.isoformat(),
                "start_index": str(rep.start_index),
            }
        return out


def _identity_json(identity: Identity, key: bytes | None) -> dict[str, Any]:
    return identity.describe() | {
        "secondary_address": identity.secondary_text,
        "key": key.hex().upper() if key else None,
    }
