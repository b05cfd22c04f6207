"""A serial line through pyserial that raises only metergate's errors and outlives an unplug.

`serial_for_url` opens device paths (`/dev/ttyUSB0`), `socket://host:port` and `rfc2217://`
alike. pyserial reports trouble as SerialException, OSError, ValueError (a bad URL or setting)
and, on POSIX, termios.error; any of them becomes a TransportError here, a write that cannot
complete in time a DeviceTimeout (DESIGN.md §8: drivers translate every third-party error).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import serial  # type: ignore[import-untyped]  # pyserial ships no type hints

from metergate.errors import DeviceTimeout, MetergateError, TransportError


def is_pseudo_terminal(url: str) -> bool:
    """A local path that leads to a pty (a simulator, or socat in front of a TCP gateway)."""
    return "://" not in url and os.path.realpath(url).startswith("/dev/pts/")


def line_parity(url: str, parity: str) -> str:
    """The parity to ask for on `url`. A pty carries bytes, not line settings: Linux clears
    PARENB on it and newer kernels refuse a request to set it, so none is asked for there."""
    return serial.PARITY_NONE if is_pseudo_terminal(url) else parity


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between attempts to reopen a port: initial, then times factor, up to maximum."""

    initial_s: float = 0.05
    factor: float = 2.0
    maximum_s: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.maximum_s, delay * self.factor)


class SerialPort:
    """One port, opened by URL. Reads wait in slices of `poll_s`, so a deadline is kept to that
    precision whatever transport pyserial uses underneath."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 2400,
        bytesize: int = 8,
        parity: str = "E",
        stopbits: float = 1,
        poll_s: float = 0.005,
        write_timeout_s: float = 2.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.poll_s = poll_s
        self.write_timeout_s = write_timeout_s
        self.backoff = backoff or Backoff()
        self.reopens = 0
        self._port: serial.SerialBase | None = None

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except MetergateError:
            raise
        except serial.SerialTimeoutException as error:
            raise DeviceTimeout(f"{self.url}: {action} timed out") from error
        except Exception as error:
            # Whatever pyserial or the OS below it raise (SerialException, OSError, ValueError,
            # termios.error, socket errors of socket:// and rfc2217://) means the line failed.
            self._discard()
            raise TransportError(f"{self.url}: {action} failed: {error}") from error

    def _discard(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        if self._port is not None:
            return
        # pyserial's RFC 2217 client refuses a write timeout (NotImplementedError on open); its
        # writes go to a socket that times out by itself after 5 s.
        rfc2217 = self.url.lower().startswith("rfc2217://")
        with self._translated("open"):
            self._port = serial.serial_for_url(
                self.url,
                baudrate=self.baudrate,
                bytesize=self.bytesize,
                parity=line_parity(self.url, self.parity),
                stopbits=self.stopbits,
                timeout=self.poll_s,
                write_timeout=None if rfc2217 else self.write_timeout_s,
            )
            # socket:// and rfc2217:// leave Nagle on: after a request nobody answered, the
            # repeat would wait for the delayed ACK of the first (up to 40 ms on Linux), longer
            # than a fast bus takes to answer. A request must leave at once.
            connection = getattr(self._port, "_socket", None)
            if isinstance(connection, socket.socket):
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self._discard()

    def reopen(self, budget_s: float) -> None:
        """Close, then open again, waiting longer after each failure; give up after
        `budget_s` seconds with the last TransportError."""
        self._discard()
        give_up = time.monotonic() + budget_s
        for delay in self.backoff.delays():
            try:
                self.open()
            except TransportError:
                if time.monotonic() + delay > give_up:
                    raise
                time.sleep(delay)
                continue
            self.reopens += 1
            return

    def _require(self) -> serial.SerialBase:
        if self._port is None:
            raise TransportError(f"{self.url}: the port is not open")
        return self._port

    def write(self, data: bytes) -> None:
        port = self._require()
        with self._translated("write"):
            port.write(data)
            port.flush()

    def read(self, deadline: float) -> bytes:
        """What arrives first, waiting until `deadline` (time.monotonic()); b"" if nothing."""
        port = self._require()
        with self._translated("read"):
            while True:
                waiting = port.in_waiting
                if waiting:
                    return bytes(port.read(waiting))
                if time.monotonic() >= deadline:
                    return b""
                first = port.read(1)
                if first:
                    return bytes(first) + bytes(port.read(port.in_waiting))

    def drain(self) -> bytes:
        """Discard and return whatever is waiting (late answers, noise)."""
        port = self._require()
        with self._translated("read"):
            waiting = port.in_waiting
            return bytes(port.read(waiting)) if waiting else b""

    def __enter__(self) -> SerialPort:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
