"""EN 13757-2 timing of a wired M-Bus, and the tally of what a master did on the bus.

A slave answers between 11 bit times and 330 bit times + 50 ms after the request's last bit
(PROTOCOL_NOTES §8.5); a character is 11 bit times (8E1: start, 8 data, parity, stop). The
master waits for the request's own transmission time, that turnaround and an allowance for
adapter latency before it calls a slave silent. BusStats sets what the master did beside what
the standard's times allow for the same exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MbusTiming:
    """EN 13757-2 times at `baud`, plus `latency_s` for USB adapters and the OS.

    `answer_timeout_s` replaces the standard's wait for a first answer byte, for simulated
    buses that answer at once.
    """

    baud: int = 2400
    latency_s: float = 0.05
    answer_timeout_s: float | None = None

    @property
    def byte_s(self) -> float:
        return 11 / self.baud  # 8E1: start, 8 data, parity, stop

    @property
    def turnaround_min_s(self) -> float:
        return 11 / self.baud

    @property
    def turnaround_max_s(self) -> float:
        return 330 / self.baud + 0.05

    def answer_timeout(self, request_length: int) -> float:
        if self.answer_timeout_s is not None:
            return self.answer_timeout_s
        return request_length * self.byte_s + self.turnaround_max_s + self.latency_s

    @property
    def gap_s(self) -> float:
        """Silence that ends a frame still arriving. FT 1.2 allows no pause inside a frame;
        ten characters' time tolerates a slave (or a simulator) that stalls a little."""
        return 10 * self.byte_s + self.latency_s

    @property
    def quiet_s(self) -> float:
        """How long to listen after a complete answer for a colliding one."""
        return 2 * self.byte_s + self.latency_s


@dataclass(slots=True)
class BusStats:
    """What the master did on the bus; enough to compute what the standard's times allow."""

    requests: int = 0
    answered: int = 0
    silent: int = 0
    garbled: int = 0
    retries: int = 0
    request_bytes: int = 0
    reply_bytes: int = 0
    stale_bytes: int = 0
    echoes: int = 0
    reopens: int = 0

    def physical_limit_s(self, timing: MbusTiming) -> float:
        """The least time these exchanges take at the standard's speed: every byte at 11 bit
        times, answers after the shortest turnaround, silence only after the longest."""
        return (
            (self.request_bytes + self.reply_bytes) * timing.byte_s
            + self.answered * timing.turnaround_min_s
            + self.silent * timing.turnaround_max_s
        )
