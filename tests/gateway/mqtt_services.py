"""Real MQTT parts for the gateway's tests: a Mosquitto of the test's own and a subscriber.

Mosquitto runs with the repository's own configuration (deploy/mosquitto.conf, rewritten to
listen on 127.0.0.1 only by scripts/lib.sh `mosquitto_config`), with persistence in its
directory, so a test can stop it gracefully (it saves sessions and queues), kill it, freeze it
(SIGSTOP: the TCP connection stays up but nothing is acknowledged), and start it again on the
same port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.broker import BrokerConfig
from tests.ingest.services import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
_LIB = 'source scripts/lib.sh && %s "$@"'  # a function of scripts/lib.sh, with arguments


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if found is None:
        raise RuntimeError("mosquitto is not installed (scripts/test installs it when root)")
    return found


class Mosquitto:
    """A Mosquitto process on 127.0.0.1:`port` (a free one by default), configured in
    `directory`; `extra_config` lines are appended (an acl_file, a TLS listener)."""

    def __init__(
        self, directory: Path, port: int | None = None, extra_config: Iterable[str] = ()
    ) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        made = subprocess.run(
            ["bash", "-c", _LIB % "mosquitto_config", "_", str(directory), str(self.port)],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        self.config = Path(made.stdout.strip())
        extra = "".join(f"{line}\n" for line in extra_config)
        if extra:
            self.config.write_text(self.config.read_text() + extra)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10, f"mosquitto on 127.0.0.1:{self.port}")

    def _answers(self) -> bool:
        if not self.running:
            raise AssertionError(f"mosquitto exited; its log:\n{self.log_text()}")
        probe = subprocess.run(
            ["bash", "-c", _LIB % "mqtt_answers", "_", str(self.port)],
            cwd=REPO,
            check=False,
        )
        return probe.returncode == 0

    def stop(self) -> None:
        """A graceful stop (SIGTERM): Mosquitto saves its database and closes connections."""
        self._signal_and_wait(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: nothing saved, nothing acknowledged that was not already."""
        self._signal_and_wait(signal.SIGKILL)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its configuration again (acl_file among it)."""
        self._signal(signal.SIGHUP)

    def save(self) -> None:
        """SIGUSR1 writes the persistence database now; returns once the file is there."""
        database = self.directory / "data" / "mosquitto.db"
        database.unlink(missing_ok=True)
        self._signal(signal.SIGUSR1)
        wait_until(database.exists, 10, "mosquitto to write its database")

    def log_text(self) -> str:
        log = self.directory / "mosquitto.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def close(self) -> None:
        if self.running:
            self._signal(signal.SIGCONT)
            self._signal_and_wait(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        assert self._process is not None and self.running, "mosquitto is not running"
        os.kill(self._process.pid, signum)

    def _signal_and_wait(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)
        self._process.wait(15)


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    dup: bool
    retain: bool

    def document(self) -> dict[str, Any]:
        decoded = json.loads(self.payload)
        assert isinstance(decoded, dict)
        return decoded


class Subscriber:
    """A QoS 1 subscriber (MQTT 5) collecting what it receives. With `session_expiry_s` its
    session outlives a disconnect (and a graceful broker restart): it is the ingest's way."""

    def __init__(self, url: str, topics: Iterable[str], *, session_expiry_s: int = 0) -> None:
        broker = BrokerConfig.from_url(url)
        self._topics = list(topics)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.05, 0.5)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
        # Clean start off from the first connect: Mosquitto 2.0.11 writes a session to its
        # database only then (one begun with clean start is lost at a restart, expiry or not).
        self._client.connect(
            broker.host,
            broker.port,
            keepalive=10,
            clean_start=session_expiry_s == 0,
            properties=properties,
        )
        self._client.loop_start()
        wait_until(self._subscribed.is_set, 10, "the subscription")

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_subscribe(self, *_: object) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._received.append(Received(msg.topic, msg.payload, bool(msg.dup), msg.retain))

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
