"""Simulated Modbus water flow meters: one meter of the fleet per unit id, served through a
register map.

A register map says where a value lives and how it is coded; this module says what the value
is at an instant, from the fleet's consumption model (firmware_sim.consumption), by the field's
quantity:

- `volume_flow`: the flow rate (m3/h); NaN while the pipe is dry, as an electromagnetic meter
  reports an empty pipe (see the NaN test vector of generic_magmeter.toml);
- `volume`: the net index; `volume_forward` and `volume_backward`: the forward and reverse
  totals (net = forward - backward);
- `flow_temperature`: a constant per meter between 6 and 12 C, invented (the fleet has none);
- `error_flags`: the bits the map's [[flags]] assign to the flags in force: the fleet's events
  (leak, burst, backflow, dry) and whatever a test or operator set with `set_flags`;
- anything else: 0.

Integer fields take the value truncated to their scale; an unsigned counter rolls over at its
width, as a totalizer does. Reads follow the exception rules of Modbus Application Protocol
V1.1b3 §6.3/§6.4: function 03/04 only (else 01), 1-125 registers (else 03), every address
served by a field (else 02); a unit that is not on the bus does not answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from fractions import Fraction
from math import floor
from typing import Any

from decoders.modbus_map import (
    MAX_REGISTERS_PER_READ,
    RegisterField,
    RegisterMap,
    encode_registers,
)
from decoders.profile import FLAG_NAMES
from firmware_sim.fleet import Fleet, SimClock
from firmware_sim.meter import Meter

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
WATER = 0x07  # EN 13757-3 device type "water" (PROTOCOL_NOTES §7.11)
_TABLES = {3: "holding", 4: "input"}
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


@dataclass(slots=True)
class FlowMeterUnit:
    """One meter on the bus; `flags` are those set by hand, on top of the model's events."""

    unit_id: int
    meter: Meter
    temperature: Decimal
    flags: set[str] = field(default_factory=set)


def _fit(item: RegisterField, value: Decimal) -> Decimal:
    """The nearest value at or below `value` that the field's integer type can carry."""
    if item.type in ("f32", "f64"):
        return value
    bits = 16 * item.count
    number = floor((Fraction(value) - Fraction(item.offset)) / Fraction(item.scale))
    if item.type.startswith("i"):
        number = max(-(2 ** (bits - 1)), min(2 ** (bits - 1) - 1, number))
    else:
        number %= 2**bits
    return _EXACT.add(_EXACT.multiply(Decimal(number), item.scale), item.offset)


class FlowMeterBank:
    """The meters of one bus (or one Modbus TCP gateway), safe to use from several threads."""

    def __init__(
        self,
        register_map: RegisterMap,
        meters: Sequence[Meter],
        *,
        first_unit: int = 1,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not 1 <= first_unit <= 248 - len(meters):
            raise ValueError("unit ids are 1-247 (MODBUS over Serial Line V1.02 §2.2)")
        self.register_map = register_map
        self.clock = clock or SimClock().now
        self.units = {
            first_unit + i: FlowMeterUnit(
                first_unit + i, meter, Decimal(600 + meter.noise_seed % 600).scaleb(-2)
            )
            for i, meter in enumerate(meters)
        }
        self.served: dict[str, frozenset[int]] = {
            table: frozenset(
                address
                for item in register_map.fields
                if item.table == table
                for address in range(item.address, item.end)
            )
            for table in ("holding", "input")
        }
        self.requests = 0
        self._lock = threading.Lock()

    @classmethod
    def generate(
        cls,
        register_map: RegisterMap,
        count: int,
        seed: int = 0,
        *,
        first_unit: int = 1,
        clock: Callable[[], datetime] | None = None,
    ) -> FlowMeterBank:
        """`count` water meters of the seeded fleet, on unit ids from `first_unit` on."""
        fleet = Fleet.generate(count, seed, media={WATER: 1})
        return cls(register_map, fleet.meters, first_unit=first_unit, clock=clock)

    def set_flags(self, unit_id: int, *flags: str) -> None:
        """Raise these alarm flags (FLAG_NAMES) on a unit, besides its model's events."""
        unknown = set(flags) - FLAG_NAMES
        if unknown:
            raise ValueError(f"unknown flags {sorted(unknown)}")
        with self._lock:
            self.units[unit_id].flags.update(flags)

    def clear_flags(self, unit_id: int) -> None:
        with self._lock:
            self.units[unit_id].flags.clear()

    def flags(self, unit_id: int, at: datetime | None = None) -> frozenset[str]:
        unit = self.units[unit_id]
        with self._lock:
            manual = frozenset(unit.flags)
        return manual | unit.meter.flags_at(at or self.clock())

    def values(self, unit_id: int, at: datetime | None = None) -> dict[str, Decimal]:
        """What each field of the map holds at `at` (default: now), as the map decodes it."""
        t = at or self.clock()
        unit = self.units[unit_id]
        meter = unit.meter
        index, backward = meter.index_at(t), meter.backward_at(t)
        flags = self.flags(unit_id, t)
        by_quantity = {
            "volume_flow": Decimal("NaN") if "dry" in flags else meter.flow_at(t),
            "volume": index,
            "volume_forward": index + backward,
            "volume_backward": backward,
            "flow_temperature": unit.temperature,
        }
        values = {}
        for item in self.register_map.fields:
            if item.quantity == "error_flags":
                value = Decimal(self._alarm_word(item.name, flags))
            else:
                value = by_quantity.get(item.quantity, Decimal(0))
            values[item.name] = _fit(item, value)
        return values

    def _alarm_word(self, name: str, flags: frozenset[str]) -> int:
        word = 0
        for rule in self.register_map.flags:
            if rule.source == name and rule.flag in flags:
                word |= 1 << rule.bit
        return word

    def registers(self, unit_id: int, at: datetime | None = None) -> dict[tuple[str, int], int]:
        """Every register the unit serves, keyed (table, address), at `at` (default: now)."""
        return encode_registers(self.register_map, self.values(unit_id, at))

    def read(self, unit_id: int, function: int, start: int, count: int) -> list[int] | int | None:
        """The registers a read request gets now, an exception code, or None: no such unit."""
        if unit_id not in self.units:
            return None
        self.requests += 1
        table = _TABLES.get(function)
        if table is None:
            return ILLEGAL_FUNCTION
        if not 1 <= count <= MAX_REGISTERS_PER_READ:
            return ILLEGAL_VALUE
        served = self.served[table]
        if any(address not in served for address in range(start, start + count)):
            return ILLEGAL_ADDRESS
        registers = self.registers(unit_id)
        return [registers[(table, address)] for address in range(start, start + count)]

    def describe(self, at: datetime | None = None) -> list[dict[str, Any]]:
        """Who is on the bus, as JSON-ready values: unit id and the meter's identity."""
        t = at or self.clock()
        out = []
        for unit_id, unit in sorted(self.units.items()):
            identity = unit.meter.identity_at(t).describe()
            out.append({"unit_id": unit_id} | identity | {"model": self.register_map.model})
        return out


def frozen_clock(at: datetime | None = None) -> Callable[[], datetime]:
    """A clock that stands still (tests, `--speed 0`): the served values do not move."""
    instant = at or datetime.now(UTC)
    return lambda: instant
