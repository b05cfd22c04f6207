"""wM-Bus receivers: iM871A and AMB8465 on a serial port, rtl_wmbus, hex replay.

`open_receiver("im871a:/dev/ttyUSB0", mode="T1")` gives a Receiver: it configures the link
mode and yields ReceivedFrame (CRC-stripped, RSSI in dBm where the receiver gives one). The
byte-level work is in the pure framers beside this module (im871a_framing, amb8465_framing,
rtlwmbus_framing), the I/O in byte_sources, reading and recovery in wmbus_receiver_base; here
are the configuration dialogues of each kind and the factory.

Device strings, KIND:TARGET:
- `im871a:PORT`, `amb8465:PORT`: a serial port or any pyserial URL (`socket://host:port`);
- `rtlwmbus:PORT` or `rtlwmbus:FILE` (rtl_wmbus lines from a port or a capture file),
  `rtlwmbus:-` (stdin), `rtlwmbus:cmd:COMMAND` (run through /bin/sh, so a pipeline such as
  `rtl_sdr -f 868.95M -s 1.6e6 - | rtl_wmbus` works), `rtlwmbus` alone for that pipeline;
- `hex:FILE` (one frame per line, with or without link CRCs), `hex:-`, `hex:PORT`.
A TARGET that is an existing regular file is replayed to its end; any other path is a port.

Every failure to move bytes is a TransportError; no answer in time a DeviceTimeout; an answer
refusing the configuration a DeviceError; a bad device string or mode a ConfigError.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from drivers import amb8465_framing as amb
from drivers import im871a_framing as imst
from drivers.byte_sources import ByteSource, CommandSource, FileSource, SerialSource, StdinSource
from drivers.received import ReceivedFrame
from drivers.rtlwmbus_framing import HexLineFramer, RtlWmbusFramer
from drivers.serial_port import Backoff
from drivers.wmbus_receiver_base import MODES, CommandReceiver, Receiver, feed
from metergate.errors import ConfigError, DecodeError, DeviceError

KINDS = ("im871a", "amb8465", "rtlwmbus", "hex")
_IM871A_MODES = {"T1": "T1", "C1": "C1A", "S1": "S1", "C1T1": "C1T1"}
_IM871A_TELEGRAM = (imst.ENDPOINT_RADIOLINK, imst.RADIOLINK_WMBUSMSG_IND)
BAUD_RATES = {"im871a": 57600, "amb8465": 9600}  # the factory settings [WMB], [AMB]
# T1 and C1 share 868.95 MHz; the pipeline of the rtl-wmbus README.
DEFAULT_RTLWMBUS = "rtl_sdr -f 868.95M -s 1600000 - 2>/dev/null | rtl_wmbus"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    kind: str
    source: str  # "serial", "file", "stdin" or "command"
    target: str  # port URL, file path or command; "-" for stdin


def parse_device(text: str) -> DeviceSpec:
    """The parts of a KIND:TARGET string; ConfigError for anything else."""
    kind, _, target = text.partition(":")
    if kind not in KINDS:
        raise ConfigError(
            f"unknown receiver {kind[:20]!r}; use one of {', '.join(KINDS)} as KIND:PORT",
            location="--device",
        )
    if kind == "rtlwmbus" and not target:
        return DeviceSpec(kind, "command", DEFAULT_RTLWMBUS)
    if not target.strip():
        raise ConfigError(f"{kind} needs a port or file after the colon", location="--device")
    if target == "-" and kind in ("rtlwmbus", "hex"):
        return DeviceSpec(kind, "stdin", target)
    if target.startswith("cmd:") and kind == "rtlwmbus":
        if not target[4:].strip():
            raise ConfigError("rtlwmbus:cmd: needs a command", location="--device")
        return DeviceSpec(kind, "command", target[4:])
    if kind in ("rtlwmbus", "hex"):
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(target).st_mode):
                return DeviceSpec(kind, "file", target)
    return DeviceSpec(kind, "serial", target)


class Im871aReceiver(CommandReceiver[imst.HciMessage]):
    """IMST iM871A (PROTOCOL_NOTES §9.1): ping, device info, then the link mode with RSSI and
    timestamp attached, not saved to NVM."""

    kind = "im871a"
    framer: imst.Im871aFramer
    device_info: imst.DeviceInfo | None = None

    def _reset(self) -> None:
        self.framer = imst.Im871aFramer()
        super()._reset()

    def _answer(self, msg_id: int) -> Callable[[bytes], imst.HciMessage | None]:
        return self._awaiting(
            lambda m: (m.endpoint, m.msg_id) == (imst.ENDPOINT_DEVMGMT, msg_id),
            lambda m: (m.endpoint, m.msg_id) == _IM871A_TELEGRAM,
        )

    def _configure(self) -> None:
        pong = self._exchange(imst.ping_request(), self._answer(imst.DEVMGMT_PING_RSP), "ping")
        # A stick that checksums its answers checksums everything: from now on a header
        # without FCS is line noise, which keeps a false start from swallowing a telegram.
        self.framer.require_fcs = pong.fcs
        info = self._exchange(
            imst.device_info_request(),
            self._answer(imst.DEVMGMT_GET_DEVICEINFO_RSP),
            "device info",
        )
        try:
            self.device_info = imst.device_info_of(info)
        except DecodeError as error:
            raise DeviceError(f"{self.name}: device info: {error.message}") from None
        request = imst.set_link_mode_request(_IM871A_MODES[self.mode], timestamp=True)
        answer = self._exchange(request, self._answer(imst.DEVMGMT_SET_CONFIG_RSP), "set config")
        if answer.payload[:1] != bytes((imst.STATUS_OK,)):
            raise DeviceError(
                f"{self.name}: link mode {self.mode} refused (status {answer.payload.hex()})"
            )

    def _frame_of(self, message: imst.HciMessage) -> ReceivedFrame | None:
        return imst.wmbus_frame_of(message, self.mode)


class Amb8465Receiver(CommandReceiver[amb.AmberMessage]):
    """Amber AMB8465 (PROTOCOL_NOTES §9.2): command output and RSSI attachment must be on in
    the parameter memory (written, then a reset, only when they are not: the flash wears);
    the link mode goes with the volatile SET_MODE."""

    kind = "amb8465"
    framer: amb.Amb8465Framer

    def _reset(self) -> None:
        self.framer = amb.Amb8465Framer()
        super()._reset()

    def _confirm(self, command: int) -> Callable[[bytes], amb.AmberMessage | None]:
        return self._awaiting(
            lambda m: m.command == command | amb.CONFIRM,
            lambda m: m.command == amb.CMD_DATA_IND,
        )

    def _status(self, request: bytes, command: int, what: str) -> None:
        message = self._exchange(request, self._confirm(command), what)
        try:
            status = amb.status_of(message)
        except DecodeError as error:
            raise DeviceError(f"{self.name}: {what}: {error.message}") from None
        if status != amb.STATUS_SUCCESS:
            raise DeviceError(f"{self.name}: {what} refused (status {status})")

    def _parameter(self, address: int) -> int:
        message = self._exchange(
            amb.get_request(address, 1), self._confirm(amb.CMD_GET_REQ), f"reading {address:#x}"
        )
        try:
            at, values = amb.parameters_of(message)
        except DecodeError as error:
            raise DeviceError(f"{self.name}: parameter {address:#x}: {error.message}") from None
        if at != address or len(values) != 1:
            raise DeviceError(f"{self.name}: asked for parameter {address:#x}, got {at:#x}")
        return values[0]

    def _configure(self) -> None:
        wanted = {amb.PARAM_UART_CMD_OUT_ENABLE: 1, amb.PARAM_RSSI_ENABLE: 1}
        changes = {a: v for a, v in wanted.items() if self._parameter(a) != v}
        for address, value in changes.items():
            self._status(amb.set_request(address, bytes((value,))), amb.CMD_SET_REQ, "SET_REQ")
        if changes:
            # Manual §7.5: parameters written take effect after a reset.
            self._status(amb.encode_command(amb.CMD_RESET_REQ), amb.CMD_RESET_REQ, "reset")
        self._status(amb.set_mode_request(self.mode), amb.CMD_SET_MODE_REQ, "SET_MODE")

    def _frame_of(self, message: amb.AmberMessage) -> ReceivedFrame | None:
        return amb.wmbus_frame_of(message, self.mode)


class RtlWmbusReceiver(Receiver):
    """rtl_wmbus decodes T1 and C1 at once; frames of a mode outside `mode` are skipped."""

    kind = "rtlwmbus"
    framer: RtlWmbusFramer

    def _reset(self) -> None:
        self.framer = RtlWmbusFramer()

    def _frames_of(self, data: bytes) -> list[ReceivedFrame]:
        heard = MODES[self.mode]
        frames = feed(self.framer, data, self.stats)
        kept = [f for f in frames if f.link_mode in heard]
        self.stats.skipped += len(frames) - len(kept)
        return kept

    def _end_of_input(self) -> bytes:
        return b"\n"


class HexReceiver(Receiver):
    """Hex lines, link CRCs detected and removed; a line whose CRCs fail is counted."""

    kind = "hex"
    framer: HexLineFramer

    def _reset(self) -> None:
        self.framer = HexLineFramer()

    def _frames_of(self, data: bytes) -> list[ReceivedFrame]:
        return feed(self.framer, data, self.stats)

    def _end_of_input(self) -> bytes:
        return b"\n"


_RECEIVERS: dict[str, type[Receiver]] = {
    "im871a": Im871aReceiver,
    "amb8465": Amb8465Receiver,
    "rtlwmbus": RtlWmbusReceiver,
    "hex": HexReceiver,
}


def _source(spec: DeviceSpec) -> ByteSource:
    if spec.source == "file":
        return FileSource(spec.target)
    if spec.source == "stdin":
        return StdinSource()
    if spec.source == "command":
        return CommandSource(spec.target)
    # A pty or a USB adapter ignores the speed for text sources; the two sticks need theirs.
    return SerialSource(spec.target, BAUD_RATES.get(spec.kind, 115200))


def open_receiver(
    device: str,
    *,
    mode: str = "T1",
    answer_timeout_s: float = 1.0,
    backoff: Backoff | None = None,
    reconnect_budget_s: float = 30.0,
    connect: bool = True,
) -> Receiver:
    """The receiver named by `device` (KIND:TARGET), opened and configured unless `connect`
    is False. ConfigError for a bad string or mode; TransportError, DeviceTimeout or
    DeviceError when the device cannot be reached or refuses."""
    spec = parse_device(device)
    receiver = _RECEIVERS[spec.kind](
        _source(spec),
        mode=mode,
        answer_timeout_s=answer_timeout_s,
        backoff=backoff,
        reconnect_budget_s=reconnect_budget_s,
    )
    if connect:
        receiver.open()
    return receiver
