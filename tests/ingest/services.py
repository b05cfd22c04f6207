"""Real services the ingest's tests and bench/ingest.py start and stop themselves.

- PrivateCluster: a PostgreSQL cluster of its own (initdb from the installed server), which a
  test may stop and start again without disturbing the machine's PostgreSQL that everything
  else uses. initdb refuses to run as root, so as root it runs as the `postgres` user.
- PrivateBroker: a Mosquitto of its own with the queue settings of deploy/mosquitto.conf (or,
  while that file does not exist, a queue limit that drops nothing).
- WorkerProcess: `metergate ingest run` as a subprocess, its log in a file.
- PrivateNats: a NATS server's MQTT listener, a broker without shared subscriptions.
- Publisher: QoS 1 publishing that waits for the broker's PUBACKs.
- running(): a Worker on a thread of the test's own process.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.broker import BrokerConfig
from ingest.worker import Worker, WorkerConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY_BROKER_CONFIG = REPO / "deploy" / "mosquitto.conf"
# What a private broker takes from the deployment configuration: how it queues and limits
# messages. Listeners, files, users and logging stay the test's own.
_QUEUE_OPTIONS = frozenset(
    {
        "max_queued_messages",
        "max_queued_bytes",
        "max_inflight_messages",
        "max_inflight_bytes",
        "queue_qos0_messages",
        "persistent_client_expiration",
        "max_packet_size",
        "message_size_limit",
        "upgrade_outgoing_qos",
    }
)


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll until `condition()` is true; a hang becomes a failure that says what was awaited."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {timeout_s} s for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, if there is one."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def private_cluster_unavailable() -> str | None:
    """Why a PrivateCluster cannot be made here, or None when it can."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (initdb) installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user for initdb to run as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (initdb refuses root)"
    return None


class PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        reason = private_cluster_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        bin_dir = postgres_bin()
        assert bin_dir is not None
        self._bin = bin_dir
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="metergate-pg-"))
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.directory / "data"
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as_user, str(self._bin / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.directory} -c fsync=off -c max_connections=20"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"),
            "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, recovery at the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


def broker_config_lines(*, from_deploy: bool = True) -> list[str]:
    """The queue settings a private broker runs with: deploy/mosquitto.conf's when it exists
    (and `from_deploy`), else none at all, which is Mosquitto's defaults."""
    if not from_deploy:
        return []
    if not DEPLOY_BROKER_CONFIG.exists():
        # Until the deployment's file exists: no limit on a client's queue (DESIGN.md section 3).
        return ["max_queued_messages 0"]
    lines = []
    for line in DEPLOY_BROKER_CONFIG.read_text().splitlines():
        words = line.split()
        if words and words[0] in _QUEUE_OPTIONS:
            lines.append(" ".join(words))
    return lines


class _ListeningProcess:
    """A server process of a test's own, listening on 127.0.0.1:`port`."""

    name: str
    port: int
    _process: subprocess.Popen[bytes]
    _log: IO[bytes]

    def _listening(self) -> bool:
        if self._process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self._process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._log.close()


class PrivateBroker(_ListeningProcess):
    """A Mosquitto of its own, in memory (no persistence: the tests keep it running)."""

    name = "mosquitto"

    def __init__(self, directory: Path, *, from_deploy: bool = True) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config_lines = broker_config_lines(from_deploy=from_deploy)
        config = directory / f"mosquitto-{self.port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence false",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    *self.config_lines,
                ]
            )
            + "\n"
        )
        self._log = (directory / f"mosquitto-{self.port}.log").open("wb")
        self._process = subprocess.Popen(
            [mosquitto, "-c", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_until(self._listening, 10, f"mosquitto on port {self.port}")


class WorkerProcess:
    """`metergate ingest run ARGS` in a subprocess (via python -m metergate.cli)."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metergate.cli", "ingest", "run", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout_s: float = 30) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the worker exited with {self.process.returncode}:\n{self.log_text()}"
                )
            return text in self.log_text()

        wait_until(seen, timeout_s, f"{text!r} in the worker's log")

    def terminate(self, timeout_s: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self._log.close()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._log.close()


class PrivateNats(_ListeningProcess):
    """A NATS server with its MQTT listener: a real broker that speaks MQTT 3.1.1 only and has
    no shared subscriptions (it grants `$share/...` as a plain filter that matches nothing)."""

    name = "nats-server"

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        config = directory / f"nats-{self.port}.conf"
        config.write_text(
            f"listen: 127.0.0.1:{free_port()}\n"
            f"server_name: metergate_test_{self.port}\n"
            f'jetstream {{ store_dir: "{directory / f"nats-{self.port}"}" }}\n'
            f"mqtt {{ listen: 127.0.0.1:{self.port} }}\n"
        )
        self._log = (directory / f"nats-{self.port}.log").open("wb")
        self._process = subprocess.Popen(
            [nats_server() or "nats-server", "-c", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._listening, 20, f"nats-server's MQTT port {self.port}")


def nats_server() -> str | None:
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")


class Publisher:
    """A QoS 1 publisher on its own connection."""

    def __init__(self, mqtt_url: str, *, protocol: MQTTProtocolVersion = mqtt.MQTTv5) -> None:
        broker = BrokerConfig.from_url(mqtt_url)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self._client.max_queued_messages_set(0)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def publish(self, messages: Iterable[tuple[str, bytes]], timeout_s: float = 60) -> None:
        """Publish in order and return once the broker acknowledged every one."""
        infos = [self._client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise AssertionError("the broker did not acknowledge a publish")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def worker_config(
    database_url: str, mqtt_url: str, topic_root: str, **options: Any
) -> WorkerConfig:
    """A worker of the test's own topics and share group, quick to batch and to retry."""
    config = WorkerConfig(
        database_url=database_url,
        broker=BrokerConfig.from_url(mqtt_url),
        client_id=f"{topic_root}-worker",
        batch_size=50,
        batch_ms=50,
        topic_root=topic_root,
        share_group=topic_root,
        session_expiry_s=120,
        retry_max_s=1.0,
    )
    return replace(config, **options)


@contextmanager
def running(config: WorkerConfig) -> Iterator[Worker]:
    """A worker on a thread of this process, subscribed when the block starts and stopped
    (and its thread's exception, if any, raised) when it ends."""
    worker = Worker(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"worker {config.client_id}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.subscribed.is_set() or failure, 30, "the worker's subscription")
        if failure:
            raise failure[0]
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"
    if failure:
        raise failure[0]


def count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return int(row[0])
