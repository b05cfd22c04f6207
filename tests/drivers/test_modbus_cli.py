"""`metergate modbus read` and `metergate sim modbus`: bad input exits 2, reads print one JSON
object per unit, the simulator prints its port and meters, serves, and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from decoders.modbus_map import decode_registers
from decoders.render import record_json
from firmware_sim.modbus_meters import FlowMeterBank, frozen_clock
from firmware_sim.modbus_server import ModbusTcpSimulator
from metergate.cli import build_parser, main
from metergate.profiles import load_register_map

MAGMETER = load_register_map("generic-magmeter")
T0 = datetime(2026, 4, 30, 21, 0, tzinfo=UTC)
# The `metergate` entry point, for a subprocess.
ENTRY = "import sys\nfrom metergate.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def run(argv: list[str]) -> int:
    return main(argv)


@pytest.fixture
def tcp() -> Iterator[ModbusTcpSimulator]:
    bank = FlowMeterBank.generate(MAGMETER, 2, seed=21, clock=frozen_clock(T0))
    with ModbusTcpSimulator(bank) as simulator:
        yield simulator


def expected_json(bank: FlowMeterBank, unit_id: int) -> list[dict[str, object]]:
    return [record_json(r) for r in decode_registers(MAGMETER, bank.registers(unit_id))]


def test_read_json_prints_one_object_per_unit(
    tcp: ModbusTcpSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    tcp.bank.set_flags(2, "permanent_error")
    argv = ["modbus", "read", "--url", tcp.url, "--profile", "generic-magmeter", "--json"]
    code = run([*argv, "--unit", "1", "--unit", "2", "--unit", "9", "--timeout", "0.3"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # unit 9 is not there
    assert [line["unit_id"] for line in lines] == [1, 2, 9]
    assert lines[0]["records"] == expected_json(tcp.bank, 1)
    assert lines[1]["status"] == {"flags": ["permanent_error"]}
    assert lines[1]["records"] == expected_json(tcp.bank, 2)
    assert lines[2]["error"]["type"] == "DeviceTimeout"
    assert all(line["model"] == "generic-magmeter" for line in lines)


def test_read_text(tcp: ModbusTcpSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["modbus", "read", "--url", tcp.url, "--profile", "generic-magmeter"]) == 0
    out = capsys.readouterr().out
    net = tcp.bank.values(1)["net_total"]
    assert out.startswith("unit 1 (generic-magmeter):")
    assert f"net_total                {net} m3" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "tcp://127.0.0.1:1", "--profile", "no-such-meter"], "no shipped register map"),
        (["--url", "ftp://127.0.0.1", "--profile", "generic-magmeter"], "bad Modbus URL"),
        (["--url", "tcp://h:0", "--profile", "generic-magmeter"], "bad Modbus URL"),
        (["--url", "tcp://h", "--profile", "generic-magmeter", "--timeout", "0"], "--timeout"),
    ],
)
def test_read_bad_input_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["modbus", "read", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("unit", ["0", "248", "x", "-3"])
def test_unit_ids_outside_1_to_247_exit_2(unit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run(["modbus", "read", "--url", "tcp://h", "--profile", "generic-magmeter", "--unit", unit])
    assert caught.value.code == 2
    assert "is not in 1..247" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--meters", "0"], "--meters"),
        (["--first-unit", "247", "--meters", "2"], "--meters"),
        (["--profile", "no-such-meter"], "no shipped register map"),
        (["--port", "70000"], "--port"),
    ],
)
def test_sim_bad_input_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["sim", "modbus", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_command_holds_every_simulator_and_reader() -> None:
    parser = build_parser()
    assert parser.parse_args(["sim", "modbus"]).sim_command == "modbus"
    assert parser.parse_args(["sim", "mbus", "--meters", "1"]).sim_command == "mbus"
    wmbus = ["sim", "wmbus", "--receiver", "im871a", "--meters", "1"]
    assert parser.parse_args(wmbus).sim_command == "wmbus"
    assert parser.parse_args(["modbus", "read", "--url", "tcp://x", "--profile", "p"])
    assert parser.parse_args(["wmbus", "listen", "--device", "hex:-"]).wmbus_command == "listen"
    assert parser.parse_args(["mbus", "scan", "--port", "p"]).mbus_command == "scan"


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_sim_serves_what_the_reader_reads_and_stops_on_sigterm(
    transport: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sim", "modbus", "--meters", "2", "--seed", "8", "--speed", "0"]
    argv += ["--start", T0.isoformat()]
    if transport == "rtu":
        argv += ["--rtu", "--link", str(tmp_path / "ttyMODBUS0")]
    with subprocess.Popen(
        [sys.executable, "-c", ENTRY, *argv], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())
            bank = FlowMeterBank.generate(MAGMETER, 2, seed=8, clock=frozen_clock(T0))
            assert first["meters"] == bank.describe()
            assert first["protocol"] == transport
            read = ["modbus", "read", "--url", first["port"], "--profile", "generic-magmeter"]
            assert run([*read, "--json", "--unit", "2"]) == 0
            (line,) = capsys.readouterr().out.splitlines()
            assert json.loads(line)["records"] == expected_json(bank, 2)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
    assert not (tmp_path / "ttyMODBUS0").exists()
