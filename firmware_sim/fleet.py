"""The simulated fleet: who the meters are, generated from a seed.

Every simulator (wired M-Bus, wireless M-Bus, Modbus) takes its meters from here, so one seed
gives the same meters, keys and readings everywhere. A meter's index is a pure function of the
instant (firmware_sim.meter), so a simulator can serve "now" or replay months of history faster
than real time (SimClock).
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from firmware_sim.consumption import (
    DAILY_LITRES,
    LOCAL_STANDARD_TIME,
    PATTERNS,
    Event,
    litres_to_m3,
)
from firmware_sim.meter import Identity, Meter, Replacement

DEFAULT_EPOCH = datetime(2026, 1, 5, tzinfo=UTC)

# Water meter makers whose M-field has no F nibble: F is the wildcard digit of a secondary
# select (PROTOCOL_NOTES §8.4), so such a meter cannot be told apart on that digit.
MANUFACTURERS = (
    *("KAM", "DME", "ZRI", "SEN", "ELS", "ITW", "APA", "BMT", "GWF", "HYD", "LUG"),
    *("SON", "EFE", "MAD", "QDS", "AMT", "WEH", "ACW", "TCH", "ENC", "INV", "ARF"),
)
# EN 13757-3 device types (PROTOCOL_NOTES §7.11) with their share of a utility's fleet.
WATER_MEDIA = {0x07: 40, 0x16: 30, 0x06: 15, 0x15: 10, 0x28: 5}
# A building's wired bus also carries heat and cooling meters (they count volume too).
BUILDING_MEDIA = WATER_MEDIA | {0x0C: 6, 0x0D: 6, 0x0A: 4, 0x0B: 4}
_VERSIONS = tuple(v for v in range(0xF0) if v & 0x0F != 0x0F)


@dataclass(frozen=True, slots=True)
class Fleet:
    seed: int
    meters: tuple[Meter, ...]

    def __len__(self) -> int:
        return len(self.meters)

    def __iter__(self) -> Iterator[Meter]:
        return iter(self.meters)

    def by_meter_id(self, meter_id: str) -> Meter:
        for meter in self.meters:
            ids = {meter.identity.meter_id}
            if meter.replacement is not None:
                ids.add(meter.replacement.identity.meter_id)
            if meter_id in ids:
                return meter
        raise KeyError(meter_id)

    @classmethod
    def generate(
        cls,
        count: int,
        seed: int = 0,
        *,
        epoch: datetime = DEFAULT_EPOCH,
        horizon_days: int = 60,
        media: dict[int, int] | None = None,
        events: bool = True,
        key_share: float = 0.7,
    ) -> Fleet:
        """`count` meters, the same for the same arguments.

        Serial numbers come in batches (consecutive serials of one model, as installers fit
        them) and a few serials recur under another maker, so a secondary search must narrow
        down to the last ID digit and into the M-field. With `events`, a few meters get a leak,
        a burst, reverse flow, a dry pipe or a replacement within `horizon_days` of the epoch.
        Primary addresses are 1-250 in order (0 beyond the 250th meter).
        """
        builder = _FleetBuilder(random.Random(f"metergate-fleet:{seed}"), epoch, horizon_days)
        weights = media or WATER_MEDIA
        meters = []
        for index in range(count):
            meter = builder.meter(weights, key_share, index + 1 if index < 250 else 0)
            if events:
                meter = builder.with_events(meter)
            meters.append(meter)
        return cls(seed, tuple(meters))


class _FleetBuilder:
    """The seeded choices behind Fleet.generate, in a fixed order."""

    def __init__(self, rng: random.Random, epoch: datetime, horizon_days: int) -> None:
        self.rng = rng
        self.epoch = epoch
        self.horizon_days = max(2, horizon_days)
        self.used: set[tuple[str, str]] = set()
        # The same identities in sorted order, kept as they come: the seeded choice of a serial
        # to reuse picks from it, and sorting the set for every meter made a fleet quadratic.
        self.used_sorted: list[tuple[str, str]] = []
        self.batch: Identity | None = None
        self.batch_next = 0

    def _new_identity(self, media: dict[int, int]) -> Identity:
        rng = self.rng
        roll = rng.random()
        if self.used_sorted and roll < 0.08:
            _, ident = rng.choice(self.used_sorted)
            makers = [m for m in MANUFACTURERS if (m, ident) not in self.used]
            return Identity(rng.choice(makers), ident, rng.choice(_VERSIONS), self._medium(media))
        if self.batch is not None and roll < 0.55 and self.batch_next < 100:
            batch = self.batch
            self.batch_next += 1
            ident = batch.id[:6] + f"{self.batch_next - 1:02d}"
            return Identity(batch.manufacturer, ident, batch.version, batch.device_type)
        self.batch_next = rng.randrange(90)
        ident = f"{rng.randrange(10**6):06d}{self.batch_next:02d}"
        self.batch_next += 1
        identity = Identity(
            rng.choice(MANUFACTURERS), ident, rng.choice(_VERSIONS), self._medium(media)
        )
        self.batch = identity
        return identity

    def _medium(self, media: dict[int, int]) -> int:
        return self.rng.choices(list(media), weights=list(media.values()))[0]

    def _take(self, identity: tuple[str, str]) -> bool:
        """Record an identity; False when it was drawn before."""
        if identity in self.used:
            return False
        self.used.add(identity)
        bisect.insort(self.used_sorted, identity)
        return True

    def identity(self, media: dict[int, int]) -> Identity:
        while True:
            identity = self._new_identity(media)
            if self._take((identity.manufacturer, identity.id)):
                return identity

    def successor(self, old: Identity) -> Identity:
        """The device fitted in place of `old`: same model, a fresh serial."""
        while True:
            ident = f"{self.rng.randrange(10**8):08d}"
            if self._take((old.manufacturer, ident)):
                return Identity(old.manufacturer, ident, old.version, old.device_type)

    def meter(self, media: dict[int, int], key_share: float, primary: int) -> Meter:
        rng = self.rng
        identity = self.identity(media)
        key = rng.randbytes(16) if rng.random() < key_share else None
        pattern = rng.choices(list(PATTERNS), weights=(70, 15, 15))[0]
        interval = rng.choice((16, 32, 64, 120, 300, 900))
        low, high = DAILY_LITRES[pattern]
        return Meter(
            identity=identity,
            epoch=self.epoch,
            start_index=litres_to_m3(rng.randrange(500, 2_500_000)),
            key=key,
            security_mode=0 if key is None else rng.choice((5, 5, 5, 7)),
            interval_s=interval,
            phase_s=rng.randrange(interval),
            access_no=rng.randrange(256),
            clock_offset_s=rng.randint(-90, 90),
            primary_address=primary,
            pattern=pattern,
            daily_litres=rng.randint(low, high),
            noise_seed=rng.getrandbits(32),
        )

    def _instant(self, hour_low: int, hour_high: int) -> datetime:
        rng = self.rng
        day = self.epoch.astimezone(LOCAL_STANDARD_TIME).replace(hour=0, minute=0, second=0)
        offset = timedelta(
            days=rng.randrange(1, self.horizon_days),
            hours=rng.randrange(hour_low, hour_high),
            minutes=rng.randrange(60),
        )
        return (day + offset).astimezone(UTC)

    def with_events(self, meter: Meter) -> Meter:
        rng = self.rng
        events: list[Event] = []
        if rng.random() < 0.08:  # a leak starts in the night and runs until repaired, or on
            start = self._instant(1, 4)
            end = start + timedelta(days=rng.randint(3, 20)) if rng.random() < 0.5 else None
            events.append(Event("leak", start, end, rng.randint(4, 40)))
        if rng.random() < 0.03:
            start = self._instant(0, 24)
            end = start + timedelta(minutes=rng.randint(30, 240))
            events.append(Event("burst", start, end, rng.randint(600, 3000)))
        if rng.random() < 0.04:
            start = self._instant(0, 24)
            end = start + timedelta(minutes=rng.randint(5, 60))
            events.append(Event("backflow", start, end, -rng.randint(20, 200)))
        if rng.random() < 0.03:
            start = self._instant(0, 24)
            events.append(Event("dry", start, start + timedelta(hours=rng.randint(2, 48))))
        replacement = None
        if rng.random() < 0.05:
            identity = self.successor(meter.identity)
            replacement = Replacement(
                at=self._instant(9, 16),
                identity=identity,
                start_index=litres_to_m3(rng.randrange(51)),
                key=rng.randbytes(16) if meter.key else None,
                access_no=rng.randrange(256),
            )
        if not events and replacement is None:
            return meter
        return replace(meter, events=tuple(events), replacement=replacement)


class SimClock:
    """Simulated time: `start` at creation, then `speed` simulated seconds per real second."""

    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.start = start or datetime.now(UTC)
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(self._monotonic() - self._t0) * self.speed)
