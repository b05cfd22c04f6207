"""The gateway as one running thing: sources -> pipeline -> spool -> publisher (issue 4).

`Gateway(config, keys).start()` opens the spool (gateway/spool.py), starts the publisher (which
sends whatever an earlier run left in the spool first), the pipeline thread, one thread per
configured source and, when asked, the /metrics endpoint. `stop()` stops the sources, lets the
pipeline spool what it holds, gives the publisher a few seconds for the PUBACKs in flight and
closes the spool: what was not acknowledged is sent by the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from decoders.decode import Decoder
from gateway.config import GatewayConfig
from gateway.frames import Location
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.publisher import Publisher
from gateway.sources import MbusSource, ModbusSource, ReceiverSource, Source, SourceContext
from gateway.spool import Spool
from metergate.keys import KeyRing
from metergate.metrics_server import MetricsServer
from metergate.profiles import load_profiles

log = logging.getLogger(__name__)


class Gateway:
    """One gateway of `config`, with the meters' `keys`; start() once, stop() once."""

    def __init__(
        self,
        config: GatewayConfig,
        keys: KeyRing,
        *,
        metrics: GatewayMetrics | None = None,
        locate: Callable[[], Location | None] | None = None,
        on_spooled: Callable[[Sequence[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or GatewayMetrics()
        self.keys = keys
        self._locate = locate
        self._on_spooled = on_spooled
        self._stop = threading.Event()  # the sources'
        # The pipeline's own, set once the sources have ended: it must not leave before their
        # last item is in its queue.
        self._sources_done = threading.Event()
        self._started_at = 0.0
        self.spool: Spool | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self.sources: list[Source] = []
        self.metrics_server: MetricsServer | None = None
        self._pipeline_thread: threading.Thread | None = None

    def start(self) -> None:
        config = self.config
        self._started_at = time.monotonic()
        self.spool = spool = Spool(
            config.spool_path, config.gateway_id, topic_root=config.topic_root
        )
        try:
            self._start(spool)
        except BaseException:
            self.stop()
            raise

    def _start(self, spool: Spool) -> None:
        config = self.config
        if config.metrics_port is not None:
            self.metrics_server = self.metrics.serve(config.metrics_port)
        self.publisher = publisher = Publisher(
            spool, config.broker, config.gateway_id, metrics=self.metrics, status=self.status
        )
        self.pipeline = pipeline = Pipeline(
            config.gateway_id,
            spool,
            keys=self.keys,
            metrics=self.metrics,
            zone=config.timezone,
            decoder=Decoder(load_profiles()),
            locations={
                meter_id: meter.location
                for meter_id, meter in config.meters.items()
                if meter.location is not None
            },
            on_spooled=self._on_spooled,
        )
        publisher.start()
        self._pipeline_thread = threading.Thread(
            target=pipeline.run,
            args=(self._sources_done,),
            kwargs={"wake": publisher.wake},
            name="pipeline",
            daemon=True,
        )
        self._pipeline_thread.start()
        context = SourceContext(pipeline, self.metrics, self._stop, key_of=self.keys.get)
        if self._locate is not None:
            context = replace(context, locate=self._locate)
        self.sources = [
            *(ReceiverSource(receiver, context) for receiver in config.receivers),
            *(MbusSource(bus, context) for bus in config.mbus_buses),
            *(ModbusSource(unit, context) for unit in config.modbus_units),
        ]
        for source in self.sources:
            source.start()
        log.info(
            "gateway %s started: %d sources, %d messages waiting in the spool",
            config.gateway_id,
            len(self.sources),
            spool.depth(),
        )

    def status(self) -> dict[str, Any]:
        """What the retained status document carries besides its state (publisher thread)."""
        counts = self.pipeline.counts if self.pipeline is not None else {}
        return {
            "uptime_s": round(time.monotonic() - self._started_at),
            "sources": [source.name for source in self.sources],
            "spool_depth": self.spool.depth() if self.spool is not None else None,
            **counts,
        }

    def stop_soon(self) -> None:
        """Ask for a stop (a signal handler may): wait() returns, then call stop()."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop was asked for (True) or `timeout` passed (False)."""
        return self._stop.wait(timeout)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for source in self.sources:
            source.thread.join(timeout_s)
            if source.thread.is_alive():
                log.error("%s did not stop within %g s", source.name, timeout_s)
        self._sources_done.set()
        if self._pipeline_thread is not None:
            self._pipeline_thread.join(timeout_s)
        if self.publisher is not None:
            self.publisher.stop(timeout_s)
        if self.metrics_server is not None:
            self.metrics_server()
            self.metrics_server = None
        if self.spool is not None:
            self.spool.close()
