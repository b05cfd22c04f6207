"""Sample frames for the benchmarks and the fuzz run, built with the project's own encoders."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from decoders.afl import Afl
from decoders.ell import Ell
from decoders.manufacturer import encode_manufacturer
from decoders.mbus_link import rsp_ud
from decoders.record_encoder import encode_records
from decoders.telegram import Address, TplHeader
from decoders.tpl import encode_tpl
from decoders.wmbus_seal import seal_wmbus

KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
SND_NR = 0x44


def water_address(ident: str = "12345678", manufacturer: str = "ELS") -> Address:
    return Address(manufacturer, ident, 0x1A, 0x07, encode_manufacturer(manufacturer))


def water_records(total: str = "1234.567") -> bytes:
    """What an OMS water meter typically sends: clock, total, month-end value, flow, errors."""
    return encode_records(
        [
            (bytes.fromhex("046D"), datetime(2026, 10, 31, 23, 45)),
            (bytes.fromhex("0413"), Decimal(total)),
            (bytes.fromhex("426C"), datetime(2026, 9, 30).date()),
            (bytes.fromhex("4413"), Decimal("1200.000")),
            (bytes.fromhex("023B"), Decimal("0.012")),
            (bytes.fromhex("02FD17"), Decimal(0)),
        ]
    )


def plain_frame(total: str = "1234.567") -> bytes:
    tpl = TplHeader(ci=0x7A, access_no=0x21, status=0, config=0)
    return seal_wmbus(SND_NR, water_address(), tpl, water_records(total))


def mode5_frame(total: str = "1234.567") -> bytes:
    tpl = TplHeader(ci=0x7A, access_no=0x22, status=0, config=0x0500)
    return seal_wmbus(SND_NR, water_address("87654321"), tpl, water_records(total), key=KEY)


def mode7_frame() -> bytes:
    tpl = TplHeader(ci=0x7A, access_no=0x23, status=0, config=0x0700, config_ext=0x10)
    afl = Afl(fcl=0x2C00, mcl=0x25, key_info=None, counter=7, length=None, mac=bytes(8))
    return seal_wmbus(SND_NR, water_address("11223344"), tpl, water_records(), key=KEY, afl=afl)


def compact_pair() -> tuple[bytes, bytes]:
    """A full CI 78 frame and the compact CI 79 frame of the same format (Kamstrup style)."""
    address = Address("KAM", "76348799", 0x1B, 0x16, encode_manufacturer("KAM"))
    headers = [bytes.fromhex(h) for h in ("02FF20", "0413", "4413", "615B", "6167")]
    values = [Decimal(113), Decimal("6.408"), Decimal("6.408"), Decimal(127), Decimal(19)]
    full = encode_records(zip(headers, values, strict=True))
    ell = Ell(ci=0x8C, cc=0x20, access_no=0x91)
    full_frame = seal_wmbus(SND_NR, address, TplHeader(ci=0x78), full, ell=ell)
    from decoders.compact import format_signature
    from decoders.crc import crc16_en13757

    signature = format_signature(b"".join(headers))
    data = b"".join(
        encode_records([(h, v)])[len(h) :] for h, v in zip(headers, values, strict=True)
    )
    compact = signature.to_bytes(2, "little") + crc16_en13757(full).to_bytes(2, "little") + data
    compact_frame = seal_wmbus(SND_NR, address, TplHeader(ci=0x79), compact, ell=ell)
    return full_frame, compact_frame


def wired_frame() -> bytes:
    address = Address("GWF", "00182007", 0x35, 0x07, encode_manufacturer("GWF"))
    header = TplHeader(ci=0x72, access_no=0x4C, status=0, config=0, address=address)
    body = encode_tpl(header)[1:] + water_records()
    return rsp_ud(1, 0x72, body)


def sample_frames() -> list[tuple[str, bytes, bytes | None]]:
    full, compact = compact_pair()
    return [
        ("plain", plain_frame(), None),
        ("mode5", mode5_frame(), KEY),
        ("mode7", mode7_frame(), KEY),
        ("full", full, None),
        ("compact", compact, None),
        ("wired", wired_frame(), None),
    ]
