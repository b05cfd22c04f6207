"""CRC-16/EN-13757, the CRC of wireless M-Bus.

EN 13757-4 §9 (DLL block CRCs), ELL payload CRC (§13.2) and compact-frame signatures (OMS vol. 2
annex) all use polynomial 0x3D65, MSB first, init 0, final XOR 0xFFFF; check value 0xC2B7 over
"123456789".
"""

from __future__ import annotations

_POLY = 0x3D65


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _make_table()


def crc16_en13757(data: bytes) -> int:
    """The CRC value; where it is sent high byte first or LE is the caller's business."""
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc ^ 0xFFFF
