"""The demo's history through the gateway, no faster than the ingest stores it (issue 7).

The history's frames and polls go into the gateway's pipeline with their own received_at, and
from there take the live path: spool, publisher, broker, ingest. A broker keeps what a
subscriber has not taken yet in a queue, and a queue may have a limit: Mosquitto's default is
1000 messages per client, past which QoS 1 messages are dropped without a word (DESIGN.md
section 3). Months of history reach the gateway in seconds, so at most WINDOW of them are on
their way at a time: every CHECK_EVERY-th reading message spooled is a checkpoint, and more
history goes in only once the checkpoints show up in the database (meter_status, one row per
reading message, keyed by msg_id).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from gateway.pipeline import Item, Pipeline
from metergate.demo_process import StoppedError

WINDOW = 500
CHECK_EVERY = 100
STALL_S = 120.0  # a checkpoint not stored for this long is given up (and said so)


@dataclass(slots=True)
class Tracker:
    """The gateway's on_spooled callback (pipeline thread): counts the history's messages
    (received before `until`) and notes checkpoints; also the newest reading overall."""

    until: datetime
    spooled: int = 0
    checkpoints: deque[tuple[int, str]] = field(default_factory=deque)
    last_history: tuple[int, str] | None = None
    last_reading: str | None = None

    def __call__(self, messages: Sequence[dict[str, Any]]) -> None:
        for message in messages:
            is_reading = "readings" in message
            if is_reading:
                self.last_reading = message["msg_id"]
            if datetime.fromisoformat(message["received_at"]) >= self.until:
                continue
            self.spooled += 1
            if is_reading:
                self.last_history = (self.spooled, message["msg_id"])
                if self.spooled % CHECK_EVERY == 0:
                    self.checkpoints.append(self.last_history)


class Backfill:
    def __init__(
        self, database_url: str, stopping: threading.Event, say: Callable[[str], None]
    ) -> None:
        self.database_url = database_url
        self.stopping = stopping
        self.say = say
        self.confirmed = 0  # history messages known to be stored

    def stored(self, msg_id: str) -> bool:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT 1 FROM meter_status WHERE msg_id = %s", (msg_id,))
            return row.fetchone() is not None

    def run(self, pipeline: Pipeline, history: Iterable[list[Item]], tracker: Tracker) -> int:
        """Submit the history, keeping at most WINDOW messages unstored; wait for the last one.
        The count of items submitted."""
        submitted = 0
        for items in history:
            for item in items:
                if not pipeline.submit(item, self.stopping):
                    raise StoppedError
            submitted += len(items)
            target = submitted - WINDOW
            self._wait_for(tracker, lambda: self.confirmed >= target)  # noqa: B023 - called here
        self._wait_for(tracker, lambda: tracker.spooled >= submitted, check=False)
        last = tracker.last_history
        if last is not None and (not tracker.checkpoints or tracker.checkpoints[-1] != last):
            tracker.checkpoints.append(last)
        self._wait_for(tracker, lambda: not tracker.checkpoints)
        return submitted

    def _wait_for(self, tracker: Tracker, done: Callable[[], bool], *, check: bool = True) -> None:
        """Confirm checkpoints until `done`; give one up when nothing moved for STALL_S."""
        moved = time.monotonic()
        seen = tracker.spooled
        while not done():
            if check and tracker.checkpoints:
                count, msg_id = tracker.checkpoints[0]
                if self.stored(msg_id):
                    tracker.checkpoints.popleft()
                    self.confirmed, moved = count, time.monotonic()
                    continue
            if tracker.spooled != seen:
                seen, moved = tracker.spooled, time.monotonic()
            if self.stopping.wait(0.1):
                raise StoppedError
            if time.monotonic() - moved > STALL_S:
                self.say(f"    nothing moved for {STALL_S:.0f} s; going on (see the logs)")
                if not (check and tracker.checkpoints):
                    return
                self.confirmed = tracker.checkpoints.popleft()[0]
                moved = time.monotonic()

    def drain(self, tracker: Tracker, timeout_s: float = 10.0) -> None:
        """After the gateway stopped: a moment for the ingest to store what it published."""
        msg_id, deadline = tracker.last_reading, time.monotonic() + timeout_s
        with contextlib.suppress(psycopg.Error):
            while msg_id and not self.stored(msg_id) and time.monotonic() < deadline:
                time.sleep(0.3)
