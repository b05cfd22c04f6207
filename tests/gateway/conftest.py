"""Brokers for the gateway's tests: the shared Mosquitto of METERGATE_TEST_MQTT_URL (found or
started by scripts/test), and a private one a test may stop, kill or freeze. Each test has a
gateway id of its own, so its topics (`metergate/{id}/...`) are its own too."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
import pytest

from gateway.broker import BrokerConfig
from gateway.messages import status_topic
from tests.gateway.mqtt_services import Mosquitto

MQTT_URL = os.environ.get("METERGATE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    return MQTT_URL


@pytest.fixture
def gateway_id(mqtt_url: str) -> Iterator[str]:
    """A gateway id no other test uses. Its retained status is removed from the shared broker
    afterwards (an empty retained message deletes it), so runs leave nothing behind."""
    name = f"gw-test-{uuid.uuid4().hex[:12]}"
    yield name
    broker = BrokerConfig.from_url(mqtt_url)
    mqtt_publish.single(
        status_topic(name), payload=None, qos=1, retain=True, hostname=broker.host, port=broker.port
    )


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running Mosquitto of this test's own on a free port; stopped at teardown."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
