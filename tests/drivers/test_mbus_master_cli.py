"""`metergate sim mbus` in its own process, and `metergate mbus scan|read` talking to it."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metergate.cli import main

# The simulator answers at once; see FAST in test_mbus_master.py.
QUICK = ["--timeout", "0.015", "--latency", "0.003"]


def first_line(process: subprocess.Popen[str], timeout: float = 20) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError("metergate sim mbus printed nothing")
    return process.stdout.readline()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    link = tmp_path_factory.mktemp("sim") / "ttyMBUS0"
    command = ["metergate", "sim", "mbus", "--meters", "6", "--seed", "4", "--link", str(link)]
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield json.loads(first_line(process))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert not link.exists()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_simulator_describes_its_meters(simulator: dict[str, Any]) -> None:
    assert Path(simulator["port"]).is_symlink()
    meters = simulator["meters"]
    assert [m["primary_address"] for m in meters] == [1, 2, 3, 4, 5, 6]
    for meter in meters:
        assert meter["meter_id"] == f"{meter['manufacturer']}-{meter['id']}"
        assert len(meter["secondary_address"]) == 16
        assert meter["key"] is None or len(bytes.fromhex(meter["key"])) == 16


def test_a_secondary_scan_prints_one_object_per_meter(
    simulator: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    port = simulator["port"]
    code, out, err = run(capsys, "mbus", "scan", "--port", port, "--secondary", "--json", *QUICK)
    assert (code, err) == (0, "")
    objects = [json.loads(line) for line in out.splitlines()]
    by_id = {o["meter_id"]: o for o in objects}
    assert len(by_id) == len(objects) == 6
    for meter in simulator["meters"]:
        found = by_id[meter["meter_id"]]
        assert found["secondary_address"] == meter["secondary_address"]
        assert found["primary_address"] == meter["primary_address"]
        assert found["protocol"] == "mbus" and found["ci"] == "72"
        assert found["telegrams"] >= 2
        storages = {r["storage"] for r in found["records"] if r["quantity"] == "volume"}
        assert storages == set(range(13))  # now and 12 month ends, over all telegrams
        assert "more_records_follow" not in found


def test_a_primary_scan_prints_a_line_per_meter(
    simulator: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "mbus", "scan", "--port", simulator["port"], *QUICK)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 6
    for line, meter in zip(lines, simulator["meters"], strict=True):
        assert line.startswith(f"address {meter['primary_address']:3d}  ")
        assert meter["meter_id"] in line and meter["secondary_address"] in line


def test_read_by_primary_or_secondary_address(
    simulator: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    port = simulator["port"]
    meter = simulator["meters"][2]
    code, out, _ = run(capsys, "mbus", "read", "--port", port, "--address", "3", "--json", *QUICK)
    assert code == 0
    assert json.loads(out)["meter_id"] == meter["meter_id"]
    secondary = meter["secondary_address"]
    code, out, _ = run(capsys, "mbus", "read", "--port", port, "--address", secondary, *QUICK)
    assert code == 0
    assert meter["meter_id"] in out and out.count("\n") == 1


def test_errors_are_reported_not_raised(
    simulator: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    port = simulator["port"]
    code, out, err = run(capsys, "mbus", "read", "--port", port, "--address", "200", *QUICK)
    assert (code, out) == (1, "")
    assert "DeviceTimeout" not in err and "no answer" in err
    code, _, err = run(capsys, "mbus", "read", "--port", "/nonexistent/tty", "--address", "1")
    assert code == 1 and "open failed" in err
    code, _, err = run(capsys, "mbus", "read", "--port", port, "--address", "12XY")
    assert code == 1 and "secondary address" in err
