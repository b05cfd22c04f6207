"""The wireless M-Bus side of the simulated fleet: what each meter sends, and when.

Each meter of firmware_sim.fleet gets radio habits (link mode T1, C1 or S1; frame format A or B;
full or compact telegrams; how loud it arrives at the collector), all drawn from the seed. A
telegram is a pure function of the instant: identity, key, access number, security mode and
register all come from the fleet model, so any process with the same seed can tell what a
meter said at any transmission. Frames are built with the project's encoders (wmbus_seal,
record_encoder, wmbus_link) and given as a receiver hands them over, CRC-stripped, and as they
went on air, with the link CRCs of their format and, at a seeded rate, a damaged bit.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from decoders.afl import Afl
from decoders.compact import format_signature
from decoders.crc import crc16_en13757
from decoders.record_encoder import encode_records
from decoders.telegram import RecordValue, TplHeader
from decoders.tpl import SECURITY_MODE_CBC_IV, SECURITY_MODE_CBC_KDF
from decoders.wmbus_link import add_crcs_a, add_crcs_b
from decoders.wmbus_seal import seal_wmbus
from firmware_sim.fleet import Fleet
from firmware_sim.mbus_slave import ERROR_BITS, STATUS_TEMPORARY_ERROR
from firmware_sim.meter import LOCAL_ZONE, Meter

LINK_MODES = ("T1", "C1", "S1")
DEFAULT_MODES = ("T1", "C1")
SND_NR = 0x44  # EN 13757-4: a meter's spontaneous data (PROTOCOL_NOTES §1.1)
CI_SHORT = 0x7A  # EN 13757-7 §7.5.2: TPL with the short header, full records
CI_SHORT_COMPACT = 0x7B  # the same, compact records (PROTOCOL_NOTES §6)
# PROTOCOL_NOTES §6.3: Kamstrup sends a full frame about every 8th telegram. Only meters that
# send often bother with compact frames: they exist to save airtime.
FULL_EVERY = 8
COMPACT_MAX_INTERVAL_S = 64
# Mode 7 as OMS meters send it (PROTOCOL_NOTES §4): AFL with MCL, message counter and an 8-byte
# CMAC (AT 5), TPL configuration extension selecting KDF-A.
AFL_FCL = 0x2C00
AFL_MCL = 0x25
CONFIG_EXT_KDF_A = 0x10
# The DIF/VIF headers of what a simulated meter sends, in order (EN 13757-3 §6): its clock,
# volume, reverse volume, flow, error flags, then the last month end (storage 1) date and volume.
HEADERS = tuple(
    bytes.fromhex(h) for h in ("046D", "0413", "04933C", "023B", "02FD17", "426C", "4413")
)
FORMAT_BYTES = b"".join(HEADERS)


@dataclass(frozen=True, slots=True)
class Radio:
    """A meter's radio habits. `level_dbm` is how strong it arrives at the collector, in the
    half-dB steps both USB receivers report."""

    link_mode: str
    frame_format: str  # "A" or "B"; B exists in mode C only (EN 13757-4, PROTOCOL_NOTES §1.5)
    compact: bool
    level_dbm: Decimal

    def describe(self) -> dict[str, Any]:
        return {
            "link_mode": self.link_mode,
            "frame_format": self.frame_format,
            "compact": self.compact,
            "level_dbm": str(self.level_dbm),
        }


@dataclass(frozen=True, slots=True)
class Transmission:
    """One telegram in the air.

    `frame` is CRC-stripped with L at offset 0, what a receiver delivers when the CRCs match;
    `on_air` carries the link CRCs of `frame_format` and, when `crc_ok` is False, one bit that
    the radio path flipped (a receiver's CRC check then drops it).
    """

    at: datetime
    meter_id: str
    link_mode: str
    frame_format: str
    frame: bytes
    on_air: bytes
    crc_ok: bool
    compact: bool
    level_dbm: Decimal


def radio_for(meter: Meter, modes: Sequence[str], seed: int) -> Radio:
    """The radio habits of `meter`, the same for the same seed, meter and modes."""
    unknown = [m for m in modes if m not in LINK_MODES]
    if not modes or unknown:
        raise ValueError(f"link modes must be some of {', '.join(LINK_MODES)}, not {unknown}")
    rng = random.Random(f"metergate-wmbus:{seed}:{meter.identity.meter_id}")
    link_mode = rng.choice(tuple(modes))
    frame_format = "B" if link_mode == "C1" and rng.random() < 0.5 else "A"
    compact = meter.interval_s <= COMPACT_MAX_INTERVAL_S and rng.random() < 0.6
    level = Decimal(rng.randint(-210, -100)) / 2  # -105 .. -50 dBm
    return Radio(link_mode, frame_format, compact, level)


def _local_clock(meter: Meter, t: datetime) -> datetime:
    """The meter's clock in local time to the minute, as a type F record carries it."""
    return meter.clock_at(t).astimezone(LOCAL_ZONE).replace(tzinfo=None, second=0, microsecond=0)


class WmbusMeter:
    """One meter's transmitter."""

    def __init__(self, meter: Meter, radio: Radio, *, corruption_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= corruption_rate <= 1.0:
            raise ValueError("the corruption rate is a probability")
        self.meter = meter
        self.radio = radio
        self.corruption_rate = corruption_rate
        self.seed = seed

    def values(self, t: datetime) -> list[RecordValue]:
        """The record values at `t`, in the order of HEADERS."""
        meter = self.meter
        ((month_end, month_index),) = meter.month_end_indexes(t, 1)
        return [
            _local_clock(meter, t),
            meter.index_at(t),
            meter.backward_at(t),
            meter.flow_at(t),
            Decimal(sum(ERROR_BITS[flag] for flag in meter.flags_at(t))),
            month_end,
            month_index,
        ]

    def sent_before(self, t: datetime) -> int:
        """How many telegrams the meter sent before `t` since the fleet's epoch: its AFL message
        counter, which never repeats (EN 13757-7 §7.7.1) as the access number does."""
        meter = self.meter
        first = meter.epoch + timedelta(seconds=meter.phase_s)
        if t <= first:
            return 0
        return -(-(t - first) // timedelta(seconds=meter.interval_s))

    def is_compact(self, t: datetime) -> bool:
        """Compact senders send a full frame when the access number is a multiple of 8."""
        return self.radio.compact and self.meter.access_no_at(t) % FULL_EVERY != 0

    def telegram(self, t: datetime, *, compact: bool | None = None) -> bytes:
        """The CRC-stripped frame the meter sends at `t` (full or compact as its habit says
        unless `compact` is given)."""
        meter = self.meter
        identity = meter.identity_at(t)
        key = meter.key_at(t)
        mode = meter.security_mode if key is not None else 0
        records = [
            encode_records([(header, value)])
            for header, value in zip(HEADERS, self.values(t), strict=True)
        ]
        full = b"".join(records)
        if compact is None:
            compact = self.is_compact(t)
        if compact:
            # PROTOCOL_NOTES §6.1: format signature, full-frame CRC (both LE), data bytes only.
            data = b"".join(r[len(h) :] for r, h in zip(records, HEADERS, strict=True))
            apl = (
                format_signature(FORMAT_BYTES).to_bytes(2, "little")
                + crc16_en13757(full).to_bytes(2, "little")
                + data
            )
        else:
            apl = full
        tpl = TplHeader(
            ci=CI_SHORT_COMPACT if compact else CI_SHORT,
            access_no=meter.access_no_at(t),
            status=STATUS_TEMPORARY_ERROR if meter.flags_at(t) else 0,
            config=mode << 8,
            config_ext=CONFIG_EXT_KDF_A if mode == SECURITY_MODE_CBC_KDF else None,
        )
        afl = None
        if mode == SECURITY_MODE_CBC_KDF:
            counter = self.sent_before(t) % (1 << 32)
            afl = Afl(fcl=AFL_FCL, mcl=AFL_MCL, key_info=None, counter=counter, mac=bytes(8))
        sealed_key = key if mode in (SECURITY_MODE_CBC_IV, SECURITY_MODE_CBC_KDF) else None
        return seal_wmbus(SND_NR, identity.address, tpl, apl, key=sealed_key, afl=afl)

    def transmission(self, t: datetime) -> Transmission:
        radio = self.radio
        compact = self.is_compact(t)
        frame = self.telegram(t, compact=compact)
        on_air = add_crcs_b(frame) if radio.frame_format == "B" else add_crcs_a(frame)
        rng = random.Random(f"metergate-air:{self.seed}:{self.meter.identity.meter_id}:{t}")
        crc_ok = rng.random() >= self.corruption_rate
        if not crc_ok:
            damaged = bytearray(on_air)
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            on_air = bytes(damaged)
        # The level varies by up to 3 dB from one telegram to the next (fading).
        level = radio.level_dbm + Decimal(rng.randint(-6, 6)) / 2
        return Transmission(
            at=t,
            meter_id=self.meter.identity_at(t).meter_id,
            link_mode=radio.link_mode,
            frame_format=radio.frame_format,
            frame=frame,
            on_air=on_air,
            crc_ok=crc_ok,
            compact=compact,
            level_dbm=level,
        )


class WmbusFleet:
    """All meters of a fleet as radio transmitters."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        modes: Sequence[str] = DEFAULT_MODES,
        corruption_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.fleet = fleet
        self.seed = fleet.seed if seed is None else seed
        self.meters = tuple(
            WmbusMeter(
                meter,
                radio_for(meter, modes, self.seed),
                corruption_rate=corruption_rate,
                seed=self.seed,
            )
            for meter in fleet.meters
        )

    def schedule(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, WmbusMeter]]:
        """Who transmits in [start, end), in time order (meters in fleet order on ties)."""
        slots = [
            (t, i) for i, m in enumerate(self.meters) for t in m.meter.transmissions(start, end)
        ]
        for t, i in sorted(slots):
            yield t, self.meters[i]

    def timeline(self, start: datetime) -> Timeline:
        return Timeline(self, start)

    def transmissions(self, start: datetime, end: datetime) -> list[Transmission]:
        return [meter.transmission(t) for t, meter in self.schedule(start, end)]

    def describe(self) -> list[dict[str, Any]]:
        """Each meter's facts (identities, keys in hex, security mode, interval) and radio."""
        return [m.meter.describe() | m.radio.describe() for m in self.meters]

    def keys(self) -> dict[str, bytes]:
        """meter_id -> AES key, replacements included: what an operator's keys file holds."""
        out: dict[str, bytes] = {}
        for m in self.meters:
            meter = m.meter
            if meter.key is not None:
                out[meter.identity.meter_id] = meter.key
            rep = meter.replacement
            if rep is not None and rep.key is not None:
                out[rep.identity.meter_id] = rep.key
        return out


class Timeline:
    """The fleet's transmissions from `start` on, taken in time order as a clock advances;
    the same sequence as WmbusFleet.schedule, at a cost per transmission, not per meter."""

    def __init__(self, air: WmbusFleet, start: datetime) -> None:
        self.air = air
        self._heap: list[tuple[datetime, int]] = []
        for index, meter in enumerate(air.meters):
            first = next(meter.meter.transmissions(start, datetime.max.replace(tzinfo=UTC)))
            self._heap.append((first, index))
        heapq.heapify(self._heap)

    def until(self, end: datetime) -> list[tuple[datetime, WmbusMeter]]:
        """Who transmits from where the last call stopped until just before `end`."""
        heap = self._heap
        out = []
        while heap and heap[0][0] < end:
            t, index = heapq.heappop(heap)
            meter = self.air.meters[index]
            out.append((t, meter))
            heapq.heappush(heap, (t + timedelta(seconds=meter.meter.interval_s), index))
        return out
