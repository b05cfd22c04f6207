"""A /metrics endpoint for a Prometheus registry, on 127.0.0.1 only (the gateway's and the
ingest's: a scraper on the host, or a reverse proxy, reaches it; the network does not)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from metergate.errors import ConfigError


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running /metrics endpoint: `port` is the bound port (useful when 0 was asked);
    calling it stops the server."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def __call__(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_metrics(registry: CollectorRegistry, port: int, *, location: str) -> MetricsServer:
    """Serve `registry` on 127.0.0.1:`port` (0: any free port) in a daemon thread; ConfigError
    naming `location` (the setting that gave the port) when the port cannot be bound."""
    try:
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror or exc}", location=location
        ) from None
    return MetricsServer(server.server_port, server, thread)
