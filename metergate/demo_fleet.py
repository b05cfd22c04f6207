"""The demo's simulated fleet: its meters, their registry rows, and their history (issue 7).

Three parts of firmware_sim make it, all from one seed and with the history's start as the
fleet's epoch, so a second run of the demo rebuilds the same meters:
- wireless M-Bus water meters in apartments, heard by an emulated iM871A: the first leaks from
  its third night on and never stops, the second leaks for six days and is repaired, the third
  is replaced half-way through the history (a new serial and key, its index from near zero),
  the fourth is overdue for verification (marked six years ago; Latvia verifies every four);
- wired M-Bus meters in the apartments of one building (water, heat, cooling) on one bus;
- Modbus electromagnetic flow meters at the inlets of an industrial park; the first has an
  afternoon of reverse flow, which its alarm word reports.

history() gives what the gateway would have received over a past span, as the items its
sources hand the pipeline: each wireless meter's first telegram of every hour (full frames,
as the receiver delivers them), a readout of every wired meter at five past each hour, and a
poll of every Modbus unit every quarter of an hour.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from decoders.manufacturer import medium_name
from decoders.mbus_link import parse_frame, req_ud2, snd_nke
from decoders.modbus_map import decode_registers, status_flags
from drivers.modbus import ModbusReading
from firmware_sim.consumption import Event
from firmware_sim.fleet import BUILDING_MEDIA, Fleet
from firmware_sim.mbus_slave import MbusSlave, SlaveBus
from firmware_sim.meter import LOCAL_ZONE, Identity, Meter, Replacement
from firmware_sim.modbus_meters import WATER, FlowMeterBank
from firmware_sim.wmbus_meters import WmbusFleet
from gateway.frames import RawFrame
from gateway.pipeline import Item, Polled
from metergate.profiles import load_register_map

REGISTER_MAP = "generic-magmeter"
# Month-end values a wired meter keeps: two fit one telegram, so a readout is one frame.
WIRED_HISTORY_MONTHS = 2
CORRUPTION_RATE = 0.01  # telegrams damaged on the air, live (the receiver drops them)
LEAKING, REPAIRED, REPLACED, OVERDUE = 0, 1, 2, 3
MIN_WIRELESS = 4
_HOUR = timedelta(hours=1)
_STREETS = (
    "Brivibas iela", "Elizabetes iela", "Terbatas iela", "Valdemara iela", "Dzirnavu iela",
    "Gertrudes iela", "Lacplesa iela", "Caka iela",
)  # fmt: skip
_Q3 = {"household": "2.5", "office": "4", "building": "16"}
_COLUMNS = (
    "meter_id", "manufacturer", "serial", "medium", "kind", "model", "meter_class", "q3_m3h",
    "country", "premise", "address", "customer_ref", "installed_on", "removed_on",
    "verified_on", "marking_year",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """What makes the fleet: kept in the demo's state, so a later run gets the same meters."""

    seed: int
    start: datetime  # the history's first instant (local midnight) and the fleet's epoch
    history_days: int
    wireless: int
    wired: int
    modbus: int

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "start": self.start.isoformat(),
            "history_days": self.history_days,
            "wireless": self.wireless,
            "wired": self.wired,
            "modbus": self.modbus,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            int(data["seed"]),
            datetime.fromisoformat(data["start"]).astimezone(UTC),
            int(data["history_days"]),
            int(data["wireless"]),
            int(data["wired"]),
            int(data["modbus"]),
        )

    @property
    def replaced_at(self) -> datetime:
        return self.start + timedelta(days=self.history_days // 2, hours=10)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the gateway reads each part: as its sources name the frames they receive."""

    receiver: str  # KIND:PORT
    bus: str
    modbus_url: str


def _apartments(fleet: Fleet) -> list[Meter]:
    """The fleet's meters in apartments: no water at night (a building's inlet has some)."""
    return [replace(m, pattern="household") if m.pattern == "building" else m for m in fleet]


def _wireless(plan: Plan) -> Fleet:
    fleet = Fleet.generate(plan.wireless, plan.seed, epoch=plan.start, events=False)
    meters = _apartments(fleet)
    night = plan.start + timedelta(hours=1, minutes=30)  # 01:30 local, the start is midnight
    meters[LEAKING] = replace(
        meters[LEAKING],
        pattern="household",
        events=(Event("leak", night + timedelta(days=2), None, 8),),
    )
    leak_start = night + timedelta(days=5)
    meters[REPAIRED] = replace(
        meters[REPAIRED],
        pattern="household",
        events=(Event("leak", leak_start, leak_start + timedelta(days=6), 5),),
    )
    old = meters[REPLACED]
    rng = random.Random(f"metergate-demo:{plan.seed}")
    used = {m.identity.id for m in meters}
    serial = next(s for s in (f"{rng.randrange(10**8):08d}" for _ in range(100)) if s not in used)
    meters[REPLACED] = replace(
        old,
        replacement=Replacement(
            at=plan.replaced_at,
            identity=Identity(old.identity.manufacturer, serial, old.identity.version,
                              old.identity.device_type),
            start_index=Decimal("0.004"),
            key=rng.randbytes(16) if old.key else None,
            access_no=rng.randrange(256),
        ),
    )  # fmt: skip
    return replace(fleet, meters=tuple(meters))


def _flow_meters(plan: Plan) -> tuple[Meter, ...]:
    fleet = Fleet.generate(plan.modbus, plan.seed + 2, epoch=plan.start, media={WATER: 1},
                           events=False)  # fmt: skip
    # Factories of an industrial park: water by day, none at night or on Sundays.
    meters = [replace(meter, pattern="office") for meter in fleet.meters]
    backflow = plan.start + timedelta(days=4, hours=13)
    meters[0] = replace(
        meters[0], events=(Event("backflow", backflow, backflow + 2 * _HOUR, -150),)
    )
    return tuple(meters)


class DemoFleet:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.air = WmbusFleet(_wireless(plan), corruption_rate=CORRUPTION_RATE)
        wired = Fleet.generate(
            plan.wired, plan.seed + 1, epoch=plan.start, media=BUILDING_MEDIA, events=False
        )
        self.wired = replace(wired, meters=tuple(_apartments(wired)))
        self.flow_meters = _flow_meters(plan)
        self.register_map = load_register_map(REGISTER_MAP)

    def keys(self) -> dict[str, bytes]:
        """The wireless meters' keys, replacements included (the bus is not encrypted)."""
        return self.air.keys()

    def bus(self) -> SlaveBus:
        return SlaveBus.from_fleet(self.wired, history_months=WIRED_HISTORY_MONTHS)

    def bank(self) -> FlowMeterBank:
        """The Modbus units 1.. with the flow meters, serving the present."""
        return FlowMeterBank(self.register_map, self.flow_meters)

    def modbus_meter_ids(self) -> list[str]:
        return [meter.identity.meter_id for meter in self.flow_meters]

    # --- the registry -----------------------------------------------------------------------

    def registry_csv(self, today: date) -> str:
        """The meters as a meters CSV (api/meter_import.py): premises, customers, verification."""
        rows: list[dict[str, str]] = []

        def add(meter: Identity, premise: str, **cells: object) -> None:
            installed = today - timedelta(days=200 + (len(rows) * 97) % 700)
            row = {
                "meter_id": meter.meter_id,
                "manufacturer": meter.manufacturer,
                "serial": meter.id,
                "medium": medium_name(meter.device_type),
                "country": "LV",
                "premise": premise,
                "address": f"{premise}, Riga",
                "customer_ref": f"C-{10001 + len(rows)}",
                "installed_on": installed.isoformat(),
                "verified_on": installed.isoformat(),
            }
            rows.append(row | {key: str(value) for key, value in cells.items()})

        replaced_on = self.plan.replaced_at.astimezone(LOCAL_ZONE).date().isoformat()
        for i, transmitter in enumerate(self.air.meters):
            meter = transmitter.meter
            premise = f"{_STREETS[i % len(_STREETS)]} {3 + i // len(_STREETS)}-{1 + (i * 7) % 40}"
            model = {
                "kind": "ultrasonic" if meter.interval_s <= 64 else "mechanical",
                "model": "wM-Bus water meter (simulated)",
                "meter_class": meter.pattern,
                "q3_m3h": _Q3[meter.pattern],
            }
            if i == OVERDUE:
                model |= {"installed_on": f"{today.year - 6}-06-01", "verified_on": "",
                          "marking_year": str(today.year - 6)}  # fmt: skip
            if meter.replacement is not None:
                add(meter.identity, premise, **model, removed_on=replaced_on)
                model |= {"installed_on": replaced_on, "verified_on": replaced_on}
                add(meter.replacement.identity, premise, **model)
            else:
                add(meter.identity, premise, **model)
        for j, meter in enumerate(self.wired.meters):
            add(meter.identity, f"Krisjana Barona iela 30-{j + 1}", kind="mechanical",
                model="M-Bus meter (simulated)", meter_class=meter.pattern,
                q3_m3h=_Q3[meter.pattern])  # fmt: skip
        for k, meter in enumerate(self.flow_meters):
            add(meter.identity, f"Industrial park {k + 1}, inlet", kind="electromagnetic",
                model=REGISTER_MAP, meter_class="building", q3_m3h="40")  # fmt: skip
        out = io.StringIO()
        writer = csv.DictWriter(out, _COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    # --- the history ------------------------------------------------------------------------

    def history(self, start: datetime, end: datetime, endpoints: Endpoints) -> Iterator[list[Item]]:
        """The items of [start, end), an hour at a time, in time order (see the module notes)."""
        bus = self.bus()
        bank = self.bank()
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            span = (max(hour, start), min(hour + _HOUR, end))
            items: list[Item] = []
            for transmitter in self.air.meters:
                for t in transmitter.meter.transmissions(*span):
                    frame = transmitter.telegram(t, compact=False)
                    level = transmitter.radio.level_dbm
                    items.append(RawFrame(frame, t, endpoints.receiver, "wmbus", level))
                    break
            at = hour + timedelta(minutes=5)
            if span[0] <= at < span[1]:
                items += [self._readout(slave, at, endpoints) for slave in bus.slaves]
            for quarter in range(4):
                at = hour + timedelta(minutes=15 * quarter, seconds=30)
                if span[0] <= at < span[1]:
                    items += [self._poll(bank, unit, at, endpoints) for unit in sorted(bank.units)]
            items.sort(
                key=lambda item: (item.raw if isinstance(item, Polled) else item).received_at
            )
            yield items
            hour += _HOUR

    @staticmethod
    def _readout(slave: MbusSlave, at: datetime, endpoints: Endpoints) -> RawFrame:
        """What a master reads from `slave` at `at`: SND_NKE, then REQ_UD2 (one telegram)."""
        address = slave.primary_address
        slave.answer(parse_frame(snd_nke(address)), at)
        wire = slave.answer(parse_frame(req_ud2(address, fcb=True)), at)
        if not wire:
            raise RuntimeError(f"the simulated meter at {address} did not answer")
        return RawFrame(wire, at, endpoints.bus, "mbus")

    def _poll(self, bank: FlowMeterBank, unit: int, at: datetime, endpoints: Endpoints) -> Polled:
        """What the gateway's Modbus source makes of one read of `unit` at `at`."""
        registers = bank.registers(unit, at)
        records = decode_registers(self.register_map, registers)
        reading = ModbusReading(
            unit,
            records,
            status_flags(self.register_map, records),
            tuple(sorted(registers.items())),
        )
        data = b"".join(word.to_bytes(2, "big") for _, word in reading.registers)
        raw = RawFrame(data, at, f"{endpoints.modbus_url}#{unit}", "modbus")
        meter_id = bank.units[unit].meter.identity_at(at).meter_id
        return Polled(raw, meter_id, self.register_map.manufacturer, reading)
