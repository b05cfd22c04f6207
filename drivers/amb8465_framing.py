"""Amber / Würth AMB8465 (and AMB3665) command mode: framing, encoders, RSSI.

Pure and sans-I/O: the driver feeds what it read from the serial port to `Amb8465Framer` and
writes what the encoders return; the simulator does the opposite. Byte-level facts are in
PROTOCOL_NOTES §9.2 (Amber AMB8426-M/8626-M manual v2.4 §2.2 and §7, same command set;
wmbusmeters `src/wmbus_amb8465.cc`; jMBus `WMBusConnectionAmber`).

Frame: `FF` | command | length | payload | CS, CS = XOR of every byte before it, `FF` included.
A confirmation (CNF) carries the command of its request with bit 7 set (manual §2.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from drivers.received import ReceivedFrame, check_stripped
from drivers.sof_framing import SofFramer
from metergate.errors import FrameError, UnsupportedError

SOF = 0xFF
HEADER = 3  # SOF, command, length
CONFIRM = 0x80

CMD_DATA_REQ = 0x00
CMD_DATARETRY_REQ = 0x02
CMD_DATA_IND = 0x03
CMD_SET_MODE_REQ = 0x04
CMD_RESET_REQ = 0x05
CMD_SET_CHANNEL_REQ = 0x06
CMD_SET_REQ = 0x09
CMD_GET_REQ = 0x0A
CMD_SERIALNO_REQ = 0x0B
CMD_FWV_REQ = 0x0C
CMD_RSSI_REQ = 0x0D
CMD_SET_UART_SPEED_REQ = 0x10
CMD_FACTORYRESET_REQ = 0x11
CMD_DATA_PRELOAD_REQ = 0x30
CMD_DATA_CLR_PRELOAD_REQ = 0x31
CMD_AES_KEYS = (0x50, 0x51, 0x52)

# The commands of the manual's table (§2.2.1). A byte after FF that is none of them marks a
# false start. What the host sends and what the device sends are disjoint: requests one way,
# confirmations and DATA_IND the other, which halves the chance of a false start.
HOST_COMMANDS = frozenset(
    (
        CMD_DATA_REQ,
        CMD_DATARETRY_REQ,
        CMD_SET_MODE_REQ,
        CMD_RESET_REQ,
        CMD_SET_CHANNEL_REQ,
        CMD_SET_REQ,
        CMD_GET_REQ,
        CMD_SERIALNO_REQ,
        CMD_FWV_REQ,
        CMD_RSSI_REQ,
        CMD_SET_UART_SPEED_REQ,
        CMD_FACTORYRESET_REQ,
        CMD_DATA_PRELOAD_REQ,
        CMD_DATA_CLR_PRELOAD_REQ,
        *CMD_AES_KEYS,
    )
)
DEVICE_COMMANDS = frozenset((CMD_DATA_IND, *(cmd | CONFIRM for cmd in HOST_COMMANDS)))

# Parameter memory positions (manual table 4; PROTOCOL_NOTES §9.2).
PARAM_UART_CMD_OUT_ENABLE = 0x05
PARAM_RSSI_ENABLE = 0x45
PARAM_MODE_PRESELECT = 0x46

STATUS_SUCCESS = 0x00

# SET_MODE_REQ values that make the module a collector ("Other") for these meter modes
# (PROTOCOL_NOTES §9.2 table): S2 hears S1 and S1-m, T2-Other T1, C2-Other C1, C2/T2-Other both.
COLLECTOR_MODES = {"S1": 0x03, "S1-m": 0x03, "T1": 0x08, "C1": 0x0E, "C1T1": 0x09}

# A received telegram carries at least C, M and A after the removed L (EN 13757-4 §9.1.2).
_MIN_INDICATION = 9


def checksum(data: bytes) -> int:
    """XOR of all bytes (manual §2.2)."""
    value = 0
    for byte in data:
        value ^= byte
    return value


@dataclass(frozen=True, slots=True)
class AmberMessage:
    """One command frame; for a DATA_IND with RSSI attachment the RSSI byte is in `rssi_raw`,
    not in `payload`."""

    command: int
    payload: bytes
    rssi_raw: int | None = None


class Amb8465Framer(SofFramer[AmberMessage]):
    """Splits an AMB8465 command-mode byte stream into messages (resynchronising as SofFramer
    says).

    `from_device` picks the direction: the driver reads confirmations and DATA_IND, the
    simulator reads requests. `rssi_attached` must match the module's RSSI_Enable parameter
    (address 0x45): with it, a DATA_IND's length byte counts the RSSI byte that ends the payload.

    A candidate start with an unknown command, an impossible DATA_IND length or a wrong CS is a
    false start. The CS is one byte, so about one false start in 256 that reaches into a real
    frame passes it and swallows that frame.
    """

    sof = SOF
    header = HEADER

    def __init__(self, *, rssi_attached: bool = True, from_device: bool = True) -> None:
        super().__init__()
        self.rssi_attached = rssi_attached
        self._commands = DEVICE_COMMANDS if from_device else HOST_COMMANDS

    def _frame_size(self, header: bytes) -> int | None:
        command, length = header[1], header[2]
        if command not in self._commands or not self._length_ok(command, length):
            return None
        return HEADER + length + 1

    def _checksum_ok(self, frame: bytes) -> bool:
        return checksum(frame[:-1]) == frame[-1]

    def _message(self, frame: bytes) -> AmberMessage:
        command, payload = frame[1], frame[HEADER:-1]
        if command == CMD_DATA_IND and self.rssi_attached:
            return AmberMessage(command, payload[:-1], payload[-1])
        return AmberMessage(command, payload)

    def _length_ok(self, command: int, length: int) -> bool:
        if command != CMD_DATA_IND:
            return True
        return length >= _MIN_INDICATION + (1 if self.rssi_attached else 0)


def encode_command(command: int, payload: bytes = b"") -> bytes:
    if not 0 <= command <= 0xFF:
        raise FrameError(f"command {command} does not fit one byte")
    if len(payload) > 0xFF:
        raise FrameError(f"a command payload holds at most 255 bytes, not {len(payload)}")
    body = bytes((SOF, command, len(payload))) + payload
    return body + bytes((checksum(body),))


def encode_message(message: AmberMessage) -> bytes:
    """The frame of a message; a DATA_IND's `rssi_raw` goes after the payload."""
    if message.rssi_raw is None:
        return encode_command(message.command, message.payload)
    if message.command != CMD_DATA_IND:
        raise FrameError(f"only a DATA_IND carries an RSSI, not command {message.command:#04x}")
    if not 0 <= message.rssi_raw <= 0xFF:
        raise FrameError(f"RSSI {message.rssi_raw} does not fit one byte")
    return encode_command(message.command, message.payload + bytes((message.rssi_raw,)))


def _byte(value: int, name: str) -> int:
    if not 0 <= value <= 0xFF:
        raise FrameError(f"{name} {value} does not fit one byte")
    return value


def set_mode_request(mode: str) -> bytes:
    """CMD_SET_MODE_REQ: volatile, so the flash is not worn; e.g. T1 is `FF 04 01 08 F2`."""
    value = COLLECTOR_MODES.get(mode)
    if value is None:
        raise UnsupportedError(
            f"no AMB8465 collector mode for {mode!r}; known: {sorted(COLLECTOR_MODES)}"
        )
    return encode_command(CMD_SET_MODE_REQ, bytes((value,)))


def set_mode_confirm(status: int = STATUS_SUCCESS) -> bytes:
    return encode_command(CMD_SET_MODE_REQ | CONFIRM, bytes((_byte(status, "status"),)))


def get_request(address: int, count: int) -> bytes:
    """CMD_GET_REQ: `count` parameter bytes from `address` (manual §7.6)."""
    return encode_command(CMD_GET_REQ, bytes((_byte(address, "address"), _byte(count, "count"))))


def get_confirm(address: int, values: bytes) -> bytes:
    """The GET_REQ confirmation: address, count, the values (manual §7.6)."""
    if len(values) > 0xFF - 2:
        raise FrameError(f"at most 253 parameter bytes fit one frame, not {len(values)}")
    head = bytes((_byte(address, "address"), len(values)))
    return encode_command(CMD_GET_REQ | CONFIRM, head + values)


def set_request(address: int, values: bytes) -> bytes:
    """CMD_SET_REQ: writes non-volatile memory (manual §7.5: read first, write only if needed,
    and reset the module for the value to take effect)."""
    if not 1 <= len(values) <= 0xFF - 2:
        raise FrameError(f"a SET_REQ writes 1 to 253 bytes, not {len(values)}")
    head = bytes((_byte(address, "address"), len(values)))
    return encode_command(CMD_SET_REQ, head + values)


def set_confirm(status: int = STATUS_SUCCESS) -> bytes:
    return encode_command(CMD_SET_REQ | CONFIRM, bytes((_byte(status, "status"),)))


def firmware_version_request() -> bytes:
    return encode_command(CMD_FWV_REQ)


def firmware_version_confirm(major: int, minor: int, patch: int) -> bytes:
    parts = (_byte(major, "major"), _byte(minor, "minor"), _byte(patch, "patch"))
    return encode_command(CMD_FWV_REQ | CONFIRM, bytes(parts))


def data_indication(frame: bytes, rssi: int | None = None) -> bytes:
    """CMD_DATA_IND for a stripped frame: payload from C, then the RSSI byte when given."""
    check_stripped(frame)
    return encode_message(AmberMessage(CMD_DATA_IND, frame[1:], rssi))


def status_of(message: AmberMessage) -> int:
    """The status byte of a one-byte confirmation (0 = success)."""
    if not message.command & CONFIRM or len(message.payload) != 1:
        raise FrameError(
            f"command {message.command:#04x} with {len(message.payload)} bytes is no status"
            " confirmation",
            data=message.payload,
        )
    return message.payload[0]


def firmware_version_of(message: AmberMessage) -> tuple[int, int, int]:
    if message.command != CMD_FWV_REQ | CONFIRM or len(message.payload) != 3:
        raise FrameError("not a firmware version confirmation", data=message.payload)
    major, minor, patch = message.payload
    return major, minor, patch


def parameters_of(message: AmberMessage) -> tuple[int, bytes]:
    """Address and values of a GET_REQ confirmation."""
    payload = message.payload
    if message.command != CMD_GET_REQ | CONFIRM or len(payload) < 2:
        raise FrameError("not a parameter confirmation", data=payload)
    if len(payload) != 2 + payload[1]:
        raise FrameError(
            f"{payload[1]} parameter bytes announced, {len(payload) - 2} sent",
            offset=1,
            data=payload,
        )
    return payload[0], payload[2:]


def rssi_to_dbm(raw: int) -> Decimal:
    """Manual §7.9: two's complement half-dB steps offset by -74 dBm, real division.

    The manual warns that the relation is not linear over the whole range.
    """
    signed = raw - 256 if _byte(raw, "RSSI") >= 128 else raw
    return Decimal(signed) / 2 - 74


def wmbus_frame_of(message: AmberMessage, link_mode: str | None = None) -> ReceivedFrame | None:
    """The received wM-Bus frame of a DATA_IND, L re-inserted; None for other messages.

    The module does not say in which mode a telegram came; `link_mode` is what the caller
    configured, passed through.
    """
    if message.command != CMD_DATA_IND:
        return None
    payload = message.payload
    if not _MIN_INDICATION <= len(payload) <= 0xFF:
        raise FrameError(
            f"a DATA_IND of {len(payload)} bytes is no wM-Bus frame", offset=0, data=payload
        )
    return ReceivedFrame(
        frame=bytes((len(payload),)) + payload,
        rssi_dbm=None if message.rssi_raw is None else rssi_to_dbm(message.rssi_raw),
        device_time=None,
        link_mode=link_mode,
    )
