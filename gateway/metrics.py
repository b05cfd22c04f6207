"""The gateway's Prometheus metrics, in a registry of their own, served on 127.0.0.1 only.

A registry per GatewayMetrics (not prometheus_client's global one) lets tests and a process
running several pipelines count separately. Label values are reasons and sources the code
names, never bytes from a frame, and never key material.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from metergate.metrics_server import MetricsServer, serve_metrics

_PREFIX = "metergate_gateway"
# From a PUBACK on a healthy local link (milliseconds) to messages that waited out an outage in
# the spool (hours).
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
)


class GatewayMetrics:
    """Counters and gauges of one gateway (issue 4: frames received, decoded, failed by
    reason, duplicates, spool depth, publish latency; plus the MQTT link)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._frames = Counter(
            f"{_PREFIX}_frames_received", "Frames received", ["source"], registry=r
        )
        self._decoded = Counter(f"{_PREFIX}_decoded", "Frames decoded to readings", registry=r)
        self._failed = Counter(
            f"{_PREFIX}_failed", "Frames or messages that failed, by reason", ["reason"], registry=r
        )
        self._duplicates = Counter(
            f"{_PREFIX}_duplicates", "Repeated transmissions dropped", registry=r
        )
        self._spool_depth = Gauge(
            f"{_PREFIX}_spool_depth", "Messages in the spool waiting for a PUBACK", registry=r
        )
        self._quarantined = Gauge(
            f"{_PREFIX}_spool_quarantined", "Spool rows quarantined as corrupted", registry=r
        )
        self._latency = Histogram(
            f"{_PREFIX}_publish_latency_seconds",
            "Time from spooling a message to the broker's PUBACK",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._published = Counter(
            f"{_PREFIX}_published", "Messages the broker acknowledged", registry=r
        )
        self._connected = Gauge(
            f"{_PREFIX}_mqtt_connected", "1 while the MQTT session is up", registry=r
        )
        self._connects = Counter(
            f"{_PREFIX}_mqtt_connects", "Successful MQTT connections", registry=r
        )
        self._connect_failures = Counter(
            f"{_PREFIX}_mqtt_connect_failures",
            "Failed MQTT connection attempts and lost connections",
            registry=r,
        )

    def frames_received(self, source: str) -> None:
        self._frames.labels(source=source).inc()

    def decoded(self) -> None:
        self._decoded.inc()

    def failed(self, reason: str) -> None:
        self._failed.labels(reason=reason).inc()

    def duplicate(self) -> None:
        self._duplicates.inc()

    def spool_depth(self, n: int) -> None:
        self._spool_depth.set(n)

    def spool_quarantined(self, n: int) -> None:
        self._quarantined.set(n)

    def publish_latency(self, seconds: float) -> None:
        # Clocks can step backwards (NTP after a cold boot without RTC); a negative sample would
        # land in the lowest bucket and lie, so it counts as zero.
        self._latency.observe(max(0.0, seconds))
        self._published.inc()

    def mqtt_connected(self, up: bool) -> None:
        self._connected.set(1 if up else 0)
        if up:
            self._connects.inc()

    def mqtt_connect_failed(self) -> None:
        self._connect_failures.inc()

    def serve(self, port: int) -> MetricsServer:
        """Serve /metrics on 127.0.0.1:`port` (0: any free port) in a daemon thread."""
        return serve_metrics(self.registry, port, location="metrics_port")
