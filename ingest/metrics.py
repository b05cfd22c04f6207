"""The ingest worker's Prometheus metrics, in a registry of their own (`ingest run
--metrics-port`, served on 127.0.0.1 only).

What an operator watches: messages committed, rows stored and already there by kind, how long
a batch takes to write, how often the database made a batch wait, the broker link, and the
engines: passes by outcome, meters run, raw frames decoded with stored keys, and the marks
waiting (of every worker: they live in the database). Labels are kinds the code names, never
meter ids or payload bytes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.store import BatchCounts
from metergate.metrics_server import MetricsServer, serve_metrics

_PREFIX = "metergate_ingest"
# A batch of 500 messages commits in ~20 ms on a healthy database; a slow disk or lock waits
# reach seconds.
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STORED = ("readings", "status_reports", "raw_frames", "dead_letters", "new_meters")
_DUPLICATES = {"readings": "duplicate_readings", "raw_frames": "duplicate_raw_frames"}


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._messages = Counter(
            f"{_PREFIX}_messages", "MQTT messages committed and acknowledged", registry=r
        )
        self._stored = Counter(f"{_PREFIX}_stored", "Rows stored, by kind", ["kind"], registry=r)
        self._duplicates = Counter(
            f"{_PREFIX}_duplicates",
            "Rows the database had already (redeliveries, repeated registers), by kind",
            ["kind"],
            registry=r,
        )
        self._batch_seconds = Histogram(
            f"{_PREFIX}_batch_write_seconds",
            "Time to write and commit one batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self._database_waits = Counter(
            f"{_PREFIX}_database_waits",
            "Batches that waited for the database (unavailable, retried)",
            registry=r,
        )
        self._connected = Gauge(
            f"{_PREFIX}_mqtt_connected", "1 while the broker connection is up", registry=r
        )
        self._engine_passes = Counter(
            f"{_PREFIX}_engine_passes", "Engine passes, by outcome", ["outcome"], registry=r
        )
        self._engine_meters = Counter(
            f"{_PREFIX}_engine_meters", "Meters the engines ran", registry=r
        )
        self._frames_decoded = Counter(
            f"{_PREFIX}_raw_frames_decoded", "Raw frames decoded with stored keys", registry=r
        )
        self._marks_pending = Gauge(
            f"{_PREFIX}_engine_marks_pending",
            "Meters marked for the engines and not run yet, of every worker",
            registry=r,
        )

    def stored(self, counts: BatchCounts) -> None:
        for kind in _STORED:
            self._stored.labels(kind=kind).inc(getattr(counts, kind))
        for kind, field in _DUPLICATES.items():
            self._duplicates.labels(kind=kind).inc(getattr(counts, field))

    def committed(self, messages: int, seconds: float) -> None:
        """A batch of `messages` written (in `seconds`, waits included) and acknowledged."""
        self._messages.inc(messages)
        self._batch_seconds.observe(seconds)

    def database_wait(self) -> None:
        self._database_waits.inc()

    def mqtt_connected(self, up: bool) -> None:
        self._connected.set(1 if up else 0)

    def engine_pass(self, ok: bool, meters: int, frames_decoded: int) -> None:
        self._engine_passes.labels(outcome="ok" if ok else "failed").inc()
        self._engine_meters.inc(meters)
        self._frames_decoded.inc(frames_decoded)

    def marks_pending(self, count: int) -> None:
        self._marks_pending.set(count)

    def serve(self, port: int) -> MetricsServer:
        """Serve /metrics on 127.0.0.1:`port` (0: any free port) in a daemon thread."""
        return serve_metrics(self.registry, port, location="--metrics-port")
