"""Table-driven CRC-16 in its reflected (least significant bit first) form.

CRC-16/X-25 (the iM871A's frame check sequence) and CRC-16/MODBUS (RTU frames) are the same
computation with another polynomial and final XOR; each framing module names its own. The
CRC of EN 13757 (wireless M-Bus) runs most significant bit first: decoders.crc.
"""

from __future__ import annotations


def reflected_table(poly: int) -> tuple[int, ...]:
    """The 256 remainders of a reflected CRC-16 with polynomial `poly` (itself reflected)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def reflected_crc16(data: bytes, table: tuple[int, ...], init: int = 0xFFFF) -> int:
    """The register after `data`, before any final XOR."""
    crc = init
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc
