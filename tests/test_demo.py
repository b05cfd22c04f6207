"""`metergate demo` end to end (issue 7): a small fleet with five weeks of history, through the
real gateway, a real Mosquitto, the ingest and the API on PostgreSQL, checked over HTTP with
the token the demo prints; then Ctrl-C (SIGINT) must stop everything it started.

The demo gets a Mosquitto and a database of the test's own through MQTT_URL and DATABASE_URL:
on a broker shared with other gateways its ingest would take their readings too (it subscribes
to every gateway's topics). How the demo finds or starts services of its own
(metergate/demo_services.py) was tried by hand, not here: it may install wheels and run initdb.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.gateway.mqtt_services import Mosquitto
from tests.ingest.services import free_port

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "METERGATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SMALL = ["--wireless", "5", "--wired", "2", "--modbus", "1", "--history-days", "35"]
READY_S = 120


@pytest.fixture
def database_url() -> Iterator[str]:
    name = f"metergate_demo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(**{**conninfo_to_dict(ADMIN_URL), "dbname": name})
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def demo_command(folder: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "metergate", "demo", "--data-dir", str(folder),
            "--api-port", str(port), *extra]  # fmt: skip


class Output:
    """The demo's stdout, line by line, read by a thread so that the pipe never fills."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                raise AssertionError(f"no line like {pattern!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match


def get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def descendants(pid: int) -> set[int]:
    """The processes under `pid` now (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def marked(folder: Path) -> list[int]:
    """Running processes whose environment names `folder` as their demo's (demo_process)."""
    marker = f"METERGATE_DEMO_DIR={folder}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return [pid for pid in found if running(pid)]


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(240)
def test_demo_backfills_serves_and_stops_cleanly(
    tmp_path: Path, database_url: str, mosquitto: Mosquitto
) -> None:
    folder, port = tmp_path / "demo", free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "MQTT_URL": mosquitto.url}
    process = subprocess.Popen(
        demo_command(folder, port, *SMALL), cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = Output(process)
    try:
        modbus_port = int(output.until(r"Modbus on tcp://127\.0\.0\.1:(\d+)", 60)[1])
        token = output.until(r"API token:\s+(mg_\S+)", READY_S)[1]
        period = output.until(r"Billing export of (\d{4}-\d{2})", 5)[1]
        output.until(r"Live now", 5)
        base = f"http://127.0.0.1:{port}"

        billing = get(f"{base}/v1/billing/monthly?period={period}", token)
        assert billing["items"], billing
        assert all(item["value"] and item["method"] for item in billing["items"])
        assert get(f"{base}/v1/alerts?kind=leak", token)["items"]
        assert get(f"{base}/v1/alerts?kind=verification_overdue", token)["items"]
        with urllib.request.urlopen(f"{base}/dashboard/", timeout=10) as page:
            assert page.status == 200
        children = descendants(process.pid)
        assert children, "the ingest and the API run as child processes"
        assert set(marked(folder)) <= children | {process.pid}
        assert marked(folder)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    output.until(r"^Stopped\.$", 10)
    assert code == 0, "\n".join(output.lines)
    assert not [pid for pid in children if running(pid)]
    assert not marked(folder), "a process of the demo's is still running"
    assert not port_taken(port)
    assert not port_taken(modbus_port)
    assert not (folder / "dev" / "ttyWMBUS0").exists()
    assert not list((folder / "run").glob("*.pid"))


def fails_at_once(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, check=False, cwd=REPO, capture_output=True, text=True, timeout=30
    )


def test_bad_data_dir_and_busy_port_exit_2_before_starting_anything(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    done = fails_at_once(demo_command(a_file, free_port()))
    assert done.returncode == 2
    assert "--data-dir" in done.stderr and "not a folder" in done.stderr

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = fails_at_once(demo_command(tmp_path / "demo", port))
    assert done.returncode == 2
    assert "--api-port" in done.stderr and "in use" in done.stderr

    done = fails_at_once(demo_command(tmp_path / "demo", free_port(), "--wireless", "2"))
    assert done.returncode == 2 and "--wireless" in done.stderr
    assert not (tmp_path / "demo" / "state.json").exists()


def test_a_second_demo_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    with (folder / "demo.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242\n")
        lock.flush()
        done = fails_at_once(demo_command(folder, free_port()))
    assert done.returncode == 2
    assert "another demo (pid 4242)" in done.stderr
