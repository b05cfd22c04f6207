"""An RFC 2217 server in front of a serial device: the network serial port an M-Bus (or any
serial) to Ethernet gateway offers, so a master can open `rfc2217://host:port`.

The client sets the line (baud rate, data size, parity, stop size, flow control, DTR and RTS)
with Telnet COM-PORT-OPTION subnegotiations (RFC 2217) and exchanges data over the same TCP
connection, a data byte FF doubled as Telnet IAC (RFC 854). pyserial's PortManager speaks the
protocol; the bridge moves the bytes, in one SelectorThread.

A pseudo-terminal (the simulated bus) carries bytes, not a line: Linux refuses parity and any
data size but 8 on it, and it has no modem lines. There the bridge keeps those settings as the
client set them and reports them back, as a serial server would after setting them on its UART,
and reports the modem inputs (CTS, DSR, RI, CD) off. The baud rate and stop bits reach the pty.
"""

from __future__ import annotations

import selectors
import socket
from typing import Any

import serial  # type: ignore[import-untyped]  # pyserial ships no type hints
from serial.rfc2217 import PortManager  # type: ignore[import-untyped]

from drivers.serial_port import is_pseudo_terminal
from firmware_sim.selector_thread import SelectorThread

# Settings a pty refuses (data size, parity) or lacks (the modem outputs), kept as set.
_PTY_KEPT = ("bytesize", "parity", "dtr", "rts")


def _setting(name: str) -> property:
    """A line setting PortManager reads and writes: the device's own, except on a pty where
    the device has no such thing (_PTY_KEPT)."""

    def get(line: BridgedLine) -> Any:
        if line.pseudo_terminal and name in _PTY_KEPT:
            return line.kept[name]
        return getattr(line.device, name)

    def put(line: BridgedLine, value: Any) -> None:
        if line.pseudo_terminal and name in _PTY_KEPT:
            line.kept[name] = value
        else:
            setattr(line.device, name, value)

    return property(get, put)


def _modem_input(name: str) -> property:
    def get(line: BridgedLine) -> bool:
        return False if line.pseudo_terminal else bool(getattr(line.device, name))

    return property(get)


class BridgedLine:
    """The device's line as PortManager sees it (the attributes of a pyserial port it uses)."""

    baudrate = _setting("baudrate")
    bytesize = _setting("bytesize")
    parity = _setting("parity")
    stopbits = _setting("stopbits")
    xonxoff = _setting("xonxoff")
    rtscts = _setting("rtscts")
    break_condition = _setting("break_condition")
    dtr = _setting("dtr")
    rts = _setting("rts")
    cts = _modem_input("cts")
    dsr = _modem_input("dsr")
    ri = _modem_input("ri")
    cd = _modem_input("cd")

    def __init__(self, device: serial.SerialBase, *, pseudo_terminal: bool) -> None:
        self.device = device
        self.pseudo_terminal = pseudo_terminal
        self.kept: dict[str, Any] = {name: getattr(device, name) for name in _PTY_KEPT}

    def reset_input_buffer(self) -> None:
        self.device.reset_input_buffer()

    def reset_output_buffer(self) -> None:
        self.device.reset_output_buffer()


class _Telnet:
    """The connection PortManager answers on (it calls write)."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client

    def write(self, data: bytes) -> None:
        self.client.sendall(data)


class Rfc2217Bridge(SelectorThread):
    """`device` (a serial device path) behind an RFC 2217 port on `host`; port 0 picks a free
    one. One client at a time: a new connection replaces the old one.

    When the device fails (unplugged), the bridge drops the client and stops listening, so a
    client's connect fails at once; it looks for the device every `retry_s` and listens on
    the same port again when it is back.
    """

    def __init__(
        self, device: str, *, host: str = "127.0.0.1", port: int = 0, retry_s: float = 0.1
    ) -> None:
        super().__init__()
        self.device_path = device
        self.host = host
        self.port = port
        self.retry_s = retry_s
        self.line: BridgedLine | None = None
        self.connections = 0  # clients accepted
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._manager: PortManager | None = None

    @property
    def url(self) -> str:
        return f"rfc2217://{self.host}:{self.port}"

    # --- endpoints --------------------------------------------------------------------------

    def _open(self) -> None:
        """The device, then the port; start() fails if the device is not there."""
        device = serial.serial_for_url(self.device_path, timeout=0)
        self.line = BridgedLine(device, pseudo_terminal=is_pseudo_terminal(self.device_path))
        self.selector.register(device.fileno(), selectors.EVENT_READ, "device")
        self._listener = self._listen(self.host, self.port)
        self.port = self._listener.getsockname()[1]

    def _close(self) -> None:
        self._drop_client()
        self._discard(self._listener)
        self._listener = None
        line, self.line = self.line, None
        if line is not None:
            self.selector.unregister(line.device.fileno())
            line.device.close()

    def _drop_client(self) -> None:
        self._discard(self._client)
        self._client = self._manager = None

    # --- events -----------------------------------------------------------------------------

    def _readable(self, key: selectors.SelectorKey) -> None:
        if key.data == "listener":
            self._accept()
        elif key.data == "client":
            self._from_client()
        else:
            self._from_device()

    def _accept(self) -> None:
        if self._listener is None or self.line is None:
            return
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self._drop_client()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(5.0)  # a client that stops reading cannot stall the bridge for ever
        self._client = client
        self.selector.register(client, selectors.EVENT_READ, "client")
        self.connections += 1
        try:
            self._manager = PortManager(self.line, _Telnet(client))  # sends its option requests
        except OSError:
            self._drop_client()

    def _from_client(self) -> None:
        if self._client is None or self._manager is None or self.line is None:
            return
        try:
            data = self._client.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        try:
            # filter() applies the client's settings to the line as it meets them.
            payload = b"".join(self._manager.filter(data))
        except OSError:  # the answer could not be sent, or the device refused a setting
            self._drop_client()
            return
        if payload:
            try:
                self.line.device.write(payload)
            except OSError:  # pyserial's SerialException included: the device vanished
                self._close()

    def _from_device(self) -> None:
        if self.line is None:
            return
        device = self.line.device
        try:
            data = device.read(device.in_waiting or 1)
        except OSError:
            self._close()
            return
        if not data or self._client is None or self._manager is None:
            return  # nobody listens: the bytes are gone, as on a serial server's line
        try:
            self._client.sendall(b"".join(self._manager.escape(data)))
        except OSError:
            self._drop_client()

    def _timeout(self) -> float | None:
        if self.line is None:
            return self.retry_s
        return 1.0 if self._manager is not None else None

    def _tick(self) -> None:
        if self.line is None:
            try:
                self._open()
            except (OSError, ValueError):  # still away (SerialException is an OSError)
                self._close()
            return
        # NOTIFY-MODEMSTATE (RFC 2217): PortManager sends only what changed, if anything.
        if self._manager is not None:
            try:
                self._manager.check_modem_lines()
            except OSError:
                self._drop_client()
