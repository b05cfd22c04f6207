"""IMST iM871A / iM170A host controller interface (HCI): framing, encoders, RSSI.

Pure and sans-I/O: the driver feeds the bytes it read from the serial port to `Im871aFramer`
and writes what the encoders return; the simulator does the opposite. Byte-level facts are in
PROTOCOL_NOTES §9.1 (IMST HCI spec v1.6 as used by wmbusmeters `src/wmbus_im871a.cc` and jMBus
`WMBusConnectionImst`).

Frame: SOF `A5` | control (bits 7-4) and endpoint (bits 3-0) | MsgID | length | payload |
[timestamp 4, LE] | [RSSI 1] | [FCS 2, LE]; the length counts the payload only.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from drivers.received import ReceivedFrame, check_stripped
from drivers.reflected_crc import reflected_crc16, reflected_table
from drivers.sof_framing import SofFramer
from metergate.errors import FrameError, UnsupportedError

SOF = 0xA5
HEADER = 4  # SOF, control/endpoint, MsgID, length

# Control bits of byte 1 (HCI spec v1.6 via PROTOCOL_NOTES §9.1).
CTRL_FCS = 0x80
CTRL_RSSI = 0x40
CTRL_TIMESTAMP = 0x20
CTRL_RESERVED = 0x10  # must be 0; a set bit marks a false start of frame

ENDPOINT_DEVMGMT = 0x01
ENDPOINT_RADIOLINK = 0x02
ENDPOINT_RADIOLINKTEST = 0x03
ENDPOINT_HWTEST = 0x04

# The highest MsgID of each endpoint; anything else is a false start (wmbusmeters
# `checkIM871AFrame` accepts the same ranges).
_LAST_MSG_ID = {
    ENDPOINT_DEVMGMT: 0x27,
    ENDPOINT_RADIOLINK: 0x05,
    ENDPOINT_RADIOLINKTEST: 0x07,
    ENDPOINT_HWTEST: 0x02,
}

DEVMGMT_PING_REQ = 0x01
DEVMGMT_PING_RSP = 0x02
DEVMGMT_SET_CONFIG_REQ = 0x03
DEVMGMT_SET_CONFIG_RSP = 0x04
DEVMGMT_GET_DEVICEINFO_REQ = 0x0F
DEVMGMT_GET_DEVICEINFO_RSP = 0x10
RADIOLINK_WMBUSMSG_IND = 0x03

STATUS_OK = 0x00

# DEVMGMT_SET_CONFIG_REQ link-mode values (PROTOCOL_NOTES §9.1). "C1T1" (0x0A) needs iM871A
# firmware > 0x13 and means N1A on the iM170A.
LINK_MODES = {
    "S1": 0x00,
    "S1-m": 0x01,
    "S2": 0x02,
    "T1": 0x03,
    "T2": 0x04,
    "R2": 0x05,
    "C1A": 0x06,
    "C1B": 0x07,
    "C2A": 0x08,
    "C2B": 0x09,
    "C1T1": 0x0A,
}

_NVM_DONT_SAVE = 0x00
_IIFLAG1_LINK_MODE = 0x02  # IIFlag1 bit 1
_IIFLAG2_RSSI = 0x10  # IIFlag2 bit 4: auto RSSI attachment
_IIFLAG2_TIMESTAMP = 0x20  # IIFlag2 bit 5: auto timestamp attachment

MODULE_IM871A = 0x33  # device-info module type [WMB]
MODULE_IM170A = 0x36

# A received telegram carries at least C, M and A after the removed L (EN 13757-4 §9.1.2).
_MIN_INDICATION = 9


_X25_TABLE = reflected_table(0x8408)


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25: reflected poly 0x8408, init FFFF, output inverted; check 0x906E."""
    return reflected_crc16(data, _X25_TABLE) ^ 0xFFFF


@dataclass(frozen=True, slots=True)
class HciMessage:
    """One HCI message; `fcs` tells whether it came (or goes) with a frame check sequence."""

    endpoint: int
    msg_id: int
    payload: bytes
    timestamp: int | None = None
    rssi_raw: int | None = None
    fcs: bool = False


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """DEVMGMT_GET_DEVICEINFO_RSP payload [WMB `DeviceInfo`]; uid is sent LE."""

    module_type: int
    device_mode: int  # 0 other, 1 meter
    firmware_version: int
    hci_version: int
    uid: int


def _header_error(control: int, endpoint: int, msg_id: int, length: int) -> str | None:
    """Why these header fields cannot start a frame, or None."""
    if control & CTRL_RESERVED:
        return "reserved control bit 4 is set"
    last = _LAST_MSG_ID.get(endpoint)
    if last is None:
        return f"endpoint {endpoint:#04x} does not exist"
    if not 1 <= msg_id <= last:
        return f"MsgID {msg_id:#04x} does not exist on endpoint {endpoint:#04x}"
    if (endpoint, msg_id) == (ENDPOINT_RADIOLINK, RADIOLINK_WMBUSMSG_IND) and (
        length < _MIN_INDICATION
    ):
        return f"a received telegram of {length} bytes cannot hold C, M and A"
    return None


def _trailer_size(control: int) -> int:
    return (
        (4 if control & CTRL_TIMESTAMP else 0)
        + (1 if control & CTRL_RSSI else 0)
        + (2 if control & CTRL_FCS else 0)
    )


class Im871aFramer(SofFramer[HciMessage]):
    """Splits the byte stream of an iM871A into HCI messages (resynchronising as SofFramer says).

    A candidate start that has an impossible header, or whose FCS does not match, is a false
    start. Frames without FCS have no integrity check at all; a false start with a plausible
    header can then swallow the frame behind it. When the other side is known to attach an FCS
    to everything, `require_fcs` treats a frame without one as a false start, which closes that
    hole.
    """

    sof = SOF
    header = HEADER

    def __init__(self, *, require_fcs: bool = False) -> None:
        super().__init__()
        self.require_fcs = require_fcs

    def _frame_size(self, header: bytes) -> int | None:
        control, endpoint = header[1] & 0xF0, header[1] & 0x0F
        msg_id, length = header[2], header[3]
        if self.require_fcs and not control & CTRL_FCS:
            return None
        if _header_error(control, endpoint, msg_id, length) is not None:
            return None
        return HEADER + length + _trailer_size(control)

    def _checksum_ok(self, frame: bytes) -> bool:
        if not frame[1] & CTRL_FCS:
            return True
        return crc16_x25(frame[1:-2]) == int.from_bytes(frame[-2:], "little")

    def _message(self, frame: bytes) -> HciMessage:
        return _message_of(frame, frame[1] & 0xF0, frame[1] & 0x0F, frame[2], frame[3])


def _message_of(frame: bytes, control: int, endpoint: int, msg_id: int, length: int) -> HciMessage:
    at = HEADER + length
    timestamp = rssi = None
    if control & CTRL_TIMESTAMP:
        timestamp = int.from_bytes(frame[at : at + 4], "little")
        at += 4
    if control & CTRL_RSSI:
        rssi = frame[at]
    return HciMessage(
        endpoint=endpoint,
        msg_id=msg_id,
        payload=frame[HEADER : HEADER + length],
        timestamp=timestamp,
        rssi_raw=rssi,
        fcs=bool(control & CTRL_FCS),
    )


def encode_hci(
    endpoint: int,
    msg_id: int,
    payload: bytes = b"",
    *,
    timestamp: int | None = None,
    rssi: int | None = None,
    fcs: bool = True,
) -> bytes:
    """One HCI frame. Refuses (FrameError) what `Im871aFramer` would refuse to read back."""
    control = (
        (CTRL_FCS if fcs else 0)
        | (CTRL_RSSI if rssi is not None else 0)
        | (CTRL_TIMESTAMP if timestamp is not None else 0)
    )
    if len(payload) > 0xFF:
        raise FrameError(f"an HCI payload holds at most 255 bytes, not {len(payload)}")
    reason = _header_error(control, endpoint, msg_id, len(payload))
    if reason is not None:
        raise FrameError(reason)
    body = bytearray((control | endpoint, msg_id, len(payload)))
    body += payload
    if timestamp is not None:
        if not 0 <= timestamp <= 0xFFFFFFFF:
            raise FrameError(f"timestamp {timestamp} does not fit 32 bits")
        body += timestamp.to_bytes(4, "little")
    if rssi is not None:
        if not 0 <= rssi <= 0xFF:
            raise FrameError(f"RSSI {rssi} does not fit one byte")
        body.append(rssi)
    if fcs:
        body += crc16_x25(bytes(body)).to_bytes(2, "little")
    return bytes((SOF,)) + bytes(body)


def encode_message(message: HciMessage) -> bytes:
    return encode_hci(
        message.endpoint,
        message.msg_id,
        message.payload,
        timestamp=message.timestamp,
        rssi=message.rssi_raw,
        fcs=message.fcs,
    )


def set_link_mode_request(mode: str, *, timestamp: bool = False, fcs: bool = False) -> bytes:
    """DEVMGMT_SET_CONFIG_REQ: link mode, RSSI attachment on, not saved to NVM.

    Both IIFlag2 bits 4 and 5 are set, so the timestamp attachment is always stated, on or off
    (off by default, as in the worked example `A5 01 03 06 00 02 03 30 01 00` of [WMB]).
    Requests go without FCS by default, as wmbusmeters sends them.
    """
    value = LINK_MODES.get(mode)
    if value is None:
        raise UnsupportedError(f"the iM871A has no link mode {mode!r}; known: {sorted(LINK_MODES)}")
    payload = bytes(
        (
            _NVM_DONT_SAVE,
            _IIFLAG1_LINK_MODE,
            value,
            _IIFLAG2_RSSI | _IIFLAG2_TIMESTAMP,
            1,
            1 if timestamp else 0,
        )
    )
    return encode_hci(ENDPOINT_DEVMGMT, DEVMGMT_SET_CONFIG_REQ, payload, fcs=fcs)


def ping_request(*, fcs: bool = False) -> bytes:
    return encode_hci(ENDPOINT_DEVMGMT, DEVMGMT_PING_REQ, fcs=fcs)


def device_info_request(*, fcs: bool = False) -> bytes:
    return encode_hci(ENDPOINT_DEVMGMT, DEVMGMT_GET_DEVICEINFO_REQ, fcs=fcs)


def set_config_response(status: int = STATUS_OK, *, fcs: bool = True) -> bytes:
    """DEVMGMT_SET_CONFIG_RSP: one status byte, 0 = OK."""
    if not 0 <= status <= 0xFF:
        raise FrameError(f"status {status} does not fit one byte")
    return encode_hci(ENDPOINT_DEVMGMT, DEVMGMT_SET_CONFIG_RSP, bytes((status,)), fcs=fcs)


def ping_response(*, fcs: bool = True) -> bytes:
    return encode_hci(ENDPOINT_DEVMGMT, DEVMGMT_PING_RSP, fcs=fcs)


def device_info_response(info: DeviceInfo, *, fcs: bool = True) -> bytes:
    fields = (info.module_type, info.device_mode, info.firmware_version, info.hci_version)
    if not all(0 <= value <= 0xFF for value in fields) or not 0 <= info.uid <= 0xFFFFFFFF:
        raise FrameError(f"device info does not fit its fields: {info}")
    payload = bytes(fields) + info.uid.to_bytes(4, "little")
    return encode_hci(ENDPOINT_DEVMGMT, DEVMGMT_GET_DEVICEINFO_RSP, payload, fcs=fcs)


def device_info_of(message: HciMessage) -> DeviceInfo:
    if (message.endpoint, message.msg_id) != (ENDPOINT_DEVMGMT, DEVMGMT_GET_DEVICEINFO_RSP):
        raise FrameError(f"not a device-info response: {message.endpoint}/{message.msg_id}")
    payload = message.payload
    if len(payload) < 8:
        raise FrameError(
            f"device info of {len(payload)} bytes, 8 needed", offset=len(payload), data=payload
        )
    return DeviceInfo(
        module_type=payload[0],
        device_mode=payload[1],
        firmware_version=payload[2],
        hci_version=payload[3],
        uid=int.from_bytes(payload[4:8], "little"),
    )


def data_indication(
    frame: bytes, *, rssi: int | None = None, timestamp: int | None = None, fcs: bool = True
) -> bytes:
    """RADIOLINK_WMBUSMSG_IND for a stripped frame: the payload starts at C, L is left out."""
    check_stripped(frame)
    return encode_hci(
        ENDPOINT_RADIOLINK,
        RADIOLINK_WMBUSMSG_IND,
        frame[1:],
        timestamp=timestamp,
        rssi=rssi,
        fcs=fcs,
    )


def rssi_to_dbm(raw: int) -> Decimal:
    """The iM871A's raw RSSI byte in dBm (an approximation; IMST publishes only a graph).

    Piecewise linear through the three points wmbusmeters reads off the Si1002 datasheet
    graph (Figure 7-3): raw 45 = -100 dBm, 205 = -20 dBm, 230 and above = 0 dBm. Below 205 this
    is exactly wmbusmeters' 0.5 dB per step; from 205 to 230 it follows the steeper part of the
    curve (0.8 dB per step) instead of jumping from -8 to 0 dBm at 230 as wmbusmeters' clamp
    does. jMBus's 0.533 * raw - 126.7 was not used: its origin is undocumented and it needs
    rounding, whereas these steps are exact in Decimal.
    """
    if not 0 <= raw <= 0xFF:
        raise FrameError(f"RSSI {raw} does not fit one byte")
    if raw >= 230:
        return Decimal(0)
    if raw > 205:
        return Decimal(raw - 205) * Decimal("0.8") - 20
    return Decimal(raw - 45) / 2 - 100


def wmbus_frame_of(message: HciMessage, link_mode: str | None = None) -> ReceivedFrame | None:
    """The received wM-Bus frame of a WMBUSMSG_IND, L re-inserted; None for other messages.

    The iM871A does not say in which mode a telegram came; `link_mode` is what the caller
    configured, passed through.
    """
    if (message.endpoint, message.msg_id) != (ENDPOINT_RADIOLINK, RADIOLINK_WMBUSMSG_IND):
        return None
    payload = message.payload
    if not _MIN_INDICATION <= len(payload) <= 0xFF:
        raise FrameError(
            f"a WMBUSMSG_IND of {len(payload)} bytes is no wM-Bus frame", offset=0, data=payload
        )
    frame = bytes((len(payload),)) + payload
    return ReceivedFrame(
        frame=frame,
        rssi_dbm=None if message.rssi_raw is None else rssi_to_dbm(message.rssi_raw),
        device_time=message.timestamp,
        link_mode=link_mode,
    )
