"""A simulated wM-Bus receiver on a pseudo-terminal, fed by the fleet's transmissions.

ReceiverServer puts a device of firmware_sim.receivers behind a pty reached through a symlink,
as udev names a USB receiver, and plays the fleet's transmissions as the injected clock
reaches them. At a seeded rate it spoils what goes over the serial line: garbage between
messages, a message cut short, a byte changed, a well-framed indication of a truncated
telegram. unplug() takes the device away (the symlink vanishes and the host's reads fail),
replug() brings it back powered up from its defaults, so a driver must configure it again.
"""

from __future__ import annotations

import random
import selectors
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from firmware_sim.pty_link import PtyLink
from firmware_sim.receivers import FAULTS, ReceiverDevice, spoil
from firmware_sim.selector_thread import SelectorThread, utc_now
from firmware_sim.wmbus_meters import Timeline, Transmission, WmbusFleet

_MAX_BACKLOG = 1 << 16  # bytes kept for a host that does not read, as a USB CDC buffer does


class ReceiverServer(SelectorThread):
    """A device on a pty, fed by the fleet's transmissions; start, then stop, once.

    Counters for tests: `sent` indications written, `unheard` transmissions the device did not
    hear (another mode, a failed CRC), `faults` spoiled messages, `dropped` indications lost
    because nobody read the backlog, `unplugged_for` transmissions while the device was away.
    """

    def __init__(
        self,
        device: ReceiverDevice,
        air: WmbusFleet,
        *,
        clock: Callable[[], datetime] = utc_now,
        link: str | Path | None = None,
        fault_rate: float = 0.0,
        seed: int = 0,
        poll_s: float = 0.01,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("the fault rate is a probability")
        super().__init__()
        self.device = device
        self.air = air
        self.clock = clock
        self.fault_rate = fault_rate
        self.poll_s = poll_s
        self._rng = random.Random(f"metergate-receiver:{seed}")
        self.pty = PtyLink(link, prefix="metergate-wmbus-", name="ttyWMBUS0")
        self.link = self.pty.link
        self.sent = self.unheard = self.faults = self.dropped = self.unplugged_for = 0
        self._backlog = bytearray()
        self._timeline: Timeline | None = None  # from start() on

    @property
    def url(self) -> str:
        return str(self.link)

    @property
    def tty(self) -> str:
        """The pty's own path while plugged in (the link leads there)."""
        return self.pty.device

    def stop(self) -> None:
        super().stop()
        self.pty.remove()

    def unplug(self) -> None:
        self.call(self._close)

    def replug(self) -> None:
        self.call(self._plug)

    def inject(self, data: bytes) -> None:
        """Send `data` to the host as they are: line noise, for tests."""
        self.call(lambda: self._queue(data))

    def _open(self) -> None:
        self._plug()
        self._timeline = self.air.timeline(self.clock())

    def _plug(self) -> None:
        if self.pty.master is None:
            self.selector.register(self.pty.plug(), selectors.EVENT_READ)
            self.device.power_on()

    def _close(self) -> None:
        if self.pty.master is None:
            return
        self.selector.unregister(self.pty.master)
        self.pty.unplug()
        self._backlog.clear()

    def _timeout(self) -> float | None:
        return self.poll_s

    def _readable(self, key: selectors.SelectorKey) -> None:
        self._from_host()

    def _tick(self) -> None:
        try:
            self._air()
        finally:
            self._flush()

    def _from_host(self) -> None:
        data = self.pty.read()
        answer = self.device.receive(data) if data else b""
        if answer:
            self._queue(answer)

    def _air(self) -> None:
        if self._timeline is None:
            return
        for t, meter in self._timeline.until(self.clock()):
            if self.pty.master is None:
                self.unplugged_for += 1
                continue
            tx = meter.transmission(t)
            if not self.device.hears(tx):
                self.unheard += 1
                continue
            self._queue(self._message(tx))
            self.sent += 1

    def _message(self, tx: Transmission) -> bytes:
        device = self.device
        if not self._rng.random() < self.fault_rate:
            return device.indication(tx, tx.frame)
        self.faults += 1
        kind = self._rng.choice(FAULTS)
        if kind == "short":
            # A well-framed indication of a telegram that lost its end: it reaches the decoder.
            size = self._rng.randrange(11, len(tx.frame))
            return device.indication(tx, bytes((size - 1,)) + tx.frame[1:size])
        return spoil(kind, device.indication(tx, tx.frame), self._rng, text=device.text)

    def _queue(self, data: bytes) -> None:
        if len(self._backlog) + len(data) > _MAX_BACKLOG:
            self.dropped += 1
            return
        self._backlog += data

    def _flush(self) -> None:
        # A full pty buffer means nobody reads: what stays in the backlog goes out later, whole.
        written = self.pty.write(self._backlog)
        del self._backlog[:written]
