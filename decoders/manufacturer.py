"""Manufacturer codes and the device type (medium) table.

EN 13757-3 §6.5.3 (M-field packing, three letters of 5 bits) and §6.5.4 / Table 3 (device type).
"""

from __future__ import annotations

from metergate.errors import DecodeError

MEDIA: dict[int, str] = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat",
    0x05: "steam",
    0x06: "warm water",
    0x07: "water",
    0x08: "heat cost allocator",
    0x09: "compressed air",
    0x0A: "cooling (outlet)",
    0x0B: "cooling (inlet)",
    0x0C: "heat (inlet)",
    0x0D: "heat/cooling",
    0x0E: "bus/system component",
    0x0F: "unknown",
    0x15: "hot water",
    0x16: "cold water",
    0x17: "dual water",
    0x18: "pressure",
    0x19: "a/d converter",
    0x1A: "smoke detector",
    0x1B: "room sensor",
    0x1C: "gas detector",
    0x20: "breaker",
    0x21: "valve",
    0x25: "customer unit",
    0x28: "waste water",
    0x29: "garbage",
    0x31: "communication controller",
    0x32: "unidirectional repeater",
    0x33: "bidirectional repeater",
    0x36: "radio converter (system side)",
    0x37: "radio converter (meter side)",
}

WATER_DEVICE_TYPES = frozenset({0x06, 0x07, 0x15, 0x16, 0x17, 0x28})


def medium_name(device_type: int) -> str:
    return MEDIA.get(device_type, f"reserved ({device_type:02x})")


def decode_manufacturer(m_field: int) -> str:
    """Three letters from the 16-bit M-field.

    Bit 15 is not part of the letters; some meters set it, so it is ignored here.
    """
    letters = ((m_field >> 10) & 0x1F, (m_field >> 5) & 0x1F, m_field & 0x1F)
    return "".join(chr(64 + v) if 1 <= v <= 26 else "@" for v in letters)


def encode_manufacturer(code: str) -> int:
    if len(code) != 3 or not all("A" <= ch <= "Z" for ch in code):
        raise DecodeError(f"manufacturer code must be three letters A-Z, not {code!r}")
    return ((ord(code[0]) - 64) << 10) | ((ord(code[1]) - 64) << 5) | (ord(code[2]) - 64)


def decode_id(four_bytes: bytes) -> str:
    """The identification number as printed: hex of the bytes in reverse order."""
    return four_bytes[::-1].hex()


def encode_id(ident: str) -> bytes:
    if len(ident) != 8:
        raise DecodeError(f"identification number must have 8 digits, not {ident!r}")
    try:
        return bytes.fromhex(ident)[::-1]
    except ValueError:
        raise DecodeError(f"identification number must be hex digits, not {ident!r}") from None
