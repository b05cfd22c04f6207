"""What every wM-Bus receiver driver shares: reading with deadlines, the configuration
dialogue (request, wait for the answer), statistics, and recovery from a vanished device.

A Receiver reads from a ByteSource and hands what it read to the pure framer of its kind
(drivers/*_framing.py). frames() survives a vanished device (a serial port that fails, a
command that exits): it reopens with backoff, configures again and goes on; the budget for
that runs from the first failure until a frame comes through again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from drivers.byte_sources import ByteSource
from drivers.received import ReceivedFrame
from drivers.serial_port import Backoff
from metergate.errors import ConfigError, DecodeError, DeviceTimeout, TransportError

# The modes a collector listens in, and the meter modes each one hears.
MODES = {"T1": {"T1"}, "C1": {"C1"}, "S1": {"S1"}, "C1T1": {"C1", "T1"}}
T = TypeVar("T")
M = TypeVar("M")


@dataclass(slots=True)
class ReceiverStats:
    frames: int = 0
    skipped: int = 0  # frames of another mode, or heard before the configuration was done
    bad_indications: int = 0  # well-framed messages that hold no wM-Bus frame
    discarded_bytes: int = 0  # what the framers threw away while resynchronising
    bad_checksums: int = 0
    reconnects: int = 0


class _Framer(Protocol[M]):
    discarded_bytes: int
    bad_checksums: int

    def feed(self, data: bytes) -> list[M]: ...


def feed(framer: _Framer[M], data: bytes, stats: ReceiverStats) -> list[M]:
    """framer.feed, its discard counters added to `stats`."""
    discarded, bad = framer.discarded_bytes, framer.bad_checksums
    out = framer.feed(data)
    stats.discarded_bytes += framer.discarded_bytes - discarded
    stats.bad_checksums += framer.bad_checksums - bad
    return out


@dataclass(slots=True)
class _Outage:
    give_up: float  # time.monotonic() after which reconnecting stops
    delays: Iterator[float]


class Receiver:
    """A configured receiver. Use open() and close() (or `with`), then frames() or read()."""

    kind = ""

    def __init__(
        self,
        source: ByteSource,
        *,
        mode: str = "T1",
        answer_timeout_s: float = 1.0,
        backoff: Backoff | None = None,
        reconnect_budget_s: float = 30.0,
        poll_s: float = 0.2,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown link mode {mode[:10]!r}; use one of {', '.join(MODES)}")
        self.source = source
        self.mode = mode
        self.answer_timeout_s = answer_timeout_s
        self.backoff = backoff or Backoff()
        self.reconnect_budget_s = reconnect_budget_s
        self.poll_s = poll_s
        self.stats = ReceiverStats()
        self.is_open = False
        self._ended = False
        self._reset()

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.source.name}"

    def open(self) -> None:
        """Connect and configure; a failed configuration leaves the source closed."""
        self.source.open()
        self._reset()  # a message cut by the last close must not swallow the next one
        self._ended = False
        try:
            self._configure()
        except BaseException:
            self.source.close()
            raise
        self.is_open = True

    def close(self) -> None:
        self.is_open = False
        self.source.close()

    def __enter__(self) -> Receiver:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _reset(self) -> None:
        """A fresh framer."""
        raise NotImplementedError

    def _configure(self) -> None:
        """Set the link mode; receivers without commands have nothing to do."""

    def _frames_of(self, data: bytes) -> list[ReceivedFrame]:
        raise NotImplementedError

    def _end_of_input(self) -> bytes:
        """What completes the last message of a file: nothing for binary sources."""
        return b""

    def read(self, deadline: float) -> list[ReceivedFrame] | None:
        """The frames that arrive first, waiting until `deadline` (time.monotonic()); [] if
        none, None at the end of a replayed file."""
        data = self.source.read(deadline)
        if data is None:
            if self._ended:
                return None
            # A last line without its line end is still a line.
            self._ended = True
            data = self._end_of_input()
        frames = self._frames_of(data)
        self.stats.frames += len(frames)
        return frames

    def frames(self, *, idle_timeout_s: float | None = None) -> Iterator[ReceivedFrame]:
        """Every frame until the end of a file, forever from a device. DeviceTimeout after
        `idle_timeout_s` without a frame; TransportError when the device stays away longer
        than the reconnect budget."""
        if not self.is_open:
            self.open()
        last = time.monotonic()
        outage: _Outage | None = None
        while True:
            deadline = time.monotonic() + self.poll_s
            if idle_timeout_s is not None:
                deadline = min(deadline, last + idle_timeout_s)
            try:
                batch = self.read(deadline)
            except TransportError as error:
                if outage is None:
                    budget = time.monotonic() + self.reconnect_budget_s
                    outage = _Outage(budget, self.backoff.delays())
                self._recover(error, outage)
                last = time.monotonic()
                continue
            if batch is None:
                return
            if batch:
                last = time.monotonic()
                outage = None
                yield from batch
            elif idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                raise DeviceTimeout(f"{self.name}: no telegram for {idle_timeout_s:g} s")

    def _recover(self, error: TransportError, outage: _Outage) -> None:
        """Reopen and configure again, waiting longer before each attempt (Backoff).

        The budget runs from the first failure until a frame comes through again, so a source
        that opens and dies at once (a command that exits) is not restarted forever.
        """
        self.close()
        if not self.source.reconnects:
            raise error
        last_error = error
        for delay in outage.delays:
            if time.monotonic() + delay > outage.give_up:
                raise TransportError(
                    f"{self.name}: still gone after {self.reconnect_budget_s:g} s: {last_error}"
                ) from last_error
            time.sleep(delay)
            try:
                self.open()
            except TransportError as again:
                last_error = again
                continue
            self.stats.reconnects += 1
            return

    def _exchange(self, request: bytes, answer: Callable[[bytes], T | None], what: str) -> T:
        """Send `request`; feed what comes back to `answer` until it returns a value."""
        self.source.write(request)
        deadline = time.monotonic() + self.answer_timeout_s
        while True:
            data = self.source.read(deadline)
            if data:
                result = answer(data)
                if result is not None:
                    return result
            elif data is None or time.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.name}: no answer to {what} within {self.answer_timeout_s:g} s"
                )


class CommandReceiver(Receiver, Generic[M]):
    """A receiver configured with command frames (iM871A, AMB8465). Its answers and the
    telegrams it hears share one stream: telegrams before an answer are skipped (heard in the
    old mode), those read along with it are kept for _frames_of."""

    framer: _Framer[M]

    def _reset(self) -> None:
        """Subclasses make their framer, then call this."""
        self._after_answer: list[M] = []

    def _awaiting(
        self, is_answer: Callable[[M], bool], is_telegram: Callable[[M], bool]
    ) -> Callable[[bytes], M | None]:
        """What _exchange feeds its answers to: the first message `is_answer` accepts."""

        def answer(data: bytes) -> M | None:
            messages = feed(self.framer, data, self.stats)
            for index, message in enumerate(messages):
                if is_answer(message):
                    self._after_answer = messages[index + 1 :]
                    return message
                self.stats.skipped += is_telegram(message)
            return None

        return answer

    def _frame_of(self, message: M) -> ReceivedFrame | None:
        """The wM-Bus frame a data indication carries; None for other messages."""
        raise NotImplementedError

    def _frames_of(self, data: bytes) -> list[ReceivedFrame]:
        out = []
        messages = self._after_answer + feed(self.framer, data, self.stats)
        self._after_answer = []
        for message in messages:
            try:
                frame = self._frame_of(message)
            except DecodeError:
                self.stats.bad_indications += 1
                continue
            if frame is not None:
                out.append(frame)
        return out
