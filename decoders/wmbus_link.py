"""Wireless M-Bus data link layer: block CRCs of frame formats A and B, and the first block.

EN 13757-4 (frame formats A and B; C, M and A fields), as restated with verified examples in
PROTOCOL_NOTES.md §1. A "stripped" frame has its link CRCs removed and L rewritten to count the
bytes after L without CRCs, which is what USB receivers deliver (PROTOCOL_NOTES §1.7).
"""

from __future__ import annotations

from decoders.crc import crc16_en13757
from decoders.manufacturer import decode_id, decode_manufacturer, encode_id, encode_manufacturer
from decoders.telegram import Address
from metergate.errors import ChecksumError, DecodeError, FrameError

FORMAT_A = "A"
FORMAT_B = "B"
FORMAT_NONE = "none"

FIRST_BLOCK = 10  # L C M(2) A(6), PROTOCOL_NOTES §1.1
_BLOCK_A = 16  # format A data blocks after the first
_B_FIRST_DATA = 126  # format B: blocks 1 and 2 carry frame bytes 0..125 under one CRC
_MAX_STRIPPED = 256  # L is one byte
_MAX_STRIPPED_B = 252  # format B: L = stripped length - 1 + 4 CRC bytes <= 255


def _crc_matches(frame: bytes, start: int, end: int) -> bool:
    """DLL block CRCs are sent high byte first (PROTOCOL_NOTES §1.3)."""
    crc = crc16_en13757(frame[start:end])
    return frame[end] == crc >> 8 and frame[end + 1] == crc & 0xFF


def _format_a_size(length: int) -> int:
    """On-air size of a format A frame with this L (PROTOCOL_NOTES §1.4)."""
    rest = length + 1 - FIRST_BLOCK
    blocks = 1 + (rest + _BLOCK_A - 1) // _BLOCK_A
    return length + 1 + 2 * blocks


def _strip_a(frame: bytes) -> tuple[bytes | None, int]:
    """The stripped frame, or None and the offset of the first block whose CRC fails."""
    out = bytearray()
    pos = 0
    size = FIRST_BLOCK
    end = len(frame)
    while pos < end:
        if not _crc_matches(frame, pos, pos + size):
            return None, pos
        out += frame[pos : pos + size]
        pos += size + 2
        size = min(_BLOCK_A, end - pos - 2)
    return bytes(out), 0


def _strip_b(frame: bytes) -> tuple[bytes | None, int]:
    """Format B (PROTOCOL_NOTES §1.5): one CRC over blocks 1 and 2, one over
    block 3 when L > 127. L counts the CRC bytes, so the caller has checked len == L + 1.
    Returns the stripped frame, or None and the offset of the block whose CRC fails."""
    length = frame[0]
    if length <= 127:
        if length < FIRST_BLOCK + 1 or not _crc_matches(frame, 0, length - 1):
            return None, 0
        data = frame[: length - 1]
    else:
        if length < 129 or not _crc_matches(frame, 0, _B_FIRST_DATA):
            return None, 0
        if not _crc_matches(frame, _B_FIRST_DATA + 2, length - 1):
            return None, _B_FIRST_DATA + 2
        data = frame[:_B_FIRST_DATA] + frame[_B_FIRST_DATA + 2 : length - 1]
    return bytes([len(data) - 1]) + data[1:], 0


def strip_crcs(frame: bytes, expect: str | None = None) -> tuple[bytes, str]:
    """The CRC-stripped frame and the format it came in: "A", "B" or "none".

    With `expect` ("A", "B" or "none") only that format is accepted.

    Format A is tried first, then format B, then an already stripped frame (len == L + 1), the
    order wmbusmeters' removeAnyDLLCRCs uses (PROTOCOL_NOTES §1.7). A format B frame with a bad
    CRC is indistinguishable from a stripped one and is returned as "none"; the layers above
    then fail on it. A frame of format A length with a bad block raises ChecksumError with the
    offset of that block.
    """
    frame = bytes(frame)
    if not frame:
        raise FrameError("empty frame", offset=0, data=frame)
    if expect is not None:
        return _strip_expected(frame, expect), expect
    length = frame[0]
    size_a = _format_a_size(length) if length >= FIRST_BLOCK - 1 else -1
    bad_block = 0
    if len(frame) == size_a:
        stripped, bad_block = _strip_a(frame)
        if stripped is not None:
            return stripped, FORMAT_A
    if len(frame) == length + 1:
        stripped_b, _ = _strip_b(frame)
        if stripped_b is not None:
            return stripped_b, FORMAT_B
        return frame, FORMAT_NONE
    if len(frame) == size_a:
        raise ChecksumError(
            f"format A block CRC does not match at offset {bad_block}",
            offset=bad_block,
            data=frame,
        )
    if length + 1 < len(frame) <= 256:
        # More bytes than L announces and no CRC layout fits: real meters get L wrong (corpus,
        # driver qwater), so what arrived is decoded with L set to match, as wmbusmeters does
        # after a warning; junk at the end fails in the record parser with its offset.
        return bytes((len(frame) - 1,)) + frame[1:], FORMAT_NONE
    raise FrameError(
        f"frame of {len(frame)} bytes fits L = {length} neither stripped ({length + 1} bytes)"
        f" nor with format A CRCs ({size_a} bytes)",
        offset=0,
        data=frame,
    )


def _strip_expected(frame: bytes, expect: str) -> bytes:
    length = frame[0]
    if expect == FORMAT_NONE:
        if len(frame) != length + 1:
            raise FrameError(
                f"stripped frame of {len(frame)} bytes with L = {length}", offset=0, data=frame
            )
        return frame
    if expect == FORMAT_A:
        if length < FIRST_BLOCK - 1 or len(frame) != _format_a_size(length):
            raise FrameError(
                f"format A frame of {len(frame)} bytes with L = {length}", offset=0, data=frame
            )
        stripped, bad_block = _strip_a(frame)
        if stripped is None:
            raise ChecksumError(
                f"format A block CRC does not match at offset {bad_block}",
                offset=bad_block,
                data=frame,
            )
        return stripped
    if expect == FORMAT_B:
        if len(frame) != length + 1:
            raise FrameError(
                f"format B frame of {len(frame)} bytes with L = {length}", offset=0, data=frame
            )
        stripped_b, bad_block = _strip_b(frame)
        if stripped_b is None:
            raise ChecksumError(
                f"format B CRC does not match in the block at offset {bad_block}",
                offset=bad_block,
                data=frame,
            )
        return stripped_b
    raise DecodeError(f"link format must be 'A', 'B' or 'none', not {expect!r}")


def _check_stripped(stripped: bytes) -> None:
    if len(stripped) < FIRST_BLOCK or stripped[0] != len(stripped) - 1:
        raise FrameError(
            "a stripped frame needs L = its length - 1 and at least the 10-byte first block",
            offset=0,
            data=stripped,
        )


def add_crcs_a(stripped: bytes) -> bytes:
    """The format A frame: a CRC after the first 10 bytes and after every 16 bytes after them."""
    _check_stripped(stripped)
    out = bytearray()
    pos = 0
    size = FIRST_BLOCK
    while pos < len(stripped):
        block = stripped[pos : pos + size]
        out += block + crc16_en13757(block).to_bytes(2, "big")
        pos += size
        size = _BLOCK_A
    return bytes(out)


def add_crcs_b(stripped: bytes) -> bytes:
    """The format B frame, L rewritten to count the CRC bytes (PROTOCOL_NOTES §1.5)."""
    _check_stripped(stripped)
    if len(stripped) > _MAX_STRIPPED_B:
        raise FrameError(
            f"format B carries at most {_MAX_STRIPPED_B} bytes, not {len(stripped)}",
            offset=0,
            data=stripped,
        )
    crcs = 2 if len(stripped) <= _B_FIRST_DATA else 4
    body = bytes([len(stripped) - 1 + crcs]) + stripped[1:]
    first = body[:_B_FIRST_DATA]
    out = first + crc16_en13757(first).to_bytes(2, "big")
    if crcs == 4:
        third = body[_B_FIRST_DATA:]
        out += third + crc16_en13757(third).to_bytes(2, "big")
    return out


def make_address(manufacturer: str, ident: str, version: int, device_type: int) -> Address:
    """An Address from its printed parts, with the M-field packed from the three letters."""
    check_byte(version, "version")
    check_byte(device_type, "device type")
    encode_id(ident)
    m_raw = encode_manufacturer(manufacturer)
    return Address(decode_manufacturer(m_raw), ident.lower(), version, device_type, m_raw)


def read_link_address(data: bytes, offset: int) -> Address:
    """M(2, LE) ID(4) version type, the order of the DLL, the ELL's M2/A2 and the IVs."""
    if offset + 8 > len(data):
        raise FrameError("address field truncated", offset=offset, data=data)
    m_raw = data[offset] | data[offset + 1] << 8
    return Address(
        manufacturer=decode_manufacturer(m_raw),
        id=decode_id(data[offset + 2 : offset + 6]),
        version=data[offset + 6],
        device_type=data[offset + 7],
        m_raw=m_raw,
    )


def link_address_bytes(address: Address) -> bytes:
    """The 8 bytes M ID version type as sent in the DLL (PROTOCOL_NOTES §1.1)."""
    if not 0 <= address.m_raw <= 0xFFFF:
        raise DecodeError(f"M-field {address.m_raw} does not fit 16 bits")
    check_byte(address.version, "version")
    check_byte(address.device_type, "device type")
    return (
        address.m_raw.to_bytes(2, "little")
        + encode_id(address.id)
        + bytes((address.version, address.device_type))
    )


def check_byte(value: int, name: str) -> None:
    if not 0 <= value <= 0xFF:
        raise DecodeError(f"{name} {value} does not fit one byte")


def parse_dll(stripped: bytes) -> tuple[int, Address]:
    """C-field and the meter address of a stripped frame (PROTOCOL_NOTES §1.1)."""
    _check_stripped(stripped)
    return stripped[1], read_link_address(stripped, 2)


def encode_dll(c_field: int, address: Address, payload: bytes) -> bytes:
    """The stripped frame L C M A payload, L counting everything after itself."""
    check_byte(c_field, "C-field")
    frame = bytes((0, c_field)) + link_address_bytes(address) + payload
    if len(frame) > _MAX_STRIPPED:
        raise FrameError(
            f"a wM-Bus frame holds at most {_MAX_STRIPPED} bytes, not {len(frame)}",
            offset=0,
            data=frame,
        )
    return bytes([len(frame) - 1]) + frame[1:]
