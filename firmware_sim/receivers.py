"""Simulated wM-Bus USB receivers as pure devices: iM871A, AMB8465, rtl_wmbus, hex lines.

A device answers the host's configuration commands as the real one does and turns a telegram
it hears into the bytes it would send, using the encoders beside each driver's framer. It
hears a telegram only in a link mode it is set to, and, like the real receivers, drops one
whose link CRCs fail (rtl_wmbus prints it with CRC_OK 0; a hex line carries the damaged bytes
as they are). spoil() makes what a faulty serial line delivers. serve_wmbus puts a device on a
pty.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from decimal import Decimal

from drivers import amb8465_framing as amb
from drivers import im871a_framing as imst
from drivers.rtlwmbus_framing import encode_hex_line, encode_rtlwmbus_line
from firmware_sim.wmbus_meters import Transmission

# What each configured mode hears (PROTOCOL_NOTES §9.1, §9.2). Which C1 frame format the iM871A
# takes in its C1A/C1B modes was not verified; here both take both, as a collector should.
IM871A_HEARS = {
    0x00: {"S1"},
    0x01: {"S1"},
    0x02: {"S1"},
    0x03: {"T1"},
    0x04: {"T1"},
    0x06: {"C1"},
    0x07: {"C1"},
    0x08: {"C1"},
    0x09: {"C1"},
    0x0A: {"C1", "T1"},
}
AMB8465_HEARS = {0x03: {"S1"}, 0x08: {"T1"}, 0x0E: {"C1"}, 0x09: {"C1", "T1"}}
_STATUS_FAILED = 0x01
FAULTS = ("garbage", "cut", "flip", "short")


class ReceiverDevice:
    """The device side of a receiver. `receive` takes the host's bytes and returns the answer;
    `indication` the bytes for a telegram it hears, b"" when it does not."""

    kind = ""
    text = False  # a line-oriented source: faults must keep to one line

    def power_on(self) -> None:
        """Back to the defaults, as after plugging in."""

    def receive(self, data: bytes) -> bytes:
        return b""

    def hears(self, tx: Transmission) -> bool:
        raise NotImplementedError

    def indication(self, tx: Transmission, frame: bytes) -> bytes:
        """The bytes for `tx`; `frame` is its stripped frame, or a truncated one for a fault."""
        raise NotImplementedError


def im871a_rssi(level_dbm: Decimal) -> int:
    """The raw RSSI byte the iM871A reports for a level (inverse of im871a_framing.rssi_to_dbm
    on its linear part: raw 45 = -100 dBm, 0.5 dB per step)."""
    return max(0, min(205, int((level_dbm + 100) * 2) + 45))


def amb8465_rssi(level_dbm: Decimal) -> int:
    """The raw RSSI byte the AMB8465 reports: two's complement half dB above -74 dBm (§9.2)."""
    return int((level_dbm + 74) * 2) & 0xFF


class Im871aDevice(ReceiverDevice):
    """IMST iM871A: HCI messages with FCS; RSSI and timestamp attached as configured."""

    kind = "im871a"

    def __init__(self, *, initial_mode: int = 0x00, uid: int = 0x12345678) -> None:
        self.initial_mode = initial_mode
        self.uid = uid
        self.framer = imst.Im871aFramer()
        self.link_mode = initial_mode
        self.rssi = False
        self.timestamp = False
        self.powered_at = time.monotonic()
        self.unknown_requests = 0

    def power_on(self) -> None:
        self.framer = imst.Im871aFramer()
        self.link_mode = self.initial_mode
        self.rssi = self.timestamp = False
        self.powered_at = time.monotonic()

    def receive(self, data: bytes) -> bytes:
        out = b""
        for message in self.framer.feed(data):
            out += self._answer(message)
        return out

    def _answer(self, message: imst.HciMessage) -> bytes:
        request = (message.endpoint, message.msg_id)
        if request == (imst.ENDPOINT_DEVMGMT, imst.DEVMGMT_PING_REQ):
            return imst.ping_response()
        if request == (imst.ENDPOINT_DEVMGMT, imst.DEVMGMT_GET_DEVICEINFO_REQ):
            info = imst.DeviceInfo(imst.MODULE_IM871A, 0, 0x15, 0x01, self.uid)
            return imst.device_info_response(info)
        if request == (imst.ENDPOINT_DEVMGMT, imst.DEVMGMT_SET_CONFIG_REQ):
            return imst.set_config_response(self._configure(message.payload))
        self.unknown_requests += 1
        return b""

    def _configure(self, payload: bytes) -> int:
        """DEVMGMT_SET_CONFIG_REQ (PROTOCOL_NOTES §9.1): NVM flag, IIFlag1 and its fields,
        IIFlag2 and its fields, one byte each except M (2) and ID (4). Nothing changes unless
        the whole request is valid."""
        sizes1 = (1, 1, 1, 2, 4, 1, 1, 1)  # device mode, link mode, C, M, ID, version, type, ch.
        if len(payload) < 2:
            return _STATUS_FAILED
        flags1, pos = payload[1], 2
        fields1: dict[int, bytes] = {}
        for bit, size in enumerate(sizes1):
            if flags1 & 1 << bit:
                fields1[bit], pos = payload[pos : pos + size], pos + size
        fields2: dict[int, int] = {}
        if pos < len(payload):
            flags2, pos = payload[pos], pos + 1
            for bit in range(8):
                if flags2 & 1 << bit:
                    fields2[bit], pos = (payload[pos] if pos < len(payload) else -1), pos + 1
        if pos != len(payload) or -1 in fields2.values():
            return _STATUS_FAILED
        link = fields1.get(1)
        if link is not None and link[0] not in IM871A_HEARS:
            return _STATUS_FAILED
        if link is not None:
            self.link_mode = link[0]
        self.rssi = bool(fields2.get(4, self.rssi))
        self.timestamp = bool(fields2.get(5, self.timestamp))
        return imst.STATUS_OK

    def hears(self, tx: Transmission) -> bool:
        return tx.crc_ok and tx.link_mode in IM871A_HEARS.get(self.link_mode, ())

    def indication(self, tx: Transmission, frame: bytes) -> bytes:
        # The timestamp unit was not verified: milliseconds since power-on here.
        ticks = int((time.monotonic() - self.powered_at) * 1000) % (1 << 32)
        return imst.data_indication(
            frame,
            rssi=im871a_rssi(tx.level_dbm) if self.rssi else None,
            timestamp=ticks if self.timestamp else None,
        )


class Amb8465Device(ReceiverDevice):
    """Amber AMB8465: command frames; parameters take effect at reset, SET_MODE at once."""

    kind = "amb8465"

    def __init__(self, *, cmd_out: int = 1, rssi: int = 0, mode: int = 0x03) -> None:
        self.memory = bytearray(256)
        self.memory[amb.PARAM_UART_CMD_OUT_ENABLE] = cmd_out
        self.memory[amb.PARAM_RSSI_ENABLE] = rssi
        self.memory[amb.PARAM_MODE_PRESELECT] = mode
        self.unknown_requests = 0
        self.power_on()

    def power_on(self) -> None:
        self.framer = amb.Amb8465Framer(from_device=False)
        self.cmd_out = self.memory[amb.PARAM_UART_CMD_OUT_ENABLE] == 1
        self.rssi = self.memory[amb.PARAM_RSSI_ENABLE] == 1
        self.mode = self.memory[amb.PARAM_MODE_PRESELECT]

    def receive(self, data: bytes) -> bytes:
        out = b""
        for message in self.framer.feed(data):
            out += self._answer(message)
        return out

    def _answer(self, message: amb.AmberMessage) -> bytes:
        command, payload = message.command, message.payload
        if command == amb.CMD_SET_MODE_REQ:
            if len(payload) != 1 or payload[0] not in AMB8465_HEARS:
                return amb.set_mode_confirm(_STATUS_FAILED)
            self.mode = payload[0]
            return amb.set_mode_confirm()
        if command == amb.CMD_GET_REQ:
            if len(payload) != 2 or payload[0] + payload[1] > len(self.memory):
                return amb.encode_command(command | amb.CONFIRM, bytes((_STATUS_FAILED,)))
            address, count = payload
            return amb.get_confirm(address, bytes(self.memory[address : address + count]))
        if command == amb.CMD_SET_REQ:
            if len(payload) < 3 or payload[1] != len(payload) - 2:
                return amb.set_confirm(_STATUS_FAILED)
            if payload[0] + payload[1] > len(self.memory):
                return amb.set_confirm(_STATUS_FAILED)
            self.memory[payload[0] : payload[0] + payload[1]] = payload[2:]
            return amb.set_confirm()
        if command == amb.CMD_RESET_REQ:
            self.power_on()
            return amb.encode_command(command | amb.CONFIRM, bytes((amb.STATUS_SUCCESS,)))
        if command == amb.CMD_FWV_REQ:
            return amb.firmware_version_confirm(1, 3, 0)
        self.unknown_requests += 1
        return b""

    def hears(self, tx: Transmission) -> bool:
        return tx.crc_ok and tx.link_mode in AMB8465_HEARS.get(self.mode, ())

    def indication(self, tx: Transmission, frame: bytes) -> bytes:
        rssi = amb8465_rssi(tx.level_dbm) if self.rssi else None
        if self.cmd_out:
            return amb.data_indication(frame, rssi)
        # Transparent mode (PROTOCOL_NOTES §9.2): the same without FF 03 and without CS.
        return amb.data_indication(frame, rssi)[2:-1]


class RtlWmbusDevice(ReceiverDevice):
    """rtl_wmbus writing its lines into the pty; it decodes T1 and C1 at once and takes no
    commands. CRC failures are printed with CRC_OK 0."""

    kind = "rtlwmbus"
    text = True

    def __init__(self, modes: frozenset[str] = frozenset({"T1", "C1"})) -> None:
        self.modes = modes

    def hears(self, tx: Transmission) -> bool:
        return tx.link_mode in self.modes

    def indication(self, tx: Transmission, frame: bytes) -> bytes:
        # rtl_wmbus levels are not dBm (PROTOCOL_NOTES §9.3); any monotonic mapping will do.
        packet = int(tx.level_dbm) + 160
        return encode_rtlwmbus_line(
            frame,
            mode=tx.link_mode,
            crc_ok=tx.crc_ok,
            device_time=tx.at.timestamp(),
            packet_rssi=packet,
            current_rssi=packet + 40,
        )


class HexLineDevice(ReceiverDevice):
    """A raw feed: every telegram as received on air, link CRCs and damage included."""

    kind = "hex"
    text = True

    def hears(self, tx: Transmission) -> bool:
        return True

    def indication(self, tx: Transmission, frame: bytes) -> bytes:
        # A truncated telegram (a fault) has no CRCs to keep: it goes as the stripped bytes.
        return encode_hex_line(tx.on_air if frame == tx.frame else frame)


DEVICES: dict[str, Callable[[], ReceiverDevice]] = {
    "im871a": Im871aDevice,
    "amb8465": Amb8465Device,
    "rtlwmbus": RtlWmbusDevice,
    "hex": HexLineDevice,
}


def spoil(kind: str, data: bytes, rng: random.Random, *, text: bool) -> bytes:
    """`data` as a faulty serial line or source delivers it.

    "garbage" puts junk before it, "cut" keeps only its first part, "flip" changes one byte (in
    a line, one character to "?", so the line stays one line and its frame cannot turn into
    another valid one).
    """
    if kind == "garbage":
        junk = rng.randbytes(rng.randint(1, 24))
        if text:
            junk = junk.hex().encode("ascii")[: rng.randint(1, 40)] + b"\n"
        return junk + data
    if kind == "cut":
        return data[: rng.randrange(1, max(2, len(data) - 1))]
    if kind == "flip":
        spoiled = bytearray(data)
        at = rng.randrange(len(data) - 1 if text else len(data))
        spoiled[at] = ord("?") if text else spoiled[at] ^ rng.randint(1, 255)
        return bytes(spoiled)
    raise ValueError(f"unknown fault {kind!r}")
