"""Data records of the application layer: DIF, DIFE, VIF, VIFE and data (EN 13757-3 §6).

A meter sends the same record layout in every telegram, so the layout (every byte that is not
data) is parsed once and cached; later telegrams of that layout only unpack their values. The
cache is keyed by payload length and verified against all non-data bytes, so a hit gives exactly
the result a fresh parse would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Context, Decimal
from operator import itemgetter

from decoders import datatypes as dt
from decoders.telegram import DataRecord, RecordSpec, RecordValue
from decoders.vif import VifMeaning, interpret_vif
from metergate.errors import DecodeError, FrameError

FUNCTIONS = ("instantaneous", "maximum", "minimum", "error")

# EN 13757-3 Table 4: data field (DIF bits 3-0) -> number of data bytes; D (LVAR) is variable.
DATA_LENGTHS = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, -1, 6, 0)
_BCD_FIELDS = frozenset({0x9, 0xA, 0xB, 0xC, 0xE})
_INT_FIELDS = frozenset({0x1, 0x2, 0x3, 0x4, 0x6, 0x7})

DIF_MANUFACTURER_DATA = 0x0F
DIF_MORE_RECORDS_FOLLOW = 0x1F
DIF_IDLE_FILLER = 0x2F
DIF_GLOBAL_READOUT = 0x7F
MAX_EXTENSIONS = 10  # EN 13757-3 §6.3.1 and §6.4.1: at most 10 DIFEs and 10 VIFEs
VIF_FIRST_EXTENSION = 0xFB
VIF_SECOND_EXTENSION = 0xFD
# A factor (US gallons, cubic feet) times a 20-digit value needs more than the default 28 digits.
EXACT = Context(prec=64)

Converter = Callable[[bytes], RecordValue]


@dataclass(frozen=True, slots=True)
class RecordBlock:
    """The records of one payload, and the facts the layer above needs."""

    records: tuple[DataRecord, ...]
    more_records_follow: bool
    format_bytes: bytes  # DIF/VIF bytes of every record, in order: the compact-frame format


@dataclass(frozen=True, slots=True)
class _Step:
    spec: RecordSpec
    start: int
    end: int
    convert: Converter


@dataclass(frozen=True, slots=True)
class _Layout:
    steps: tuple[_Step, ...]
    check: Callable[[bytes], object]
    expected: object
    more_records_follow: bool
    format_bytes: bytes


@dataclass(frozen=True, slots=True)
class Header:
    """One record's DIF/VIF part, as read from a payload or a compact-frame format."""

    spec: RecordSpec
    meaning: VifMeaning
    length: int  # data bytes that follow; -1 for LVAR, -2 for "to the end" (DIF 0F/1F)
    convert: Converter
    end: int  # offset just after the header


def _scaled(exponent: int, factor: Decimal | None) -> Callable[[Decimal], Decimal]:
    if factor is not None:
        return lambda value: EXACT.multiply(value.scaleb(exponent), factor)
    if exponent:
        return lambda value: value.scaleb(exponent)
    return lambda value: value


def _number_converter(field: int, meaning: VifMeaning) -> Converter:
    exponent, factor = meaning.exponent, meaning.factor
    if field in _INT_FIELDS:
        if factor is None:
            return lambda raw: dt.decode_int(raw, exponent)
        scale = _scaled(exponent, factor)
        return lambda raw: scale(dt.decode_int(raw))
    if field in _BCD_FIELDS:
        if factor is None:
            return lambda raw: dt.decode_bcd(raw, exponent)
        scale = _scaled(exponent, factor)

        def bcd(raw: bytes) -> RecordValue:
            value = dt.decode_bcd(raw)
            return None if value is None else scale(value)

        return bcd
    if field == 0x5:
        scale = _scaled(exponent, factor)

        def real(raw: bytes) -> RecordValue:
            value = dt.decode_real32(raw)
            return None if value is None else scale(value)

        return real
    return _no_value


def _no_value(raw: bytes) -> RecordValue:
    return None


def _hex(raw: bytes) -> RecordValue:
    return raw.hex()


def _unsigned(raw: bytes) -> RecordValue:
    return Decimal(dt.decode_uint(raw))


def _time_j(raw: bytes) -> RecordValue:
    """Type J as ISO text ("23:10:05"): a time of day is not one of the RecordValue types."""
    moment = dt.decode_time_j(raw)
    return None if moment is None else moment.isoformat()


_DATE_CONVERTERS: dict[tuple[str, int], Converter] = {
    ("date", 0x2): dt.decode_date_g,
    ("date", 0x4): dt.decode_datetime_f,
    ("date", 0x6): dt.decode_datetime_i,
    ("datetime", 0x2): dt.decode_date_g,
    ("datetime", 0x3): _time_j,
    ("datetime", 0x4): dt.decode_datetime_f,
    ("datetime", 0x6): dt.decode_datetime_i,
    ("time", 0x3): _time_j,
    ("time", 0x2): _unsigned,
}


def _converter(field: int, meaning: VifMeaning) -> Converter:
    kind = meaning.kind
    if DATA_LENGTHS[field] == 0:
        return _no_value
    if kind in ("date", "datetime", "time"):
        return _DATE_CONVERTERS.get((kind, field), _hex)
    if kind == "dst":
        return dt.decode_dst_k
    if kind == "binary":  # bit fields and manufacturer-specific data: not scaled, not signed
        if field in _INT_FIELDS:
            return _unsigned
        if field in _BCD_FIELDS:
            return dt.decode_bcd
        return _hex
    return _number_converter(field, meaning)


def _lvar_value(lvar: int, raw: bytes, meaning: VifMeaning) -> RecordValue:
    """Decode the data of an LVAR record (EN 13757-3 §6.3.3)."""
    _, content = dt.lvar_length(lvar)
    if meaning.kind == "binary":
        return raw.hex()  # bit fields or the maker's own bytes, whatever the LVAR says they are
    if content == "text":
        return dt.decode_text(raw)
    if content in ("bcd", "negative_bcd") and raw:
        value = dt.decode_bcd(raw)
        if value is None:
            return None
        return _scaled(meaning.exponent, meaning.factor)(value if content == "bcd" else -value)
    return raw.hex()


def read_header(data: bytes, pos: int) -> Header | None:
    """Read one record header at `pos`; None for an idle filler byte (DIF 2F).

    The global-readout DIF 7F and the reserved DIFs 3F-6F carry no length we could trust.
    """
    start = pos
    end = len(data)
    if pos >= end:
        raise FrameError("record header expected past the end", offset=pos, data=data)
    dif = data[pos]
    pos += 1
    if dif == DIF_IDLE_FILLER:
        return None
    if dif & 0x0F == 0x0F:
        # 0F/1F: manufacturer data to the end. The reserved special DIFs (3F-6F, and any with
        # the extension bit) give no length to skip by, so what follows is kept, unparsed, as
        # one record rather than failing the records before it.
        quantity = (
            "manufacturer_data"
            if dif in (DIF_MANUFACTURER_DATA, DIF_MORE_RECORDS_FOLLOW)
            else f"reserved_dif_{dif:02x}_data"
        )
        meaning = VifMeaning(quantity, "", kind="binary")
        spec = RecordSpec(
            dif=bytes((dif,)),
            vif=b"",
            data_field=0xF,
            function="instantaneous",
            storage=0,
            tariff=0,
            subunit=0,
            quantity=meaning.quantity,
            unit=meaning.unit,
        )
        return Header(spec, meaning, -2, _hex, pos)
    storage = (dif >> 6) & 0x01
    tariff = 0
    subunit = 0
    extension = dif & 0x80
    count = 0
    while extension:
        if pos >= end:
            raise _TruncatedError("record ends inside its DIFE chain", offset=pos, data=data)
        if count == MAX_EXTENSIONS:
            raise FrameError("more than 10 DIFEs", offset=pos, data=data)
        dife = data[pos]
        pos += 1
        # EN 13757-3 §6.3.2: each DIFE adds the next higher bits of storage, tariff, subunit.
        storage |= (dife & 0x0F) << (1 + 4 * count)
        tariff |= ((dife >> 4) & 0x03) << (2 * count)
        subunit |= ((dife >> 6) & 0x01) << count
        extension = dife & 0x80
        count += 1
    dif_end = pos
    if pos >= end:
        raise _TruncatedError("record has a DIF but no VIF", offset=pos, data=data)
    vif = data[pos]
    pos += 1
    text_unit: str | None = None
    if vif & 0x7F == 0x7C:
        # Plain-text unit: length and text follow the VIF directly, before any VIFE.
        if pos >= end:
            raise _TruncatedError("plain-text VIF without its length", offset=pos, data=data)
        text_length = data[pos]
        if pos + 1 + text_length > end:
            raise _TruncatedError("plain-text unit runs past the payload", offset=pos, data=data)
        text_unit = dt.decode_text(data[pos + 1 : pos + 1 + text_length])
        pos += 1 + text_length
    vife_start = pos
    extension = vif & 0x80
    # The VIFE that picks the entry of the FB/FD table is not one of the 10 combinable VIFEs.
    extended = vif in (VIF_FIRST_EXTENSION, VIF_SECOND_EXTENSION)
    limit = MAX_EXTENSIONS + 1 if extended else MAX_EXTENSIONS
    count = 0
    while extension:
        if pos >= end:
            raise _TruncatedError("record ends inside its VIFE chain", offset=pos, data=data)
        if count == limit:
            raise FrameError("more than 10 VIFEs", offset=pos, data=data)
        extension = data[pos] & 0x80
        pos += 1
        count += 1
    meaning = interpret_vif(vif, data[vife_start:pos], text_unit)
    field = dif & 0x0F
    spec = RecordSpec(
        dif=data[start:dif_end],
        vif=data[dif_end:pos],
        data_field=field,
        function=FUNCTIONS[(dif >> 4) & 0x03],
        storage=storage,
        tariff=tariff,
        subunit=subunit,
        quantity=meaning.quantity,
        unit=meaning.unit,
        exponent=meaning.exponent,
        error_code=meaning.error_code,
    )
    return Header(spec, meaning, DATA_LENGTHS[field], _converter(field, meaning), pos)


class _TruncatedError(FrameError):
    """The payload ends inside a record."""


# What a payload ends with when its last record is cut short: real meters pad or append bytes
# after their records (a CRC left in, a stray filler; corpus drivers amiplus, qcaloric, qwater).
# The complete records before it stand; the tail is kept, as data, rather than losing them all.
_TAIL_SPEC = RecordSpec(
    dif=b"",
    vif=b"",
    data_field=0xF,
    function="instantaneous",
    storage=0,
    tariff=0,
    subunit=0,
    quantity="unparsed_tail",
    unit="",
)


def _parse(data: bytes) -> tuple[RecordBlock, _Layout | None]:
    records: list[DataRecord] = []
    steps: list[_Step] = []
    header_positions: list[int] = []
    formats: list[bytes] = []
    cacheable = True
    more = False
    pos = 0
    end = len(data)
    while pos < end:
        try:
            header = read_header(data, pos)
            if header is not None and header.length >= 0 and header.end + header.length > end:
                raise _TruncatedError("record runs past the payload", offset=header.end, data=data)
        except _TruncatedError:
            if not records:
                raise
            records.append(DataRecord(_TAIL_SPEC, data[pos:].hex(), data[pos:]))
            cacheable = False
            break
        if header is None:
            header_positions.append(pos)
            pos += 1
            continue
        header_positions.extend(range(pos, header.end))
        spec = header.spec
        formats.append(spec.dif + spec.vif)
        pos = header.end
        if header.length == -2:
            more = spec.dif[0] == DIF_MORE_RECORDS_FOLLOW
            raw = data[pos:]
            records.append(DataRecord(spec, raw.hex(), raw))
            steps.append(_Step(spec, pos, end, _hex))
            break
        if header.length == -1:
            if pos >= end:
                raise FrameError("LVAR byte missing", offset=pos, data=data)
            try:
                length, _ = dt.lvar_length(data[pos])
            except DecodeError as exc:
                raise FrameError(exc.message, offset=pos, data=data) from None
            if pos + 1 + length > end:
                raise FrameError(
                    "variable-length data runs past the payload", offset=pos, data=data
                )
            raw = data[pos + 1 : pos + 1 + length]
            records.append(DataRecord(spec, _lvar_value(data[pos], raw, header.meaning), raw))
            cacheable = False
            pos += 1 + length
            continue
        stop = pos + header.length
        if stop > end:
            raise FrameError(
                f"record {spec.dif.hex()}{spec.vif.hex()} needs {header.length} data bytes",
                offset=pos,
                data=data,
            )
        raw = data[pos:stop]
        records.append(DataRecord(spec, header.convert(raw), raw))
        steps.append(_Step(spec, pos, stop, header.convert))
        pos = stop
    block = RecordBlock(tuple(records), more, b"".join(formats))
    if not cacheable:
        return block, None
    if len(header_positions) == 1:
        header_positions.append(header_positions[0])
    check = itemgetter(*header_positions) if header_positions else (lambda _: ())
    layout = _Layout(tuple(steps), check, check(data), more, block.format_bytes)
    return block, layout


_CACHE: dict[int, list[_Layout]] = {}
_CACHE_LIMIT = 2048
_cached_layouts = 0


def parse_records(data: bytes) -> RecordBlock:
    """All records of an application-layer payload (after the TPL header or decryption)."""
    global _cached_layouts  # noqa: PLW0603 - a bounded memo of a pure function
    candidates = _CACHE.get(len(data))
    if candidates:
        for known in candidates:
            if known.check(data) == known.expected:
                return RecordBlock(
                    tuple(
                        DataRecord(step.spec, step.convert(raw), raw)
                        for step in known.steps
                        for raw in (data[step.start : step.end],)
                    ),
                    known.more_records_follow,
                    known.format_bytes,
                )
    try:
        block, layout = _parse(data)
    except IndexError:
        raise FrameError("payload ends inside a record", offset=len(data), data=data) from None
    if layout is not None:
        if _cached_layouts >= _CACHE_LIMIT:
            _CACHE.clear()
            _cached_layouts = 0
        _CACHE.setdefault(len(data), []).append(layout)
        _cached_layouts += 1
    return block
