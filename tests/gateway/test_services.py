"""scripts/lib.sh ensure_services: finding or starting the broker and the database the tests
use, run against the real programs on ports and in directories of the test's own, so the
machine's own services are never touched."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.gateway.mqtt_services import REPO, Mosquitto
from tests.ingest.services import free_port, wait_until

pytestmark = pytest.mark.timeout(120)


def lib(function: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a scripts/lib.sh function and print the variables it exports."""
    script = (
        f'source scripts/lib.sh && {function} "$@" && '
        'echo "mqtt=${METERGATE_TEST_MQTT_URL:-} db=${METERGATE_TEST_DATABASE_URL:-}"'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("METERGATE_")}
    return subprocess.run(
        ["bash", "-c", script, "_", *args],
        check=False,
        cwd=REPO,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def exported(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    return dict(pair.split("=", 1) for pair in last.split())


def answers_mqtt(port: int) -> bool:
    return lib("mqtt_answers", {}, str(port)).returncode == 0


def stop_daemon(pid_file: Path) -> None:
    """SIGTERM a daemon (not our child) and wait until it is gone or a zombie."""
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_until(gone, 15, f"process {pid} to exit")


def test_a_broker_that_answers_is_used_and_nothing_is_started(
    tmp_path: Path, private_broker: Mosquitto
) -> None:
    var = tmp_path / "var"
    env = {"METERGATE_VAR_DIR": str(var), "METERGATE_MQTT_PORT": str(private_broker.port)}
    assert exported(lib("ensure_mqtt", env))["mqtt"] == private_broker.url
    assert not var.exists()


def test_a_url_given_beforehand_is_kept(tmp_path: Path) -> None:
    env = {
        "METERGATE_VAR_DIR": str(tmp_path),
        "METERGATE_TEST_MQTT_URL": "mqtt://example.invalid:1",
        "METERGATE_TEST_DATABASE_URL": "postgresql://nobody@example.invalid:1/x",
    }
    seen = exported(lib("ensure_services", env))
    assert seen == {
        "mqtt": "mqtt://example.invalid:1",
        "db": "postgresql://nobody@example.invalid:1/x",
    }
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def not_mqtt() -> Iterator[int]:
    """A port where something listens that is no MQTT broker (it hangs up at once)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_mosquitto_is_started_with_our_config_when_none_answers(
    tmp_path: Path, not_mqtt: int
) -> None:
    assert not answers_mqtt(not_mqtt)
    env = {"METERGATE_VAR_DIR": str(tmp_path), "METERGATE_MQTT_PORT": str(not_mqtt)}
    url = exported(lib("ensure_mqtt", env))["mqtt"]
    directory = tmp_path / "mosquitto"
    try:
        port = int(url.rsplit(":", 1)[1])
        assert port != not_mqtt  # the taken port was left alone
        assert answers_mqtt(port)
        config = (directory / "mosquitto.conf").read_text().splitlines()
        assert f"listener {port} 127.0.0.1" in config
        assert "max_queued_messages 0" in config
        assert f"persistence_location {directory}/data/" in config
        # A second run finds the broker it started.
        pid = (directory / "mosquitto.pid").read_text()
        assert exported(lib("ensure_mqtt", env))["mqtt"] == url
        assert (directory / "mosquitto.pid").read_text() == pid
    finally:
        stop_daemon(directory / "mosquitto.pid")


@pytest.mark.parametrize("variable", ["METERGATE_MQTT_PORT", "METERGATE_PG_PORT"])
@pytest.mark.parametrize("value", ["mqtt", "0", "70000", "18 83"])
def test_a_port_that_is_no_port_number_is_refused(
    tmp_path: Path, variable: str, value: str
) -> None:
    function = "ensure_mqtt" if variable == "METERGATE_MQTT_PORT" else "ensure_postgres"
    result = lib(function, {"METERGATE_VAR_DIR": str(tmp_path), variable: value})
    assert result.returncode != 0
    assert f"{variable} must be a TCP port number (1-65535), not '{value}'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_postgresql_cluster_is_started_when_none_answers() -> None:
    if lib("pg_bindir", {}).returncode != 0:
        pytest.skip("no PostgreSQL server binaries to start a cluster with")
    # Under the repository's var/ (gitignored), not /tmp/pytest-of-root: as root the cluster
    # belongs to the postgres user, who cannot enter pytest's private temporary directory.
    var = REPO / "var" / f"test-services-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {"METERGATE_VAR_DIR": str(var), "METERGATE_PG_PORT": str(port)}
    try:
        url = exported(lib("ensure_postgres", env))["db"]
        assert url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert lib("pg_answers", {}, str(port)).returncode == 0
        with psycopg.connect(url, connect_timeout=5) as connection:
            row = connection.execute("SELECT current_user, inet_server_addr()::text").fetchone()
        assert row == ("postgres", "127.0.0.1/32")
    finally:
        data = var / "postgres" / "data"
        if (data / "postmaster.pid").exists():
            owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            bin_dir = lib("pg_bindir", {}).stdout.strip().splitlines()[0]
            subprocess.run(
                [*owner, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(var, ignore_errors=True)
        if (REPO / "var").exists() and not any((REPO / "var").iterdir()):
            (REPO / "var").rmdir()
