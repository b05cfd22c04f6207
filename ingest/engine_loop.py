"""The engines inside the ingest worker: the meters a committed batch touched are run on a
thread of their own, every few seconds, and a sweep runs what the clock alone changes.

The worker marks meters after it has acknowledged their batch, so the engines never hold up an
acknowledgement. A mark remembers the earliest instant the batch brought for the meter (a
reading's measured_at, a status report's received_at, a month-end register not seen before):
ingest.engine_run recomputes only what that instant reaches. A run that fails (the database
away, a bug) is logged and counted, and its meters stay marked for the next run; nothing here
stops the ingest. Marks live in memory: after a crash, the next message of a meter, the sweep,
or `metergate monthly fill` catches up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from ingest.boundaries import DEFAULT_ZONE
from ingest.engine_run import EngineReport, run_engines, sweep
from ingest.payload import ReadingMessage

log = logging.getLogger(__name__)

CHUNK = 200  # meters per run_engines call: a stop request waits for one chunk at most


class EngineLoop:
    """`start()`, `mark()` from the worker's thread, `stop()`; the counters are for logs and
    tests."""

    def __init__(
        self,
        database_url: str,
        *,
        interval_s: float = 5.0,
        sweep_s: float = 900.0,
        zone: ZoneInfo = DEFAULT_ZONE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._url = database_url
        self._interval_s = interval_s
        self._sweep_s = sweep_s
        self._zone = zone
        self._clock = clock
        self._dirty: dict[str, datetime] = {}
        self._registers: dict[str, datetime] = {}  # the newest register marked, by meter
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self.runs = 0
        self.failures = 0
        self.totals = EngineReport()

    def mark(self, items: Iterable[object]) -> None:
        """Mark the meters of the reading messages among `items` (a committed batch)."""
        earliest: dict[str, datetime] = {}
        for item in items:
            if isinstance(item, ReadingMessage):
                first = min(self._news(item), default=item.received_at)
                known = earliest.get(item.meter_id)
                earliest[item.meter_id] = first if known is None else min(known, first)
        if earliest:
            self._merge(earliest)

    def _news(self, message: ReadingMessage) -> list[datetime]:
        """The instants a message brings: its readings of the index and the time it arrived
        (its status report), and the month-end registers this loop has not marked yet. A meter
        repeats its last month-end value in every telegram for a month; marking it each time
        would make every run reach back to that month."""
        out = [message.received_at]
        registers: list[datetime] = []
        for value in message.readings:
            (registers if value.storage else out).append(value.measured_at)
        if registers:
            seen = self._registers.get(message.meter_id)
            out += [at for at in registers if seen is None or at > seen]
            self._registers[message.meter_id] = max(registers + ([seen] if seen else []))
        return out

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="engines", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _merge(self, marks: Mapping[str, datetime]) -> None:
        with self._lock:
            for meter_id, at in marks.items():
                known = self._dirty.get(meter_id)
                self._dirty[meter_id] = at if known is None else min(known, at)

    def _take(self) -> dict[str, datetime]:
        with self._lock:
            taken, self._dirty = self._dirty, {}
        return taken

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self._interval_s
        while not self._stop.wait(self._interval_s):
            self._run_marked()
            if time.monotonic() >= next_sweep and not self._stop.is_set():
                self._guarded("the engines' sweep", self._sweep)
                next_sweep = time.monotonic() + self._sweep_s
        if self._conn is not None:
            self._conn.close()

    def _sweep(self, conn: psycopg.Connection[Any]) -> EngineReport:
        return sweep(conn, now=self._clock(), zone=self._zone)

    def _run_chunk(
        self, conn: psycopg.Connection[Any], *, chunk: Mapping[str, datetime]
    ) -> EngineReport:
        return run_engines(conn, now=self._clock(), zone=self._zone, changed_since=chunk)

    def _run_marked(self) -> None:
        marked = self._take()
        ids = sorted(marked)
        for start in range(0, len(ids), CHUNK):
            chunk = {meter_id: marked[meter_id] for meter_id in ids[start : start + CHUNK]}
            if self._stop.is_set():
                return
            ok = self._guarded(
                f"the engines for {len(chunk)} meters", partial(self._run_chunk, chunk=chunk)
            )
            if not ok:
                self._merge({meter_id: marked[meter_id] for meter_id in ids[start:]})
                return

    def _guarded(self, what: str, work: Callable[[psycopg.Connection[Any]], EngineReport]) -> bool:
        """Run `work` on the loop's connection (made anew after a failure); False when it
        failed, which is logged and counted."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=5,
                    application_name="metergate-engines",
                )  # fmt: skip
            report = work(self._conn)
        except Exception as exc:
            self.failures += 1
            if isinstance(exc, psycopg.OperationalError):
                log.warning("%s failed (%s); trying again later", what, exc)
            else:
                log.exception("%s failed; trying again later", what)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return False
        self.runs += 1
        self.totals += report
        self.failures += len(report.failed)
        if report.meters or report.alerts_opened or report.alerts_closed:
            log.info("%s: %s", what, report.summary())
        return True
