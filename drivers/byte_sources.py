"""Byte sources for receivers: a serial port, a file, stdin, a command's stdout.

Each reads with a deadline and raises nothing but TransportError (DESIGN.md §1: drivers
translate every third-party error). read() returns b"" when nothing came by the deadline and
None at the end of a file; `reconnects` says whether opening again may help.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import stat
import subprocess
import sys
import time

from drivers.serial_port import SerialPort
from metergate.errors import TransportError

_READ_SIZE = 65536


class ByteSource:
    """Where a receiver's bytes come from."""

    reconnects = True

    def __init__(self, name: str) -> None:
        self.name = name

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def read(self, deadline: float) -> bytes | None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise TransportError(f"{self.name}: this source takes no commands")


class SerialSource(ByteSource):
    """A serial port or pyserial URL, 8N1 as the USB receivers use it."""

    def __init__(self, url: str, baudrate: int) -> None:
        super().__init__(url)
        self.port = SerialPort(url, baudrate=baudrate, parity="N")

    def open(self) -> None:
        self.port.open()
        self.port.drain()  # what the device said before we listened is of no use

    def close(self) -> None:
        self.port.close()

    def read(self, deadline: float) -> bytes | None:
        return self.port.read(deadline)

    def write(self, data: bytes) -> None:
        self.port.write(data)


class _FdSource(ByteSource):
    """A file descriptor read with a deadline; regular files cannot be polled and need not be."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._fd: int | None = None
        self._selector: selectors.BaseSelector | None = None

    def _attach(self, fd: int) -> None:
        self._fd = fd
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return
        selector = selectors.DefaultSelector()
        try:
            selector.register(fd, selectors.EVENT_READ)
        except OSError:  # epoll refuses some devices (/dev/null); reading them never blocks
            selector.close()
            return
        self._selector = selector

    def _detach(self) -> int | None:
        fd, self._fd = self._fd, None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        return fd

    def _end(self) -> bytes | None:
        return None

    def read(self, deadline: float) -> bytes | None:
        if self._fd is None:
            raise TransportError(f"{self.name}: not open")
        try:
            wait = max(0.0, deadline - time.monotonic())
            if self._selector is not None and not self._selector.select(wait):
                return b""
            data = os.read(self._fd, _READ_SIZE)
        except OSError as error:
            raise TransportError(f"{self.name}: read failed: {error}") from error
        return data if data else self._end()


class FileSource(_FdSource):
    reconnects = False

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def open(self) -> None:
        try:
            self._attach(os.open(self.path, os.O_RDONLY))
        except OSError as error:
            raise TransportError(f"{self.path}: cannot open: {error.strerror}") from error

    def close(self) -> None:
        fd = self._detach()
        if fd is not None:
            os.close(fd)


class StdinSource(_FdSource):
    reconnects = False

    def __init__(self) -> None:
        super().__init__("stdin")

    def open(self) -> None:
        try:
            self._attach(sys.stdin.fileno())
        except (OSError, ValueError, AttributeError) as error:  # closed or no stdin at all
            raise TransportError(f"stdin cannot be read: {error}") from error

    def close(self) -> None:
        self._detach()  # stdin stays open: it is not ours


class CommandSource(_FdSource):
    """A command's stdout, run in its own process group so that close() stops the whole
    pipeline; its exit is a TransportError (a receiver process dies with its dongle)."""

    def __init__(self, command: str) -> None:
        super().__init__(f"command {command!r}")
        self.command = command
        self._process: subprocess.Popen[bytes] | None = None

    def open(self) -> None:
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            raise TransportError(f"{self.name}: cannot start: {error}") from error
        self._process = process
        assert process.stdout is not None
        self._attach(process.stdout.fileno())

    def _end(self) -> bytes | None:
        status: int | str = "unknown"
        if self._process is not None:
            try:
                status = self._process.wait(1)
            except subprocess.TimeoutExpired:
                status = "unknown: it closed its output and runs on"  # close() stops it
        raise TransportError(f"{self.name} exited with status {status}")

    def close(self) -> None:
        self._detach()
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
