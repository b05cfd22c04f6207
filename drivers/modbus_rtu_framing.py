"""Modbus RTU framing: CRC-16/MODBUS, frame encoders and a streaming framer for either side.

Pure and sans-I/O: the simulator feeds the bytes it read from its pseudo-terminal and writes
what the encoders return; the time between bytes is the caller's to measure (`silence()`).

An RTU frame is address, function code, data and a CRC sent low byte first (MODBUS over Serial
Line V1.02 §2.5.1, §2.5.1.2), at most 256 bytes (§2.5.1). The line itself delimits frames by
3.5 character times of silence (§2.5.1.1); a pseudo-terminal or a USB adapter blurs that
timing, so the framer also knows each public function code's layout (Modbus Application
Protocol V1.1b3 §6) and finds a frame by its length and CRC, like most masters do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from drivers.reflected_crc import reflected_crc16, reflected_table
from metergate.errors import ChecksumError, FrameError

MIN_FRAME = 4  # address, function code, CRC
MAX_FRAME = 256  # V1.02 §2.5.1: "The maximum size of a MODBUS RTU frame is 256 bytes"
MAX_DATA = MAX_FRAME - MIN_FRAME
BROADCAST = 0
MAX_UNIT = 247  # V1.02 §2.2: 1-247 are slave addresses, 248-255 are reserved
EXCEPTION = 0x80  # V1.1b3 §7: an exception response has the function code's top bit set
MAX_READ_REGISTERS = 125  # V1.1b3 §6.3, §6.4

Direction = Literal["request", "response"]


_CRC_TABLE = reflected_table(0xA001)


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: polynomial 0x8005 reflected (0xA001), initial 0xFFFF, no final XOR
    (V1.02 §6.2.2); sent low byte first."""
    return reflected_crc16(data, _CRC_TABLE)


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """One frame without its CRC: `data` is the PDU after the function code."""

    unit_id: int
    function: int
    data: bytes


# How many data bytes follow the function code, from what has arrived of the data so far:
# an int, None while the bytes that tell it have not arrived. V1.1b3 §6.1-§6.19.
_Layout = Callable[[bytes], int | None]


def _fixed(size: int) -> _Layout:
    return lambda _data: size


def _counted(at: int, before: int) -> _Layout:
    """A byte count at data[at], the counted bytes following `before` bytes of header."""
    return lambda data: before + data[at] if len(data) > at else None


def _fifo(data: bytes) -> int | None:
    # §6.18: a two-byte byte count, then the FIFO count and the registers it counts.
    return 2 + int.from_bytes(data[:2], "big") if len(data) >= 2 else None


_REQUESTS: dict[int, _Layout] = {
    **dict.fromkeys((1, 2, 3, 4, 5, 6), _fixed(4)),  # address, quantity or value
    **dict.fromkeys((7, 11, 12, 17), _fixed(0)),  # serial-line status queries
    15: _counted(4, 5),  # address, quantity, byte count, values
    16: _counted(4, 5),
    22: _fixed(6),  # address, AND mask, OR mask
    23: _counted(8, 9),  # read address, quantity, write address, quantity, byte count, values
    24: _fixed(2),
}
_RESPONSES: dict[int, _Layout] = {
    **dict.fromkeys((1, 2, 3, 4, 12, 17, 23), _counted(0, 1)),  # byte count, values
    **dict.fromkeys((5, 6, 11, 15, 16), _fixed(4)),  # echo of address and value or quantity
    7: _fixed(1),
    22: _fixed(6),
    24: _fifo,
}
# Not in the tables (diagnostics 08, encapsulated transport 43, user-defined codes): such a frame
# can only end with silence.
_UNKNOWN = -1
_DEAD = -2


def encode_rtu_frame(unit_id: int, function: int, data: bytes = b"") -> bytes:
    """Address, function code, data and the CRC, low byte first (V1.02 §2.5.1.2)."""
    if not 0 <= unit_id <= 0xFF or not 1 <= function <= 0xFF:
        raise FrameError(f"unit {unit_id} or function code {function} is not a byte")
    if len(data) > MAX_DATA:
        raise FrameError(f"{len(data)} data bytes do not fit an RTU frame ({MAX_DATA} do)")
    body = bytes((unit_id, function)) + data
    return body + crc16_modbus(body).to_bytes(2, "little")


def parse_rtu_frame(frame: bytes) -> RtuFrame:
    """One complete frame, CRC included, as the line delimited it."""
    if not MIN_FRAME <= len(frame) <= MAX_FRAME:
        raise FrameError(f"an RTU frame is {MIN_FRAME}-{MAX_FRAME} bytes, not {len(frame)}")
    if crc16_modbus(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise ChecksumError("the CRC does not match", offset=len(frame) - 2, data=frame)
    if frame[1] in (0, EXCEPTION):  # V1.1b3 §4.1: function code 0 is not valid
        raise FrameError("function code 0", offset=1, data=frame)
    return RtuFrame(frame[0], frame[1], bytes(frame[2:-2]))


def read_request(unit_id: int, function: int, start: int, count: int) -> bytes:
    """Read Holding Registers (03) or Read Input Registers (04), V1.1b3 §6.3, §6.4."""
    if function not in (3, 4) or not 0 <= start <= 0xFFFF or not 1 <= count <= 0xFFFF:
        raise FrameError(f"not a register read: function {function}, {start}+{count}")
    return encode_rtu_frame(unit_id, function, start.to_bytes(2, "big") + count.to_bytes(2, "big"))


def read_response(unit_id: int, function: int, registers: list[int]) -> bytes:
    """The answer to a register read: byte count, then each register high byte first."""
    if not 1 <= len(registers) <= MAX_READ_REGISTERS:
        raise FrameError(f"a read answers 1-{MAX_READ_REGISTERS} registers, not {len(registers)}")
    if not all(0 <= word <= 0xFFFF for word in registers):
        raise FrameError("a register holds 16 bits")
    words = b"".join(word.to_bytes(2, "big") for word in registers)
    return encode_rtu_frame(unit_id, function, bytes((len(words),)) + words)


def exception_response(unit_id: int, function: int, code: int) -> bytes:
    """The function code with bit 7 set and the exception code (V1.1b3 §7)."""
    if not 1 <= code <= 0xFF:
        raise FrameError(f"exception code {code} is not a byte above 0")
    return encode_rtu_frame(unit_id, (function | EXCEPTION) & 0xFF, bytes((code,)))


def register_values(frame: RtuFrame) -> list[int]:
    """The registers of a read response (03/04), checking its byte count."""
    data = frame.data
    if frame.function not in (3, 4) or not data or data[0] != len(data) - 1 or data[0] % 2:
        raise FrameError(f"not a register read response: {frame.function:02X} {data[:1].hex()}")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(1, len(data), 2)]


class RtuFramer:
    """Splits one direction of an RTU line into frames.

    `direction` "request" reads what a master sends (the simulator's side), "response" what
    slaves answer. Every position in the buffer may start a frame: its length comes from the
    function code's layout and it counts only if its CRC matches. A frame found further on ends
    the wait for a longer candidate before it, so garbage that looks like the start of a long
    frame does not swallow the real frame behind it. A frame whose layout is unknown is taken
    when the caller reports the line's silence.

    Counters: `frames` delivered, `bad_crcs` (candidates at the head of the buffer whose CRC
    failed), `discarded_bytes` (everything not delivered in a frame).
    """

    def __init__(self, direction: Direction = "request") -> None:
        if direction not in ("request", "response"):
            raise ValueError(f"direction is 'request' or 'response', not {direction!r}")
        self.direction = direction
        self._layouts = _REQUESTS if direction == "request" else _RESPONSES
        self._lowest_unit = BROADCAST if direction == "request" else 1
        self._buffer = bytearray()
        self._sizes: list[int | None] = []  # per position: frame size, _UNKNOWN, _DEAD, None
        self.frames = 0
        self.bad_crcs = 0
        self.discarded_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held that may still start a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[RtuFrame]:
        self._buffer += data
        self._sizes += [None] * len(data)
        out: list[RtuFrame] = []
        while (frame := self._next_frame()) is not None:
            out.append(frame)
        self._drop_dead_head()
        return out

    def silence(self) -> list[RtuFrame]:
        """The line was quiet for 3.5 character times: what was received is a frame or garbage
        (V1.02 §2.5.1.1). Returns the frame, if any, and empties the buffer."""
        out = self.feed(b"")
        buf = self._buffer
        for position, size in enumerate(self._sizes):
            if size == _DEAD or len(buf) - position < MIN_FRAME:
                continue
            candidate = bytes(buf[position:])
            if crc16_modbus(candidate[:-2]) == int.from_bytes(candidate[-2:], "little"):
                out.append(self._take(position, len(candidate)))
                break
        self.discarded_bytes += len(buf)
        buf.clear()
        self._sizes.clear()
        return out

    def _size_at(self, position: int) -> int | None:
        buf = self._buffer
        if len(buf) - position < 2:
            return None
        unit, function = buf[position], buf[position + 1]
        if not self._lowest_unit <= unit <= MAX_UNIT or function in (0, EXCEPTION):
            return _DEAD
        if function & EXCEPTION:
            if self.direction == "request":
                return _DEAD
            return MIN_FRAME + 1  # the exception code
        layout = self._layouts.get(function)
        if layout is None:
            return _UNKNOWN
        data_size = layout(bytes(buf[position + 2 : position + 2 + 9]))
        if data_size is None:
            return None
        return data_size + MIN_FRAME if data_size <= MAX_DATA else _DEAD

    def _next_frame(self) -> RtuFrame | None:
        buf, sizes = self._buffer, self._sizes
        for position in range(len(buf)):
            size = sizes[position]
            if size is None:
                size = sizes[position] = self._size_at(position)
            if size == _UNKNOWN and len(buf) - position > MAX_FRAME:
                size = sizes[position] = _DEAD
            if size is None or size < 0 or len(buf) - position < size:
                continue
            end = position + size
            if crc16_modbus(bytes(buf[position : end - 2])) == int.from_bytes(
                buf[end - 2 : end], "little"
            ):
                return self._take(position, size)
            if position == 0:
                self.bad_crcs += 1
            sizes[position] = _DEAD
        return None

    def _take(self, position: int, size: int) -> RtuFrame:
        """Deliver the frame at `position`; everything before it was garbage."""
        buf = self._buffer
        frame = RtuFrame(
            buf[position], buf[position + 1], bytes(buf[position + 2 : position + size - 2])
        )
        self.discarded_bytes += position
        del buf[: position + size]
        del self._sizes[: position + size]
        self.frames += 1
        return frame

    def _drop_dead_head(self) -> None:
        dead = 0
        for size in self._sizes:
            if size != _DEAD:
                break
            dead += 1
        if dead:
            self.discarded_bytes += dead
            del self._buffer[:dead]
            del self._sizes[:dead]
