"""The one thread a simulated device runs in: a selector loop that other threads steer.

The device's state belongs to that thread. Another thread (a test, a command's main loop) acts on
it only through call(), which runs an action between two events and waits for it; so unplugging
a device or injecting noise needs no lock around the device's own state.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self


def utc_now() -> datetime:
    """The simulators' default clock."""
    return datetime.now(UTC)


class SelectorThread:
    """Start, then stop, once. Subclasses open their endpoints in _open(), register them with
    `selector`, handle them in _readable(), and close them in _close()."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []  # what went wrong inside the thread, for tests
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._commands: deque[tuple[Callable[[], None], threading.Event]] = deque()
        self._running = False
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    # --- what subclasses provide ----------------------------------------------------------

    def _open(self) -> None:
        """Open the endpoints; runs in start(), before the thread."""
        raise NotImplementedError

    def _close(self) -> None:
        """Close the endpoints; runs in the thread."""
        raise NotImplementedError

    def _readable(self, key: selectors.SelectorKey) -> None:
        raise NotImplementedError

    def _timeout(self) -> float | None:
        """How long the selector may wait; None: until an event."""
        return None

    def _tick(self) -> None:
        """Work after each wake-up (due output, the air's next transmissions)."""

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> Self:
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            self._open()
        except BaseException:
            self._close()  # what _open got to
            self.stop()  # not running yet: closes what __init__ opened
            raise
        self._running = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._running:
            self.call(self._halt)
            self._thread.join(5)
        self.selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def call(self, action: Callable[[], None]) -> None:
        """Run `action` in the thread, between two events, and wait for it."""
        done = threading.Event()
        self._commands.append((action, done))
        os.write(self._wake_w, b"x")
        if not done.wait(5):
            raise RuntimeError(f"the {type(self).__name__} thread does not respond")

    def _listen(self, host: str, port: int) -> socket.socket:
        """A TCP listener on host:port (port 0: a free one), registered as "listener"."""
        listener = socket.create_server((host, port))
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, "listener")
        return listener

    def _discard(self, connection: socket.socket | None) -> None:
        """Unregister and close a socket, if there is one."""
        if connection is not None:
            self.selector.unregister(connection)
            connection.close()

    def _halt(self) -> None:
        self._running = False
        self._close()

    # --- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while self._running:
            for key, _ in self.selector.select(self._timeout()):
                if key.fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                try:
                    self._readable(key)
                except Exception as error:  # a bug: keep serving, let the test see it
                    self.errors.append(error)
            while self._commands:
                action, done = self._commands.popleft()
                action()
                done.set()
            if not self._running:
                break
            try:
                self._tick()
            except Exception as error:
                self.errors.append(error)
