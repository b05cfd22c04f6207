"""Meter profiles: what one meter model adds to the generic decoder, as data.

A profile (one TOML file per model in decoders/profiles/) says which meters it is for
(manufacturer, device types, versions), names fields, maps manufacturer-specific records to
quantities, maps status and alarm bits to the flags of the `status` object, declares compact-frame
formats, may name a pure hook for a proprietary payload, and carries its own test vectors.
Parsing takes the file's text: reading files is the caller's business, decoders/ does no I/O.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from decoders import datatypes as dt
from decoders.telegram import Address, DataRecord
from metergate.errors import ConfigError

FLAG_NAMES = frozenset(
    {
        "leak",
        "burst",
        "backflow",
        "dry",
        "tamper",
        "low_battery",
        "alarm",
        "permanent_error",
        "temporary_error",
        "busy",
        "application_error",
        "flow_above_max",
        "no_consumption",
        "low_temperature",
        "meter_blocked",
        "leak_before",
        "tamper_before",
    }
)


@dataclass(frozen=True, slots=True)
class FieldRule:
    header: bytes  # DIF..VIFE bytes the record must carry
    name: str
    quantity: str | None = None
    unit: str | None = None
    exponent: int | None = None  # rescale a manufacturer-specific integer
    coding: str | None = None  # read the data bytes anew: "uint", "int", "bcd" or "real32"


@dataclass(frozen=True, slots=True)
class FlagRule:
    source: str  # a field name, or "status" for the TPL status byte
    bit: int
    flag: str


@dataclass(frozen=True, slots=True)
class ProfileTest:
    telegram: str
    key: str | None
    expect: tuple[tuple[str, int, str], ...]  # (quantity or field name, storage, value)
    flags: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class MeterProfile:
    model: str
    title: str
    manufacturers: frozenset[str]
    device_types: frozenset[int]
    versions: frozenset[int]  # empty: any version
    fields: tuple[FieldRule, ...] = ()
    flags: tuple[FlagRule, ...] = ()
    compact_formats: tuple[bytes, ...] = ()
    hook: str | None = None
    default_keys: tuple[bytes, ...] = ()  # keys a maker ships publicly, tried when none is given
    tests: tuple[ProfileTest, ...] = ()
    _by_header: dict[bytes, FieldRule] = field(default_factory=dict, compare=False, repr=False)

    def matches(self, address: Address) -> bool:
        return (
            address.manufacturer in self.manufacturers
            and (not self.device_types or address.device_type in self.device_types)
            and (not self.versions or address.version in self.versions)
        )

    def apply(self, records: tuple[DataRecord, ...]) -> tuple[DataRecord, ...]:
        """Rename and rescale the records the profile knows; leave the others alone."""
        if not self.fields:
            return records
        rules = self._by_header
        out = []
        for record in records:
            rule = rules.get(record.spec.dif + record.spec.vif)
            out.append(record if rule is None else _renamed(record, rule))
        return tuple(out)

    def status_flags(self, status: int | None, records: tuple[DataRecord, ...]) -> set[str]:
        flags: set[str] = set()
        values: dict[str, int] = {}
        if status is not None:
            values["status"] = status
        for record in records:
            if record.spec.name and isinstance(record.value, Decimal):
                values.setdefault(record.spec.name, int(record.value))
        for rule in self.flags:
            value = values.get(rule.source)
            if value is not None and value >> rule.bit & 1:
                flags.add(rule.flag)
        return flags


def _renamed(record: DataRecord, rule: FieldRule) -> DataRecord:
    spec = replace(
        record.spec,
        name=rule.name,
        quantity=rule.quantity or record.spec.quantity,
        unit=rule.unit if rule.unit is not None else record.spec.unit,
        exponent=rule.exponent if rule.exponent is not None else record.spec.exponent,
    )
    value = record.value
    if rule.coding is not None:
        value = _CODINGS[rule.coding](record.raw)
        if value is not None and rule.exponent:
            value = value.scaleb(rule.exponent)
    elif rule.exponent is not None and isinstance(value, Decimal):
        value = value.scaleb(rule.exponent)
    return DataRecord(spec, value, record.raw)


def _real32(raw: bytes) -> Decimal | None:
    return dt.decode_real32(raw) if len(raw) == 4 else None


# A maker's record often carries an ordinary number that its VIF cannot say how to read.
_CODINGS: dict[str, Callable[[bytes], Decimal | None]] = {
    "uint": lambda raw: Decimal(dt.decode_uint(raw)),
    "int": lambda raw: dt.decode_int(raw) if raw else None,
    "bcd": lambda raw: dt.decode_bcd(raw) if raw else None,
    "real32": _real32,
}


class ProfileSet:
    """The profiles a decoder knows; finds the one for a meter, with a memo per identity."""

    def __init__(self, profiles: tuple[MeterProfile, ...] = ()) -> None:
        self.profiles = profiles
        self._memo: dict[tuple[str, int, int], MeterProfile | None] = {}

    def find(self, address: Address) -> MeterProfile | None:
        key = (address.manufacturer, address.version, address.device_type)
        if key not in self._memo:
            self._memo[key] = next((p for p in self.profiles if p.matches(address)), None)
        return self._memo[key]


_TOP_KEYS = {
    "model",
    "title",
    "detect",
    "fields",
    "flags",
    "compact_formats",
    "hook",
    "default_keys",
    "tests",
}


def _require(doc: dict[str, Any], key: str, kind: type, source: str, where: str) -> Any:
    if key not in doc:
        raise ConfigError(f"missing {key!r}", path=source, location=where or key)
    value = doc[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{key!r} must be a {kind.__name__}", path=source, location=where or key)
    return value


def _hex(text: Any, source: str, where: str) -> bytes:
    try:
        return bytes.fromhex(str(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not hex", path=source, location=where) from None


def _key(text: Any, source: str, where: str) -> bytes:
    key = _hex(text, source, where)
    if len(key) != 16:
        raise ConfigError("an AES-128 key has 32 hex digits", path=source, location=where)
    return key


def _unknown_keys(doc: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r}", path=source, location=where)


def _int_set(doc: dict[str, Any], key: str, source: str) -> frozenset[int]:
    values = doc.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{key!r} must be a list of integers", path=source, location=key)
    return frozenset(values)


def parse_profile(text: str, source: str) -> MeterProfile:
    """A MeterProfile from the TOML text of a profile file; ConfigError names file and key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=source) from None
    _unknown_keys(doc, _TOP_KEYS, source, "")
    detect = _require(doc, "detect", dict, source, "detect")
    _unknown_keys(detect, {"manufacturers", "device_types", "versions"}, source, "detect")
    manufacturers = _require(detect, "manufacturers", list, source, "detect.manufacturers")
    fields = []
    for i, item in enumerate(doc.get("fields", [])):
        where = f"fields[{i}]"
        _unknown_keys(
            item, {"match", "name", "quantity", "unit", "exponent", "coding"}, source, where
        )
        coding = item.get("coding")
        if coding is not None and coding not in _CODINGS:
            raise ConfigError(
                f"coding must be one of {', '.join(sorted(_CODINGS))}",
                path=source,
                location=f"{where}.coding",
            )
        fields.append(
            FieldRule(
                header=_hex(_require(item, "match", str, source, f"{where}.match"), source, where),
                name=_require(item, "name", str, source, f"{where}.name"),
                quantity=item.get("quantity"),
                unit=item.get("unit"),
                exponent=item.get("exponent"),
                coding=coding,
            )
        )
    flags = []
    for i, item in enumerate(doc.get("flags", [])):
        where = f"flags[{i}]"
        _unknown_keys(item, {"source", "bit", "flag"}, source, where)
        flag = _require(item, "flag", str, source, f"{where}.flag")
        if flag not in FLAG_NAMES:
            raise ConfigError(f"unknown flag {flag!r}", path=source, location=f"{where}.flag")
        flags.append(
            FlagRule(
                _require(item, "source", str, source, f"{where}.source"),
                _require(item, "bit", int, source, f"{where}.bit"),
                flag,
            )
        )
    tests = []
    for i, item in enumerate(doc.get("tests", [])):
        where = f"tests[{i}]"
        _unknown_keys(item, {"telegram", "key", "expect", "flags", "source"}, source, where)
        expect = tuple(
            (str(e["quantity"]), int(e.get("storage", 0)), str(e["value"]))
            for e in _require(item, "expect", list, source, f"{where}.expect")
        )
        tests.append(
            ProfileTest(
                telegram=_require(item, "telegram", str, source, f"{where}.telegram"),
                key=item.get("key"),
                expect=expect,
                flags=tuple(item["flags"]) if "flags" in item else None,
            )
        )
    profile = MeterProfile(
        model=_require(doc, "model", str, source, "model"),
        title=doc.get("title", doc["model"]),
        manufacturers=frozenset(manufacturers),
        device_types=_int_set(detect, "device_types", source),
        versions=_int_set(detect, "versions", source),
        fields=tuple(fields),
        flags=tuple(flags),
        compact_formats=tuple(
            _hex(f, source, f"compact_formats[{i}]")
            for i, f in enumerate(doc.get("compact_formats", []))
        ),
        hook=doc.get("hook"),
        default_keys=tuple(
            _key(k, source, f"default_keys[{i}]") for i, k in enumerate(doc.get("default_keys", []))
        ),
        tests=tuple(tests),
    )
    profile._by_header.update({rule.header: rule for rule in profile.fields})
    return profile
