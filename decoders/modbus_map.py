"""Modbus register maps: what one meter model's registers hold, as data, decoded exactly.

A register map (one TOML file per model in decoders/profiles/modbus/) names every field a driver
reads: where it is (table and address), how its 16-bit registers make a number (type, word and
byte order) and what the number means (scale, offset, quantity, unit). It carries its own test
vectors. Parsing takes the file's text: reading files is the caller's business, decoders/ does no
I/O.

Addresses are the PDU addresses sent on the wire, counted from 0 (Modbus Application Protocol
V1.1b3 §4.4), not the 1-based "4:03003"/"40001" register numbers many manuals print: register
4:03003 is holding address 3002.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from fractions import Fraction
from typing import Literal

from decoders.datatypes import decode_real32
from decoders.profile import FLAG_NAMES, FlagRule
from decoders.telegram import DataRecord, RecordSpec
from decoders.toml_table import TomlTable, load_toml
from metergate.errors import DecodeError

# Register count and signedness of each integer type; floats are IEEE 754 binary32/binary64.
_INTEGERS = {"u16": (1, False), "i16": (1, True), "u32": (2, False), "i32": (2, True)}
_INTEGERS |= {"u64": (4, False), "i64": (4, True)}
_FLOATS = {"f32": 2, "f64": 4}
Order = Literal["big", "little"]
TYPES = frozenset(_INTEGERS) | frozenset(_FLOATS)
TABLES = frozenset({"holding", "input"})
ORDERS = frozenset({"big", "little"})
FUNCTIONS = frozenset({"instantaneous", "maximum", "minimum", "error"})
# The base units of DESIGN.md section 2: a profile converts to them with its scale.
UNITS = frozenset(
    {"m3", "Wh", "J", "W", "J/h", "m3/h", "m3/min", "m3/s", "kg", "kg/h", "C", "K", "bar"}
    | {"s", "min", "h", "d", "V", "A", "hca", ""}
)
# Read Holding/Input Registers take a quantity of 1 to 125 (Modbus Application Protocol V1.1b3
# §6.3, §6.4): 250 data bytes are what a response PDU of at most 253 bytes holds (§4.1).
MAX_REGISTERS_PER_READ = 125
_FUNCTION_CODES = {"holding": 3, "input": 4}
# Products and sums of Decimals are exact when the precision is never reached.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
# Scales and offsets stay within these bounds so that exact arithmetic stays small.
_MAX_DIGITS = 30
_MAX_ADJUSTED = 30


def register_count(type_name: str) -> int:
    return _INTEGERS[type_name][0] if type_name in _INTEGERS else _FLOATS[type_name]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterField:
    """One value of a meter: where its registers are and what their number means.

    The value is `number * scale + offset` in `unit`. `word_order` "big" means the register at the
    lowest address holds the most significant word; `byte_order` "big" means each register's
    first byte on the wire is its more significant one (the Modbus default, V1.1b3 §4.2).
    """

    name: str
    address: int
    type: str
    table: str = "holding"
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: Decimal = Decimal(1)
    offset: Decimal = Decimal(0)
    quantity: str
    unit: str
    function: str = "instantaneous"
    storage: int = 0
    tariff: int = 0

    @property
    def count(self) -> int:
        return register_count(self.type)

    @property
    def end(self) -> int:
        """One past the last address the field uses."""
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One Read Holding Registers (03) or Read Input Registers (04) request."""

    table: str
    start: int
    count: int

    @property
    def function_code(self) -> int:
        return _FUNCTION_CODES[self.table]


@dataclass(frozen=True, slots=True)
class RegisterTest:
    """A profile's own test vector: registers in, values (None: not a number) and flags out."""

    source: str
    registers: tuple[tuple[tuple[str, int], int], ...]
    expect: tuple[tuple[str, Decimal | None], ...]
    flags: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """One meter model's registers; `blocks` are the requests that read them, planned once."""

    model: str
    manufacturer: str
    description: str
    unit_id: int  # the default Modbus unit (slave) id; a gateway's configuration may override it
    fields: tuple[RegisterField, ...]
    flags: tuple[FlagRule, ...] = ()  # FlagRule.source names a field holding a bit field
    tests: tuple[RegisterTest, ...] = ()
    blocks: tuple[ReadBlock, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", plan_blocks(self.fields))


def plan_blocks(fields: Iterable[RegisterField]) -> tuple[ReadBlock, ...]:
    """The read requests that fetch every field, as few as the rules below allow.

    Only touching or overlapping ranges merge: a gap may hold addresses the device does not
    implement, and one of those fails the whole request with exception 02, Illegal Data Address
    (V1.1b3 §7). A field is never split across two requests, so its words come from one response
    and cannot tear between two readings of the meter.
    """
    blocks = []
    current: tuple[str, int, int] | None = None
    for item in sorted(fields, key=lambda f: (f.table, f.address)):
        if current is not None:
            table, start, end = current
            if item.table == table and item.address <= end:
                new_end = max(end, item.end)
                if new_end - start <= MAX_REGISTERS_PER_READ:
                    current = (table, start, new_end)
                    continue
            blocks.append(ReadBlock(table, start, end - start))
        current = (item.table, item.address, item.end)
    if current is not None:
        blocks.append(ReadBlock(current[0], current[1], current[2] - current[1]))
    return tuple(blocks)


def decode_registers(
    register_map: RegisterMap, registers: Mapping[tuple[str, int], int]
) -> tuple[DataRecord, ...]:
    """One record per field, in the map's order, from 16-bit words keyed by (table, address).

    A field whose float is NaN or infinite (meters send NaN for "no measurement", e.g. an empty
    pipe) gets the value None; the other fields are unaffected. A missing register is an error
    naming the field: the driver's blocks cover every field, so a gap is a driver fault.
    """
    return tuple(_decode_field(item, registers) for item in register_map.fields)


def _decode_field(item: RegisterField, registers: Mapping[tuple[str, int], int]) -> DataRecord:
    words = []
    for address in range(item.address, item.end):
        word = registers.get((item.table, address))
        if word is None:
            raise DecodeError(f"{item.name}: {item.table} register {address} was not read")
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
            raise DecodeError(f"{item.name}: {item.table} register {address} is {word!r}")
        words.append(word)
    ordered = words if item.word_order == "big" else words[::-1]
    number = b"".join(word.to_bytes(2, item.byte_order) for word in ordered)  # MSB first
    value: Decimal | None
    if item.type in _INTEGERS:
        value = Decimal(int.from_bytes(number, "big", signed=_INTEGERS[item.type][1]))
    elif item.type == "f32":
        value = decode_real32(number[::-1])
    else:
        (double,) = struct.unpack(">d", number)
        value = Decimal(repr(double)) if math.isfinite(double) else None
    if value is not None:
        value = _scaled(value, item.scale, item.offset)
    spec = RecordSpec(  # a Modbus value has no DIF/VIF: the map gives quantity and unit
        dif=b"",
        vif=b"",
        data_field=0,
        function=item.function,
        storage=item.storage,
        tariff=item.tariff,
        subunit=0,
        quantity=item.quantity,
        unit=item.unit,
        name=item.name,
    )
    return DataRecord(spec, value, b"".join(word.to_bytes(2, "big") for word in words))


def _scaled(value: Decimal, scale: Decimal, offset: Decimal) -> Decimal:
    """value * scale + offset, exactly (the default context would round to 28 digits)."""
    if scale != 1:
        value = _EXACT.multiply(value, scale)
    if offset:
        value = _EXACT.add(value, offset)
    return value


def status_flags(register_map: RegisterMap, records: Iterable[DataRecord]) -> tuple[str, ...]:
    """The flags (decoders.profile.FLAG_NAMES) that the map's bit fields set, sorted."""
    words = {
        record.spec.name: int(record.value)
        for record in records
        if record.spec.name and isinstance(record.value, Decimal)
    }
    flags = set()
    for rule in register_map.flags:
        word = words.get(rule.source)
        if word is not None and word >> rule.bit & 1:
            flags.add(rule.flag)
    return tuple(sorted(flags))


def encode_registers(
    register_map: RegisterMap, values: Mapping[str, Decimal]
) -> dict[tuple[str, int], int]:
    """The registers that make `decode_registers` return `values` (for the simulator).

    Fields not named in `values` are left out. An integer field takes exactly the values
    `number * scale + offset` its type can hold; a float field takes the nearest float (NaN and
    infinities included). Anything else is a DecodeError naming the field.
    """
    by_name = {item.name: item for item in register_map.fields}
    registers: dict[tuple[str, int], int] = {}
    for name, value in values.items():
        item = by_name.get(name)
        if item is None:
            raise DecodeError(f"{register_map.model} has no field {name!r}")
        number = _encode_number(item, value)
        words = [
            int.from_bytes(number[i : i + 2], item.byte_order) for i in range(0, len(number), 2)
        ]
        if item.word_order == "little":
            words.reverse()
        for i, word in enumerate(words):
            registers[(item.table, item.address + i)] = word
    return registers


def _encode_number(item: RegisterField, value: Decimal) -> bytes:
    """The field's number, most significant byte first."""
    if not isinstance(value, Decimal):
        raise DecodeError(f"{item.name}: {value!r} is not a Decimal")
    if item.type in _FLOATS and not value.is_finite():
        double = math.nan if value.is_nan() else float(value)
    else:
        ratio = _unscaled(item, value)
        if item.type in _INTEGERS:
            if ratio.denominator != 1:
                raise DecodeError(f"{item.name}: {value} is not a multiple of {item.scale}")
            count, signed = _INTEGERS[item.type]
            try:
                return ratio.numerator.to_bytes(2 * count, "big", signed=signed)
            except OverflowError:
                raise DecodeError(f"{item.name}: {value} does not fit {item.type}") from None
        try:
            double = float(ratio)
        except OverflowError:
            raise DecodeError(f"{item.name}: {value} does not fit {item.type}") from None
        if double == 0 and value.is_signed() and not item.offset:
            double = -0.0
    try:
        return struct.pack(">f" if item.type == "f32" else ">d", double)
    except OverflowError:
        raise DecodeError(f"{item.name}: {value} does not fit {item.type}") from None


def _unscaled(item: RegisterField, value: Decimal) -> Fraction:
    """(value - offset) / scale as an exact fraction."""
    digits = value.as_tuple().digits
    if not value.is_finite() or len(digits) > 400 or (value and abs(value.adjusted()) > 400):
        # Bounds the exact arithmetic; every type's range lies well inside them.
        raise DecodeError(f"{item.name}: {value} does not fit {item.type}")
    return (Fraction(value) - Fraction(item.offset)) / Fraction(item.scale)


# Parsing -----------------------------------------------------------------------------------

_TOP_KEYS = frozenset({"model", "manufacturer", "description", "unit_id", "fields"})
_TOP_KEYS |= {"table", "word_order", "byte_order", "flags", "tests"}
_FIELD_KEYS = frozenset({"name", "address", "type", "table", "word_order", "byte_order"})
_FIELD_KEYS |= {"scale", "offset", "quantity", "unit", "function", "storage", "tariff"}
_TEST_KEYS = frozenset({"source", "holding", "input", "expect", "no_value", "flags"})


def parse_register_map(text: str, source: str) -> RegisterMap:
    """A RegisterMap from the TOML text of a profile file.

    Every problem is a ConfigError with path=source and the key as location (`fields[3].type`),
    or the line of a TOML syntax error.
    """
    doc = load_toml(text, source)
    doc.known(_TOP_KEYS)
    defaults = {
        "table": doc.choice("table", TABLES, "holding"),
        "word_order": doc.choice("word_order", ORDERS, "big"),
        "byte_order": doc.choice("byte_order", ORDERS, "big"),
    }
    field_docs = doc.tables("fields")
    if not field_docs:
        doc.fail("fields", "a register map needs at least one [[fields]] entry")
    fields = [_parse_field(item, defaults) for item in field_docs]
    _check_fields(fields, field_docs)
    by_name = {item.name: item for item in fields}
    return RegisterMap(
        model=doc.text("model"),
        manufacturer=doc.text("manufacturer"),
        description=doc.text("description", ""),
        unit_id=doc.integer("unit_id", 0, 255, 1),
        fields=tuple(fields),
        flags=tuple(_parse_flag(item, by_name) for item in doc.tables("flags")),
        tests=tuple(_parse_test(item, list(by_name)) for item in doc.tables("tests")),
    )


def _parse_field(doc: TomlTable, defaults: dict[str, str]) -> RegisterField:
    doc.known(_FIELD_KEYS)
    type_name = doc.choice("type", TYPES)
    address = doc.integer("address", 0, 0xFFFF)
    if address + register_count(type_name) > 0x10000:
        doc.fail("address", f"a {type_name} at {address} runs past register 65535")
    unit = doc.text("unit")
    if unit not in UNITS:
        doc.fail("unit", f"unknown unit {unit!r} (the base units of DESIGN.md section 2)")
    scale = _factor(doc, "scale", "1")
    if not scale:
        doc.fail("scale", "scale must not be 0")
    return RegisterField(
        name=doc.name("name"),
        address=address,
        type=type_name,
        table=doc.choice("table", TABLES, defaults["table"]),
        word_order=_order(doc.choice("word_order", ORDERS, defaults["word_order"])),
        byte_order=_order(doc.choice("byte_order", ORDERS, defaults["byte_order"])),
        scale=scale,
        offset=_factor(doc, "offset", "0"),
        quantity=doc.name("quantity"),
        unit=unit,
        function=doc.choice("function", FUNCTIONS, "instantaneous"),
        storage=doc.integer("storage", 0, 2**32, 0),
        tariff=doc.integer("tariff", 0, 2**16, 0),
    )


def _factor(doc: TomlTable, key: str, default: str) -> Decimal:
    number = doc.decimal(key, default)
    digits = len(number.as_tuple().digits)
    if digits > _MAX_DIGITS or (number and abs(number.adjusted()) > _MAX_ADJUSTED):
        doc.fail(key, f"{key} needs at most {_MAX_DIGITS} digits and 1e-30 <= |{key}| < 1e31")
    return number


def _order(value: str) -> Order:
    return "big" if value == "big" else "little"


def _check_fields(fields: list[RegisterField], docs: list[TomlTable]) -> None:
    """No two fields share a name, a register, or a reading's identity (DESIGN.md section 4)."""
    for j, (item, doc) in enumerate(zip(fields, docs, strict=True)):
        for other in fields[:j]:
            if item.name == other.name:
                doc.fail("name", f"duplicate name {item.name!r}")
            overlap = max(item.address, other.address) < min(item.end, other.end)
            if item.table == other.table and overlap:
                doc.fail("address", f"overlaps the registers of {other.name!r}")
            if _identity(item) == _identity(other):
                doc.fail("quantity", f"same quantity, storage, tariff, function as {other.name!r}")


def _identity(item: RegisterField) -> tuple[str, int, int, str]:
    return item.quantity, item.storage, item.tariff, item.function


def _parse_flag(doc: TomlTable, fields: dict[str, RegisterField]) -> FlagRule:
    doc.known(frozenset({"field", "bit", "flag"}))
    name = doc.text("field")
    target = fields.get(name)
    if target is None or target.type not in {"u16", "u32", "u64"}:
        doc.fail("field", f"{name!r} is not an unsigned integer field")
    if target.scale != 1 or target.offset:
        doc.fail("field", f"{name!r} is scaled or offset, not a bit field")
    bit = doc.integer("bit", 0, 16 * target.count - 1)
    flag = doc.choice("flag", FLAG_NAMES)
    return FlagRule(name, bit, flag)


def _parse_test(doc: TomlTable, names: list[str]) -> RegisterTest:
    doc.known(_TEST_KEYS)
    registers: dict[tuple[str, int], int] = {}
    for table in ("holding", "input"):
        runs = doc.table(table)
        for key, run in runs.doc.items():
            try:
                start = int(key, 0)
            except ValueError:
                runs.fail(key, f"{key!r} is not a register address")
            if not isinstance(run, list) or not all(
                isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 0xFFFF for w in run
            ):
                runs.fail(key, "must be a list of 16-bit register values")
            if not 0 <= start <= 0x10000 - len(run):
                runs.fail(key, "addresses must lie in 0..65535")
            for i, word in enumerate(run):
                if (table, start + i) in registers:
                    runs.fail(key, f"{table} register {start + i} is given twice")
                registers[(table, start + i)] = word
    expected = doc.table("expect")
    expect: dict[str, Decimal | None] = {key: expected.decimal(key) for key in expected.doc}
    for i, value in enumerate(doc.array("no_value")):
        if not isinstance(value, str) or value in expect:
            doc.fail(f"no_value[{i}]", f"{value!r} is not a field left to expect")
        expect[value] = None
    for key in expect:
        if key not in names:
            expected.fail(key, f"no field named {key!r}")
    for name in names:
        if name not in expect:
            doc.fail("expect", f"no expected value for {name!r}")
    flags = doc.get("flags", None)
    if flags is not None and (
        not isinstance(flags, list)
        or not all(isinstance(flag, str) and flag in FLAG_NAMES for flag in flags)
    ):
        doc.fail("flags", "must be a list of flag names")
    return RegisterTest(
        source=doc.text("source"),
        registers=tuple(sorted(registers.items())),
        expect=tuple((name, expect[name]) for name in names),
        flags=None if flags is None else tuple(sorted(flags)),
    )
