"""A simulated M-Bus on a real port: a pseudo-terminal or a TCP socket on 127.0.0.1.

The bus (mbus_slave.SlaveBus) runs in one background thread. With `baud` set, the thread keeps
the wire's pace: a request takes 11 bit times per byte to arrive (8E1, PROTOCOL_NOTES §8.5),
the slaves answer after the shortest turnaround the standard allows (11 bit times), and the
answer comes out one character per 11 bit times. Without it, answers come at once.

A pty is reached through a symlink, as udev gives a USB adapter a stable name: unplug() takes
the device away (the master's reads fail and the link vanishes), replug() brings a new pty
behind the same link. A TCP server drops its connection and stops listening, then listens on
the same port again.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from decoders.mbus_link import encode_frame
from firmware_sim.mbus_slave import SlaveBus
from firmware_sim.pty_link import PtyLink
from firmware_sim.selector_thread import SelectorThread, utc_now

TURNAROUND_BITS = 11  # EN 13757-2: the earliest a slave may answer (PROTOCOL_NOTES §8.5)
BITS_PER_BYTE = 11


class MbusServer(SelectorThread):
    """The I/O around a SlaveBus; subclasses own the endpoint. Start, then stop, once."""

    def __init__(
        self,
        bus: SlaveBus,
        *,
        baud: int | None = None,
        clock: Callable[[], datetime] = utc_now,
        echo: bool = False,
    ) -> None:
        super().__init__()
        self.bus = bus
        self.baud = baud
        self.clock = clock
        self.echo = echo  # answer with the request first, as some level converters do
        self.lock = threading.Lock()  # held while the bus handles a request
        self.requests = 0
        self._outgoing: deque[tuple[float, bytes]] = deque()
        self._line_free_at = 0.0
        self._frame_started_at = 0.0

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def unplug(self) -> None:
        """Take the device away: the master's port fails until replug()."""
        self.call(self._close)

    def replug(self) -> None:
        self.call(self._open)

    def _timeout(self) -> float | None:
        if self._outgoing:
            return max(0.0, self._outgoing[0][0] - time.monotonic())
        return None

    def _tick(self) -> None:
        self._flush_due()

    def _flush_due(self) -> None:
        now = time.monotonic()
        chunk = bytearray()
        while self._outgoing and self._outgoing[0][0] <= now:
            chunk += self._outgoing.popleft()[1]
        if chunk:
            self._send(bytes(chunk))

    def _received(self, data: bytes) -> None:
        """Bytes from the master: hand them to the bus and schedule what it answers."""
        arrived = time.monotonic()
        if not self.bus.framer.pending:
            self._frame_started_at = arrived
        with self.lock:
            exchanges = self.bus.receive(data, self.clock())
        for exchange in exchanges:
            self.requests += 1
            echo = encode_frame(exchange.request) if self.echo else b""
            if self.baud is None:
                if echo or exchange.wire:
                    self._send(echo + exchange.wire)
                continue
            bit = 1 / self.baud
            start = max(self._frame_started_at, self._line_free_at)
            request_end = start + exchange.request_length * BITS_PER_BYTE * bit
            self._schedule(echo, start)
            answer_start = request_end + TURNAROUND_BITS * bit
            self._schedule(exchange.wire, answer_start)
            self._line_free_at = answer_start + len(exchange.wire) * BITS_PER_BYTE * bit
            self._frame_started_at = arrived

    def _schedule(self, data: bytes, start: float) -> None:
        """Characters sent from `start` on; each arrives with its last bit, 11 bit times on."""
        byte_time = BITS_PER_BYTE / (self.baud or 1)
        for i, value in enumerate(data):
            self._outgoing.append((start + (i + 1) * byte_time, bytes((value,))))


class PtyMbusServer(MbusServer):
    """The bus behind a pseudo-terminal; `link` is the stable name to open."""

    def __init__(
        self,
        bus: SlaveBus,
        *,
        link: str | Path | None = None,
        baud: int | None = None,
        clock: Callable[[], datetime] = utc_now,
        echo: bool = False,
    ) -> None:
        super().__init__(bus, baud=baud, clock=clock, echo=echo)
        self.pty = PtyLink(link, prefix="metergate-mbus-", name="ttyMBUS0")
        self.link = self.pty.link

    @property
    def url(self) -> str:
        return str(self.link)

    @property
    def device(self) -> str:
        """The pty's own path while plugged in (the link leads there)."""
        return self.pty.device

    def _open(self) -> None:
        if self.pty.master is None:
            self.selector.register(self.pty.plug(), selectors.EVENT_READ, "pty")

    def _close(self) -> None:
        if self.pty.master is None:
            return
        self.selector.unregister(self.pty.master)
        self.pty.unplug()
        self._outgoing.clear()

    def _readable(self, key: selectors.SelectorKey) -> None:
        data = self.pty.read()
        if data:
            self._received(data)

    def _send(self, data: bytes) -> None:
        # A full buffer means nobody reads: the wire keeps no backlog, so the rest is lost.
        self.pty.write(data)

    def stop(self) -> None:
        super().stop()
        self.pty.remove()


class TcpMbusServer(MbusServer):
    """The bus behind a TCP port, as an M-Bus to Ethernet gateway offers it: one master at a
    time (a new connection replaces the old one)."""

    def __init__(
        self,
        bus: SlaveBus,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        baud: int | None = None,
        clock: Callable[[], datetime] = utc_now,
        echo: bool = False,
    ) -> None:
        super().__init__(bus, baud=baud, clock=clock, echo=echo)
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def _open(self) -> None:
        self._listener = self._listen(self.host, self.port)
        self.port = self._listener.getsockname()[1]

    def _drop_client(self) -> None:
        if self._client is not None:
            self._discard(self._client)
            self._client = None
            self._outgoing.clear()

    def _close(self) -> None:
        self._drop_client()
        self._discard(self._listener)
        self._listener = None

    def _readable(self, key: selectors.SelectorKey) -> None:
        if key.data == "listener" and self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            self._drop_client()
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._client = client
            self.selector.register(client, selectors.EVENT_READ, "client")
            return
        if self._client is None:
            return
        try:
            data = self._client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self._received(data)

    def _send(self, data: bytes) -> None:
        if self._client is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            self._client.sendall(data)
