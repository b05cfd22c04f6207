"""A pseudo-terminal behind a stable name, as udev gives a USB adapter one.

The simulators own the master side; a driver opens `link` (a symlink to the pty's slave device)
as it would open /dev/ttyUSB0. unplug() takes the device away: the link vanishes and the
driver's reads fail. plug() again brings a new pty behind the same link, so a driver that opens
the name again finds the device back.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tty
from pathlib import Path


class PtyLink:
    """One pty at a time behind `link` (default: `name` in a temporary directory of its own,
    removed by remove())."""

    def __init__(self, link: str | Path | None, *, prefix: str, name: str) -> None:
        self._own_dir = None if link else tempfile.mkdtemp(prefix=prefix)
        self.link = Path(link) if link else Path(self._own_dir or ".") / name
        self.master: int | None = None
        self._slave: int | None = None
        self.device = ""  # the slave's path while plugged in, e.g. /dev/pts/3

    def plug(self) -> int:
        """A new pty behind the link; its master descriptor (non-blocking)."""
        if self.master is not None:
            return self.master
        master, slave = os.openpty()
        # Raw from the start, so nothing echoes or translates before a driver opens the port;
        # the simulator keeps its own slave descriptor too, so the master side sees no hangup
        # between two opens by the driver.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.device = os.ttyname(slave)
        temporary = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(self.device)
        temporary.replace(self.link)  # atomic: a driver never finds the name half made
        return master

    def unplug(self) -> None:
        if self.master is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    def remove(self) -> None:
        """Unplug, and remove the temporary directory if the link was put in one."""
        self.unplug()
        if self._own_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self._own_dir)

    def read(self) -> bytes:
        """What the driver wrote; b"" when nothing is there or nobody has the port open (EIO)."""
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:  # BlockingIOError, InterruptedError, EIO: nothing to read right now
            return b""

    def write(self, data: bytes | bytearray) -> int:
        """Write what fits; the count written (0 when unplugged or the buffer is full, as it is
        when nobody reads)."""
        if self.master is None or not data:
            return 0
        try:
            return os.write(self.master, data)
        except OSError:
            return 0
