"""The conformance corpus (../shared/corpus/wmbus.jsonl), read in place, and its scoring.

A numeric expected field `<name>_<unit>` counts as recovered when one decoded record carries the
same value in the same unit, after converting between units of one family (Wh and kWh, minutes
and hours); that is the rule the corpus README gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "wmbus.jsonl"
SKIP_REASON = f"conformance corpus not found at {CORPUS} (it lives beside the repository)"

_D = Decimal
_SIX_DECIMALS = Decimal("0.000001")
# expected unit suffix -> {our unit: factor that turns our value into the expected unit}
UNIT_FACTORS: dict[str, dict[str, Decimal]] = {
    "m3": {"m3": _D(1)},
    "kwh": {"Wh": _D("0.001"), "J": _D(1) / _D(3600000)},
    "mwh": {"Wh": _D("0.000001")},
    "gj": {"J": _D("1e-9")},
    "hca": {"hca": _D(1)},
    "c": {"C": _D(1), "K": _D(1)},  # temperature differences are named _c too
    "k": {"K": _D(1)},
    "kw": {"W": _D("0.001"), "J/h": _D(1) / _D(3600000)},
    "w": {"W": _D(1)},
    "v": {"V": _D(1)},
    "a": {"A": _D(1)},
    "m3h": {"m3/h": _D(1), "m3/min": _D(60), "m3/s": _D(3600)},
    "lh": {"m3/h": _D(1000)},
    "h": {"h": _D(1), "min": _D(1) / _D(60), "s": _D(1) / _D(3600), "d": _D(24)},
    "s": {"s": _D(1), "min": _D(60), "h": _D(3600), "d": _D(86400)},
    "d": {"d": _D(1), "h": _D(1) / _D(24)},
    # The reference turns days into years by the mean Gregorian year.
    "y": {"y": _D(1), "month": _D(1) / _D(12), "d": _D(1) / _D("365.2425")},
    "kvarh": {"varh": _D("0.001")},
    "kvah": {"VAh": _D("0.001")},
    "rh": {"%RH": _D(1)},
    "pct": {"%": _D(1), "%RH": _D(1)},
    "counter": {"": _D(1)},
    "nr": {"": _D(1)},
    "factor": {"": _D(1)},
    "hz": {"Hz": _D(1)},
    "dbm": {"dBm": _D(1)},
    "ppm": {"ppm": _D(1)},
    "bar": {"bar": _D(1)},
    "kg": {"kg": _D(1)},
}


@dataclass(frozen=True, slots=True)
class Entry:
    line: int
    driver: str
    telegram: bytes
    key: bytes | None
    is_water: bool
    expected: dict[str, object]
    raw: dict[str, object]


def entries() -> Iterator[Entry]:
    with CORPUS.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            doc = json.loads(line)
            key = None if doc["key"] == "NOKEY" else bytes.fromhex(doc["key"])
            yield Entry(
                number,
                doc["driver"],
                bytes.fromhex(doc["telegram"]),
                key,
                bool(doc["is_water"]),
                doc["expected_json"] or {},
                doc,
            )


def numeric_fields(expected: dict[str, object]) -> dict[str, Decimal]:
    out = {}
    for name, value in expected.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[name] = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return out


def recovered(name: str, value: Decimal, records: list[tuple[str, Decimal]]) -> bool:
    suffix = name.rsplit("_", 1)[-1]
    factors = UNIT_FACTORS.get(suffix, {})
    for unit, got in records:
        factor = factors.get(unit)
        if factor is None:
            continue
        converted = got * factor
        if converted == value:
            return True
        # The reference prints six decimals of a double. A single-precision value (real32)
        # carries about 7 significant digits, so it compares within that precision; figures
        # converted by an inexact factor (J to kWh, days to years) within the reference's
        # rounding. Everything else, the water totals included, compares exactly.
        tolerance = _D("1e-7") if factor == 1 else _D("1e-6")
        if abs(converted - value) <= abs(value) * tolerance + _D("1e-9"):
            return True
        if converted.quantize(_SIX_DECIMALS) == value:  # what the reference would print
            return True
    return False


@dataclass
class Score:
    telegrams: int = 0
    decoded: int = 0
    fields: int = 0
    fields_recovered: int = 0
    water: int = 0
    water_total_exact: int = 0
    misses: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    undecodable: list[str] = field(default_factory=list)
