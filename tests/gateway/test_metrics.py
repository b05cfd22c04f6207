"""The gateway's /metrics endpoint: served on 127.0.0.1 only, counting what happens."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics
from gateway.spool import Spool
from metergate.errors import ConfigError
from tests.gateway.test_publisher import message, publishing
from tests.ingest.services import wait_until


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the TCP sockets listening on `port`, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_counts_are_served_on_localhost_only_and_the_server_stops() -> None:
    metrics = GatewayMetrics()
    for source in ("im871a:/dev/ttyUSB0", "im871a:/dev/ttyUSB0", "mbus:/dev/ttyS0"):
        metrics.frames_received(source)
    metrics.decoded()
    metrics.failed("DecryptionError")
    metrics.failed("DecryptionError")
    metrics.duplicate()
    metrics.spool_depth(42)
    metrics.spool_quarantined(1)
    metrics.publish_latency(0.02)
    metrics.publish_latency(-3.0)  # a clock step back counts as zero
    metrics.mqtt_connected(True)

    server = metrics.serve(0)
    try:
        assert listening_addresses(server.port) == ["0100007F"]  # 127.0.0.1, little-endian hex
        seen = scrape(server.port)
    finally:
        server()
    prefix = "metergate_gateway"
    assert seen[(f"{prefix}_frames_received_total", (("source", "im871a:/dev/ttyUSB0"),))] == 2
    assert seen[(f"{prefix}_frames_received_total", (("source", "mbus:/dev/ttyS0"),))] == 1
    assert seen[(f"{prefix}_decoded_total", ())] == 1
    assert seen[(f"{prefix}_failed_total", (("reason", "DecryptionError"),))] == 2
    assert seen[(f"{prefix}_duplicates_total", ())] == 1
    assert seen[(f"{prefix}_spool_depth", ())] == 42
    assert seen[(f"{prefix}_spool_quarantined", ())] == 1
    assert seen[(f"{prefix}_publish_latency_seconds_count", ())] == 2
    assert seen[(f"{prefix}_publish_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert seen[(f"{prefix}_publish_latency_seconds_bucket", (("le", "0.025"),))] == 2
    assert seen[(f"{prefix}_published_total", ())] == 2
    assert seen[(f"{prefix}_mqtt_connected", ())] == 1
    assert seen[(f"{prefix}_mqtt_connects_total", ())] == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_two_gateways_count_apart() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.decoded()
    assert first.registry.get_sample_value("metergate_gateway_decoded_total") == 1
    assert second.registry.get_sample_value("metergate_gateway_decoded_total") == 0


def test_a_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}") as caught:
            GatewayMetrics().serve(port)
    assert caught.value.location == "metrics_port"


def test_the_publisher_feeds_the_metrics(tmp_path: Path, mqtt_url: str, gateway_id: str) -> None:
    metrics = GatewayMetrics()
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    server = metrics.serve(0)
    try:
        with publishing(spool, mqtt_url, gateway_id, metrics=metrics) as publisher:
            spool.append_many(("reading", "M-1", message(gateway_id, "M-1", n)) for n in range(25))
            publisher.wake()
            wait_until(
                lambda: scrape(server.port)[("metergate_gateway_published_total", ())] == 25,
                10,
                "25 acknowledged readings",
            )
            seen = scrape(server.port)
    finally:
        server()
    assert seen[("metergate_gateway_published_total", ())] == 25
    assert seen[("metergate_gateway_publish_latency_seconds_count", ())] == 25
    assert seen[("metergate_gateway_mqtt_connected", ())] == 1
