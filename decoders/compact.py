"""Compact frames: values without their DIF/VIF bytes (OMS vol. 2 §7.2.4; CI 79, 7B, 73).

A compact payload is: format signature (2 bytes LE, CRC-16/EN-13757 over the concatenated DIF,
DIFE, VIF and VIFE bytes of the full frame), full-frame CRC (2 bytes LE, over the record bytes
of the equivalent full frame) and the data bytes alone. The format is learned from a full frame
of the same meter model or declared in advance by a meter profile.

The full-frame CRC is not checked: real Kamstrup flowIQ compact frames carry the CRC of the last
full frame, whose values differed (corpus, driver kamwater), so the field does not cover this
frame's data. The data length must still match the format exactly.
"""

from __future__ import annotations

from decoders.crc import crc16_en13757
from decoders.datatypes import lvar_length
from decoders.records import read_header
from decoders.telegram import Address
from metergate.errors import DecodeError, FrameError, UnsupportedError

FormatKey = tuple[str, int, int, int]  # manufacturer, version, device type, signature


def format_signature(format_bytes: bytes) -> int:
    return crc16_en13757(format_bytes)


class CompactFormats:
    """The formats this decoder knows, learned or declared, keyed per meter model.

    Keys include manufacturer, version and device type, so that two models whose formats share
    a CRC never mix; any meter of a model can teach the format to all of them.
    """

    def __init__(self) -> None:
        self._formats: dict[FormatKey, bytes] = {}
        self._seen: set[tuple[str, int, int, bytes]] = set()

    def __len__(self) -> int:
        return len(self._formats)

    def learn(self, address: Address, format_bytes: bytes) -> None:
        model = (address.manufacturer, address.version, address.device_type, format_bytes)
        if not format_bytes or model in self._seen:
            return
        self._seen.add(model)
        key = (*model[:3], format_signature(format_bytes))
        self._formats.setdefault(key, format_bytes)

    def declare(self, manufacturer: str, fmt: bytes) -> None:
        """A format a meter profile knows in advance, for any model of that manufacturer."""
        self._formats[(manufacturer, -1, -1, format_signature(fmt))] = fmt

    def lookup(self, address: Address, signature: int) -> bytes | None:
        formats = self._formats
        return formats.get(
            (address.manufacturer, address.version, address.device_type, signature)
        ) or formats.get((address.manufacturer, -1, -1, signature))


def expand_compact(payload: bytes, formats: CompactFormats, address: Address) -> bytes:
    """The full record bytes (what a CI 78 frame would carry) of a compact payload."""
    if len(payload) < 4:
        raise FrameError("compact payload shorter than its two CRCs", offset=0, data=payload)
    signature = payload[0] | payload[1] << 8
    fmt = formats.lookup(address, signature)
    if fmt is None:
        raise UnsupportedError(
            f"compact frame with format signature {signature:04x} of a format not learned yet;"
            " a full frame of this meter model teaches it",
            offset=0,
            data=payload,
        )
    data = payload[4:]
    parts: list[bytes] = []
    fpos = 0
    dpos = 0
    while fpos < len(fmt):
        header = read_header(fmt, fpos)
        if header is None:
            fpos += 1
            continue
        length = header.length
        if length == -2:
            length = len(data) - dpos
        elif length == -1:
            if dpos >= len(data):
                raise FrameError("compact data ends before an LVAR", offset=4 + dpos, data=payload)
            try:  # EN 13757-3 §6.3.3: from C0 on, LVAR is a code, not a byte count
                length = 1 + lvar_length(data[dpos])[0]
            except DecodeError as exc:
                raise FrameError(exc.message, offset=4 + dpos, data=payload) from None
        if dpos + length > len(data):
            raise FrameError("compact data shorter than its format", offset=4 + dpos, data=payload)
        parts.append(fmt[fpos : header.end] + data[dpos : dpos + length])
        fpos = header.end
        dpos += length
    if data[dpos:].strip(b"\x2f"):
        # After decryption (CI 7B) the last block is padded with 2F fillers; anything else is
        # data the format does not account for.
        raise FrameError("compact data longer than its format", offset=4 + dpos, data=payload)
    return b"".join(parts)
