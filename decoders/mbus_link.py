"""Wired M-Bus data link layer: frames, the master's requests, secondary addressing.

EN 13757-2 takes its frame formats from EN 60870-5-2 (FT 1.2): the single character `E5`, the
short frame `10 C A CS 16`, and the control and long frames `68 L L 68 C A CI [data] CS 16`.
Byte-level facts and verified examples: PROTOCOL_NOTES.md §8 (CI values: §2.1). Sections of the
standards are cited by name; their clause numbers were not checked against the texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from decoders.manufacturer import decode_id
from metergate.errors import ChecksumError, DecodeError, FrameError

# EN 60870-5-2 FT 1.2 as used by EN 13757-2 (PROTOCOL_NOTES §8.1).
ACK = 0xE5
START_SHORT = 0x10
START_LONG = 0x68
STOP = 0x16
MAX_DATA = 252  # L is one byte and counts C, A and CI too

# EN 13757-2, C field (PROTOCOL_NOTES §8.2). Master to slave: PRM, FCB, FCV, function.
C_PRM = 0x40
C_FCB = 0x20
C_FCV = 0x10
C_SND_NKE = 0x40
C_SND_UD = 0x53
C_REQ_UD1 = 0x5A
C_REQ_UD2 = 0x5B
# Slave to master: RSP_UD with ACD (access demand) and DFC (data flow control).
C_RSP_UD = 0x08
C_ACD = 0x20
C_DFC = 0x10

# EN 13757-2, A field (PROTOCOL_NOTES §8.4).
ADDRESS_UNCONFIGURED = 0
ADDRESS_NETWORK_LAYER = 253  # the slave selected by secondary address
ADDRESS_BROADCAST_REPLY = 254  # every slave answers: point-to-point only
ADDRESS_BROADCAST = 255  # every slave listens, none answers

# EN 13757-3, CI field, master to slave (PROTOCOL_NOTES §2.1).
CI_APPLICATION_RESET = 0x50
CI_DATA_SEND = 0x51
CI_SELECT_SECONDARY = 0x52
CI_SET_BAUD_RATE = 0xB8  # B8..BF: 300 .. 38400 Bd
BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)

_START_BYTES = re.compile(b"[\xe5\x10\x68]")


def _check_bytes(**fields: int) -> None:
    for name, value in fields.items():
        if not 0 <= value <= 0xFF:
            raise DecodeError(f"{name} must be a byte (0-255), not {value}")


@dataclass(frozen=True, slots=True)
class Ack:
    """The single character `E5`: a slave's acknowledgement."""


@dataclass(frozen=True, slots=True)
class ShortFrame:
    c: int
    a: int

    def __post_init__(self) -> None:
        _check_bytes(C=self.c, A=self.a)


@dataclass(frozen=True, slots=True)
class ControlFrame:
    """The long frame format with L = 3: C, A and CI without data."""

    c: int
    a: int
    ci: int

    def __post_init__(self) -> None:
        _check_bytes(C=self.c, A=self.a, CI=self.ci)


@dataclass(frozen=True, slots=True)
class LongFrame:
    """`data` is everything after CI and before the checksum: 1 to 252 bytes."""

    c: int
    a: int
    ci: int
    data: bytes

    def __post_init__(self) -> None:
        _check_bytes(C=self.c, A=self.a, CI=self.ci)
        if not 1 <= len(self.data) <= MAX_DATA:
            raise DecodeError(
                f"a long frame carries 1 to {MAX_DATA} data bytes, not {len(self.data)}"
                " (without data it is a ControlFrame)"
            )


Frame = Ack | ShortFrame | ControlFrame | LongFrame


def frame_length(frame: Frame) -> int:
    if isinstance(frame, Ack):
        return 1
    if isinstance(frame, ShortFrame):
        return 5
    if isinstance(frame, ControlFrame):
        return 9
    return 9 + len(frame.data)


def _examine(buf: bytes | bytearray, pos: int) -> Frame | int | DecodeError:
    """What starts at `buf[pos]`: a valid frame, the total length needed when the bytes so far
    are a valid beginning, or the error that rules a frame out (offsets relative to `pos`)."""
    available = len(buf) - pos
    start = buf[pos]
    if start == ACK:
        return Ack()
    if start == START_SHORT:
        if available < 5:
            return 5
        if buf[pos + 4] != STOP:
            return FrameError(f"stop byte is {buf[pos + 4]:02x}, not 16", offset=4)
        c, a = buf[pos + 1], buf[pos + 2]
        if buf[pos + 3] != (c + a) & 0xFF:
            return ChecksumError(
                f"checksum is {buf[pos + 3]:02x}, C + A gives {(c + a) & 0xFF:02x}", offset=3
            )
        return ShortFrame(c, a)
    if start != START_LONG:
        return FrameError(f"{start:02x} starts no M-Bus frame (E5, 10 or 68)", offset=0)
    if available < 2:
        return 4
    length = buf[pos + 1]
    if length < 3:
        return FrameError(f"L = {length}: C, A and CI alone need 3", offset=1)
    if available < 3:
        return 4
    if buf[pos + 2] != length:
        return FrameError(f"L fields differ: {length:02x} and {buf[pos + 2]:02x}", offset=2)
    if available < 4:
        return 4
    if buf[pos + 3] != START_LONG:
        return FrameError(f"second start byte is {buf[pos + 3]:02x}, not 68", offset=3)
    total = length + 6
    if available < total:
        return total
    if buf[pos + total - 1] != STOP:
        return FrameError(f"stop byte is {buf[pos + total - 1]:02x}, not 16", offset=total - 1)
    checksum = sum(buf[pos + 4 : pos + total - 2]) & 0xFF
    if buf[pos + total - 2] != checksum:
        return ChecksumError(
            f"checksum is {buf[pos + total - 2]:02x}, the bytes from C give {checksum:02x}",
            offset=total - 2,
        )
    c, a, ci = buf[pos + 4], buf[pos + 5], buf[pos + 6]
    if length == 3:
        return ControlFrame(c, a, ci)
    return LongFrame(c, a, ci, bytes(buf[pos + 7 : pos + total - 2]))


def parse_frame(data: bytes) -> Frame:
    """Exactly one frame: anything missing or left over is a FrameError."""
    if not data:
        raise FrameError("no bytes", offset=0, data=data)
    result = _examine(data, 0)
    if isinstance(result, DecodeError):
        result.data = data
        raise result
    if isinstance(result, int):
        raise FrameError(
            f"truncated: {len(data)} bytes of a frame of {result} or more",
            offset=len(data),
            data=data,
        )
    end = frame_length(result)
    if end != len(data):
        raise FrameError(f"{len(data) - end} bytes after the frame", offset=end, data=data)
    return result


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame, Ack):
        return bytes((ACK,))
    if isinstance(frame, ShortFrame):
        return bytes((START_SHORT, frame.c, frame.a, (frame.c + frame.a) & 0xFF, STOP))
    data = frame.data if isinstance(frame, LongFrame) else b""
    body = bytes((frame.c, frame.a, frame.ci)) + data
    length = len(body)
    return bytes((START_LONG, length, length, START_LONG)) + body + bytes((sum(body) & 0xFF, STOP))


def _with_ci(c: int, address: int, ci: int, data: bytes) -> bytes:
    """A control frame when there is no data, a long frame otherwise."""
    if not data:
        return encode_frame(ControlFrame(c, address, ci))
    return encode_frame(LongFrame(c, address, ci, data))


def _fcb(fcb: bool) -> int:
    """FCB with FCV set (PROTOCOL_NOTES §8.2-8.3): the master toggles it after each good reply."""
    return C_FCB if fcb else 0


def snd_nke(address: int) -> bytes:
    """Link reset; it clears the slave's FCB. To address 253 it deselects (PROTOCOL_NOTES §8.4)."""
    return encode_frame(ShortFrame(C_SND_NKE, address))


def req_ud2(address: int, fcb: bool) -> bytes:
    """Request class 2 data: `5B` or, with FCB, `7B`."""
    return encode_frame(ShortFrame(C_REQ_UD2 | _fcb(fcb), address))


def req_ud1(address: int, fcb: bool) -> bytes:
    """Request class 1 data (alarms): `5A` or, with FCB, `7A`."""
    return encode_frame(ShortFrame(C_REQ_UD1 | _fcb(fcb), address))


def snd_ud(address: int, ci: int, data: bytes, fcb: bool) -> bytes:
    """Send user data: a control frame when `data` is empty, a long frame otherwise."""
    return _with_ci(C_SND_UD | _fcb(fcb), address, ci, data)


def application_reset(address: int, subcode: int | None = None, *, fcb: bool = False) -> bytes:
    """SND_UD with CI 50, optionally with its one-byte subcode (PROTOCOL_NOTES §2.1)."""
    if subcode is None:
        return snd_ud(address, CI_APPLICATION_RESET, b"", fcb)
    _check_bytes(subcode=subcode)
    return snd_ud(address, CI_APPLICATION_RESET, bytes((subcode,)), fcb)


def set_baud_rate(address: int, baud: int, *, fcb: bool = False) -> bytes:
    """SND_UD with CI B8-BF (PROTOCOL_NOTES §2.1, §8.5)."""
    if baud not in BAUD_RATES:
        raise DecodeError(f"M-Bus baud rates are {BAUD_RATES}, not {baud}")
    return snd_ud(address, CI_SET_BAUD_RATE + BAUD_RATES.index(baud), b"", fcb)


def rsp_ud(address: int, ci: int, data: bytes, acd: bool = False, dfc: bool = False) -> bytes:
    """A slave's answer: C = 08, with ACD and DFC as asked."""
    return _with_ci(C_RSP_UD | (C_ACD if acd else 0) | (C_DFC if dfc else 0), address, ci, data)


Wildcard = Literal["any"]
_ID_DIGITS = frozenset("0123456789ABCDEF")


@dataclass(frozen=True, slots=True)
class SecondaryAddress:
    """The 8 bytes of a select frame: ID (BCD, LE), M-field (LE), version, medium.

    `id` is 8 hex digits as printed; in a mask each `F` (or `?`, stored as `F`) is a wildcard
    digit. `manufacturer` is the 16-bit M-field, `version` and `medium` single bytes; "any" stands
    for all-F, which is also what a value of all-F reads back as.
    """

    id: str
    manufacturer: int | Wildcard = "any"
    version: int | Wildcard = "any"
    medium: int | Wildcard = "any"

    def __post_init__(self) -> None:
        ident = self.id.upper().replace("?", "F")
        if len(ident) != 8 or not set(ident) <= _ID_DIGITS:
            raise DecodeError(f"identification number must be 8 hex digits or ?, not {self.id!r}")
        object.__setattr__(self, "id", ident)
        for name, top in (("manufacturer", 0xFFFF), ("version", 0xFF), ("medium", 0xFF)):
            value = getattr(self, name)
            if value == top:
                object.__setattr__(self, name, "any")
            elif value != "any" and not (isinstance(value, int) and 0 <= value <= top):
                raise DecodeError(f"{name} must be 0-{top:#x} or 'any', not {value!r}")

    def to_bytes(self) -> bytes:
        manufacturer = self.manufacturer if isinstance(self.manufacturer, int) else 0xFFFF
        version = self.version if isinstance(self.version, int) else 0xFF
        medium = self.medium if isinstance(self.medium, int) else 0xFF
        return (
            bytes.fromhex(self.id)[::-1]
            + manufacturer.to_bytes(2, "little")
            + bytes((version, medium))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SecondaryAddress:
        if len(data) != 8:
            raise FrameError(f"a secondary address has 8 bytes, not {len(data)}", data=data)
        return cls(
            decode_id(data[:4]).upper(), int.from_bytes(data[4:6], "little"), data[6], data[7]
        )


def secondary_matches(mask_bytes: bytes, meter: bytes) -> bool:
    """Whether a slave with secondary address `meter` answers a select with `mask_bytes`.

    Every nibble of the 8 bytes compares on its own and a mask nibble F matches anything: on the
    ID digits (EN 13757-2, secondary addressing) and, as slaves apply it, on the M-field, version
    and medium too, where A-F are ordinary digits (PROTOCOL_NOTES §8.4, libmbus #73).
    """
    if len(mask_bytes) != 8 or len(meter) != 8:
        raise FrameError(
            f"secondary addresses have 8 bytes, not {len(mask_bytes)} and {len(meter)}"
        )
    for mask, value in zip(mask_bytes, meter, strict=True):
        if mask & 0xF0 != 0xF0 and mask & 0xF0 != value & 0xF0:
            return False
        if mask & 0x0F != 0x0F and mask & 0x0F != value & 0x0F:
            return False
    return True


def select_secondary(address_mask: SecondaryAddress | bytes, *, fcb: bool = True) -> bytes:
    """SND_UD to 253 with CI 52 and the 8-byte mask (PROTOCOL_NOTES §8.4: C = 73 in its
    verified examples); the selected slave then answers at address 253."""
    mask = address_mask.to_bytes() if isinstance(address_mask, SecondaryAddress) else address_mask
    if len(mask) != 8:
        raise DecodeError(f"a secondary address mask has 8 bytes, not {len(mask)}")
    return snd_ud(ADDRESS_NETWORK_LAYER, CI_SELECT_SECONDARY, mask, fcb)


class MbusFramer:
    """Streaming framer for bytes from the bus: whole frames out, the remainder kept.

    Bytes that start no valid frame (garbage, a frame with a bad checksum) are skipped one at a
    time and the search resumes at the next `E5`, `10` or `68`; `discarded` counts them.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.discarded = 0

    @property
    def pending(self) -> int:
        """Bytes held back as the beginning of a frame still arriving."""
        return len(self._buffer)

    def reset(self) -> None:
        """Drop a partial frame, e.g. after the answer timed out; its bytes count as discarded."""
        self.discarded += len(self._buffer)
        self._buffer.clear()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        pos = 0
        while pos < len(buf):
            found = _START_BYTES.search(buf, pos)
            if found is None:
                self.discarded += len(buf) - pos
                pos = len(buf)
                break
            self.discarded += found.start() - pos
            pos = found.start()
            result = _examine(buf, pos)
            if isinstance(result, int):
                break
            if isinstance(result, DecodeError):
                self.discarded += 1
                pos += 1
                continue
            frames.append(result)
            pos += frame_length(result)
        del buf[:pos]
        return frames


@dataclass(frozen=True, slots=True)
class NoReply:
    """Silence until the timeout: no slave answered."""


@dataclass(frozen=True, slots=True)
class Collision:
    """Bytes that are not exactly one valid frame: several slaves answered at once."""

    data: bytes
    reason: str


Reply = NoReply | Collision | Frame


def classify_reply(data: bytes) -> Reply:
    """Judge everything a master received after a select or a request, up to the timeout.

    Slaves that answer together garble each other; a secondary search relies on telling that
    from one clean answer (PROTOCOL_NOTES §8.4). Two `E5`, or an `E5` with anything after it,
    count as a collision too.
    """
    if not data:
        return NoReply()
    try:
        return parse_frame(data)
    except DecodeError as error:
        return Collision(data, error.message)
