"""The engines inside the ingest worker: every few seconds, on a thread of their own, the
meters marked in the database (ingest/engine_marks.py) for at least the engines' delay are
run, and raw frames that a stored key can open are decoded; a sweep (by one worker at a time)
runs what the clock alone changes.

The marks are written with the data that causes them (the worker's batches, manual readings,
registrations), in their transactions, so the engines never hold up an acknowledgement and
nothing is forgotten when a worker dies: its marks wait in the database for the next run of
any worker. A mark remembers the earliest instant the new rows
bring (a reading's measured_at, a status report's time, a month-end register not stored
before): ingest.engine_run recomputes only what that instant reaches. A run that fails (the
database away, a bug) is logged and counted, and its marks are given back for the next run;
nothing here stops the ingest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from decoders.decode import Decoder
from ingest import engine_marks as marks
from ingest.boundaries import DEFAULT_ZONE
from ingest.engine_run import EngineReport, run_engines, sweep
from ingest.metrics import IngestMetrics
from ingest.recover import recover_with
from ingest.store import DatabaseUnavailable, Store
from metergate.errors import StorageError
from metergate.profiles import load_profiles

log = logging.getLogger(__name__)

CHUNK = 200  # meters per run_engines call: a stop request waits for one chunk at most
DEFAULT_DELAY_S = 300.0  # see ingest/engine_marks.py
# A one-key advisory lock: that key space is apart from run_engines' two-key meter locks.
SWEEP_LOCK = int.from_bytes(b"mgsweep", "big")


class EngineLoop:
    """`start()` and `stop()`, or `run_pending()` from a caller's thread; the counters are
    for logs and tests."""

    def __init__(
        self,
        database_url: str,
        *,
        interval_s: float = 5.0,
        delay_s: float = DEFAULT_DELAY_S,
        sweep_s: float = 900.0,
        zone: ZoneInfo = DEFAULT_ZONE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        decoder: Decoder | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self._url = database_url
        self._interval_s = interval_s
        self._delay = timedelta(seconds=delay_s)
        self._sweep_s = sweep_s
        self._zone = zone
        self._clock = clock
        # One decoder for the life of the loop: the compact formats it learns from full frames
        # open the compact frames that come later.
        self._decoder = decoder
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._store: Store | None = None  # writes the readings of raw frames it decodes
        self.runs = 0
        self.failures = 0
        self.frames_decoded = 0
        self.totals = EngineReport()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="engines", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def run_pending(self) -> bool:
        """Decode the raw frames stored keys open, then run the marked meters; False when a
        step failed (it is logged and counted, and its work left for the next call)."""
        meters, frames = self.totals.meters, self.frames_decoded
        opened = self._guarded("decoding raw frames with stored keys", self._open_frames)
        ok = self._guarded("the engines for the marked meters", self._run_marked) and opened
        if self._metrics is not None:
            self._metrics.engine_pass(ok, self.totals.meters - meters, self.frames_decoded - frames)
        return ok

    def run_sweep(self) -> bool:
        """The sweep, unless another worker is sweeping; False when it failed."""
        return self._guarded("the engines' sweep", self._sweep)

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self._interval_s
        while not self._stop.wait(self._interval_s):
            self.run_pending()
            if time.monotonic() >= next_sweep and not self._stop.is_set():
                self.run_sweep()
                next_sweep = time.monotonic() + self._sweep_s

    def _sweep(self, conn: psycopg.Connection[Any]) -> EngineReport:
        # Every worker would do the same work: one sweeps, the others skip their turn. The
        # lock is the session's, so a worker that dies mid-sweep lets it go with its connection.
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (SWEEP_LOCK,)).fetchone()
        if row is None or not row[0]:
            return EngineReport()
        try:
            return sweep(conn, now=self._clock(), zone=self._zone)
        finally:
            if not conn.broken:  # else the lock went with the session, and the error says why
                conn.execute("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK,))

    def _open_frames(self, conn: psycopg.Connection[Any]) -> EngineReport:
        while not self._stop.is_set():
            learned = self._formats_known()
            untried = marks.untried_frames(conn, CHUNK)
            keys = marks.keys_of(conn, list(untried))
            opened: set[str] = set()
            busy: set[str] = set()  # another worker's engine thread decodes them
            for meter_id, key in keys.items():
                with marks.decoding(conn, meter_id) as mine:
                    if not mine:
                        busy.add(meter_id)
                    elif self._open_meter(conn, meter_id, key):
                        opened.add(meter_id)
            left = opened | busy
            marks.mark_tried(conn, {m: last for m, last in untried.items() if m not in left})
            # Formats are few: this goes round once per format the decoder learns.
            if self._formats_known() > learned and marks.retry_unsupported(conn):
                continue
            if busy or len(untried) < CHUNK:
                break
        return EngineReport()

    def _formats_known(self) -> int:
        return 0 if self._decoder is None else len(self._decoder.compact_formats)

    def _open_meter(self, conn: psycopg.Connection[Any], meter_id: str, key: bytes) -> bool:
        """Decode a meter's untried frames (recover_with marks those that still fail); False
        when that failed, and the caller marks them tried."""
        if self._decoder is None:
            self._decoder = Decoder(load_profiles())
        if self._store is None:
            self._store = Store(self._url, max_connections=1, application_name="metergate-engines")
        try:
            recovery = recover_with(
                conn, self._store, meter_id, key, zone=self._zone, decoder=self._decoder,
                untried_only=True,
            )  # fmt: skip
        except DatabaseUnavailable:
            raise  # the whole pass waits for the database
        except StorageError as exc:
            # The database refused what the frames decode to (it should not): the frames stay
            # raw, the other meters go on, and `keys add` tries them again.
            self.failures += 1
            log.error("decoding the raw frames of %s failed: %s", meter_id, exc)
            return False
        if recovery.decoded:
            log.info(
                "decoded %d of %d raw frames of %s with its stored key",
                recovery.decoded, recovery.stored, meter_id,
            )  # fmt: skip
        self.frames_decoded += recovery.decoded
        return True

    def _run_marked(self, conn: psycopg.Connection[Any]) -> EngineReport:
        report = EngineReport()
        while not self._stop.is_set():
            taken = marks.claim(conn, CHUNK, self._delay)
            if not taken.since:
                break
            try:
                report += run_engines(
                    conn, now=self._clock(), zone=self._zone, changed_since=taken.since
                )
                marks.finish(conn, taken)
            except Exception:
                with contextlib.suppress(psycopg.Error):  # else the lease runs out
                    marks.release(conn, list(taken.since))
                raise
        if self._metrics is not None:
            self._metrics.marks_pending(marks.pending(conn))
        return report

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
            if isinstance(exc, psycopg.OperationalError | StorageError):
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
