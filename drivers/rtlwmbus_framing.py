"""Text-line sources of wM-Bus frames: rtl_wmbus output and plain hex replay files.

Pure and sans-I/O: the driver feeds the bytes it read from rtl_wmbus's stdout (or a file) and
gets frames back; the simulator writes lines made by the encoders here.

rtl_wmbus prints one line per frame (PROTOCOL_NOTES §9.3; xaelsouth/rtl-wmbus README and
`t1_c1_packet_decoder.h`):
`MODE;CRC_OK;3OUTOF6OK;TIMESTAMP;PACKET_RSSI;CURRENT_RSSI;LINK_LAYER_IDENT_NO;0xDATAGRAM`,
the datagram already CRC-stripped, with L rewritten to the format A meaning for C1 format B.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from decoders.wmbus_link import strip_crcs
from drivers.received import ReceivedFrame, check_stripped
from metergate.errors import ChecksumError, DecodeError, FrameError, UnsupportedError

MODES = ("T1", "C1", "S1")
FIELDS = 8
# A stripped frame is at most 256 bytes, 512 hex digits; anything near 4 KiB without a newline
# is not a line of either kind.
MAX_LINE = 4096

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?", re.ASCII)


def _hex_bytes(text: str, what: str) -> bytes:
    digits = "".join(text.split())
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise FrameError(f"{what} is not hex: {text[:40]!r}", offset=0) from None


def _device_time(text: str) -> float | None:
    """POSIX seconds of an rtl_wmbus timestamp, which it prints from gmtime() (UTC)."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    micros = int((match[7] or "0").ljust(6, "0"))
    return ((when - _EPOCH) // timedelta(microseconds=1) + micros) / 1_000_000


def _timestamp_text(device_time: int | float) -> str:
    # Through the shortest repr, so that a time of whole milliseconds prints exactly even where
    # device_time * 10**6 is beyond float precision.
    try:
        micros = round(Decimal(repr(device_time)) * 1_000_000)
        when = _EPOCH + timedelta(microseconds=micros)
    except (ArithmeticError, ValueError):
        raise FrameError(f"device time {device_time} is out of range") from None
    fraction = f"{when.microsecond // 1000:03d}"
    if when.microsecond % 1000:
        fraction = f"{when.microsecond:06d}"
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
        f" {when.hour:02d}:{when.minute:02d}:{when.second:02d}.{fraction}"
    )


def parse_rtlwmbus_line(line: str) -> ReceivedFrame:
    """The frame of one rtl_wmbus line (without its line end).

    Raises ChecksumError when rtl_wmbus says the CRC (or, for T1, the 3-out-of-6 decoding)
    failed, UnsupportedError for a mode other than T1, C1 and S1, FrameError for anything else
    that is not such a line. Keeping only good T1/C1/S1 lines is what wmbusmeters does.
    """
    fields = line.split(";")
    if len(fields) != FIELDS:
        raise FrameError(f"{len(fields)} fields, not {FIELDS}: {line[:40]!r}", offset=0)
    mode, crc_ok, three_of_six_ok, timestamp = fields[:4]
    if mode not in MODES:
        raise UnsupportedError(f"mode {mode[:10]!r} is not one of {', '.join(MODES)}", offset=0)
    if crc_ok not in ("0", "1") or three_of_six_ok not in ("0", "1"):
        raise FrameError(f"CRC_OK {crc_ok[:4]!r} and 3OUTOF6OK {three_of_six_ok[:4]!r}")
    if crc_ok != "1":
        raise ChecksumError(f"rtl_wmbus reports a {mode} frame with a bad CRC")
    if mode == "T1" and three_of_six_ok != "1":
        raise ChecksumError("rtl_wmbus reports a T1 frame with a bad 3-out-of-6 code")
    datagram = fields[7].strip()
    if datagram[:2] not in ("0x", "0X"):
        raise FrameError(f"datagram without 0x: {datagram[:20]!r}")
    frame = _hex_bytes(datagram, "datagram")
    check_stripped(frame)
    return ReceivedFrame(frame, None, _device_time(timestamp), mode)


def parse_hex_line(line: str, link_format: str | None = None) -> ReceivedFrame | None:
    """The frame of one replay line, or None for a blank line or a `#` comment.

    The hex may have a `0x` prefix and whitespace anywhere. Link CRCs are removed when present
    (`strip_crcs`; `link_format` "A", "B" or "none" names the form instead of detecting it).
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    stripped, _ = strip_crcs(_hex_bytes(text, "line"), link_format)
    check_stripped(stripped)
    return ReceivedFrame(stripped, None, None, None)


class _LineFramer:
    """Splits a byte stream into lines (LF or CRLF), keeping a partial last line.

    Counters: `frames` delivered, `skipped_lines` (non-empty lines that gave no frame),
    `bad_checksums` (those of them the source marked as failing a check), `discarded_bytes`
    (the bytes of skipped lines and of overlong partial lines).
    """

    def __init__(self, parse: Callable[[str], ReceivedFrame | None], max_line: int) -> None:
        self._parse = parse
        self.max_line = max_line
        self._buffer = bytearray()
        self._overlong = False
        self.frames = 0
        self.skipped_lines = 0
        self.bad_checksums = 0
        self.discarded_bytes = 0

    def feed(self, data: bytes) -> list[ReceivedFrame]:
        buf = self._buffer
        buf += data
        out: list[ReceivedFrame] = []
        pos = 0
        while (end := buf.find(b"\n", pos)) >= 0:
            line = bytes(buf[pos:end])
            size = end + 1 - pos
            pos = end + 1
            if self._overlong:
                # The tail of a line already dropped for its length.
                self._overlong = False
                self.discarded_bytes += size
                continue
            try:
                frame = self._parse(line.rstrip(b"\r").decode("ascii"))
            except (UnicodeDecodeError, DecodeError) as exc:
                self.skipped_lines += 1
                self.discarded_bytes += size
                self.bad_checksums += isinstance(exc, ChecksumError)
                continue
            if frame is not None:
                out.append(frame)
                self.frames += 1
        if len(buf) - pos > self.max_line:
            self.discarded_bytes += len(buf) - pos
            self._overlong = True
            pos = len(buf)
        del buf[:pos]
        return out


def _parse_rtlwmbus(line: str) -> ReceivedFrame | None:
    return parse_rtlwmbus_line(line) if line.strip() else None


class RtlWmbusFramer(_LineFramer):
    """rtl_wmbus stdout: good T1/C1/S1 lines become frames, the rest is counted and skipped."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        super().__init__(_parse_rtlwmbus, max_line)


class HexLineFramer(_LineFramer):
    """Replay files: one hex frame per line, blank lines and `#` comments ignored."""

    def __init__(self, link_format: str | None = None, max_line: int = MAX_LINE) -> None:
        super().__init__(lambda line: parse_hex_line(line, link_format), max_line)
        self.link_format = link_format


def encode_rtlwmbus_line(
    frame: bytes,
    *,
    mode: str = "T1",
    crc_ok: bool = True,
    three_out_of_six_ok: bool = True,
    device_time: int | float = 0.0,
    packet_rssi: int = 0,
    current_rssi: int = 0,
) -> bytes:
    """One rtl_wmbus line, LF-terminated, as rtl_wmbus prints it (hex in lower case).

    LINK_LAYER_IDENT_NO is the frame's bytes 4-7 as a little-endian number in upper-case hex,
    which is how rtl_wmbus derives it (`get_serial`).
    """
    check_stripped(frame)
    if mode not in MODES:
        raise UnsupportedError(f"rtl_wmbus prints only {', '.join(MODES)}, not {mode!r}")
    if packet_rssi < 0 or current_rssi < 0:
        raise FrameError("rtl_wmbus prints its levels unsigned")
    ident = int.from_bytes(frame[4:8], "little")
    fields = (
        mode,
        "1" if crc_ok else "0",
        "1" if three_out_of_six_ok else "0",
        _timestamp_text(device_time),
        str(packet_rssi),
        str(current_rssi),
        f"{ident:08X}",
        "0x" + frame.hex(),
    )
    return (";".join(fields) + "\n").encode("ascii")


def encode_hex_line(frame: bytes) -> bytes:
    """One replay line: the frame in upper-case hex, LF-terminated."""
    if not frame:
        raise FrameError("empty frame", offset=0)
    return frame.hex().upper().encode("ascii") + b"\n"
