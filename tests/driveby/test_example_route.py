"""examples/route.csv and the simulated drive it belongs to (firmware_sim.gps)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware_sim.fleet import Fleet
from firmware_sim.gps import HOUSE_SPACING_M, STREETS, Track, example_route, main
from gateway.driveby.gps import GpsReader
from gateway.driveby.route import format_route, load_route

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "route.csv"
START = datetime(2026, 2, 1, 6, tzinfo=UTC)


def test_the_example_route_is_the_generated_one() -> None:
    generated = format_route(example_route(Fleet.generate(50, 1)))
    assert EXAMPLE.read_text(encoding="utf-8") == generated, (
        "regenerate it: .venv/bin/python -m firmware_sim.gps route --meters 50 --seed 1"
        " > examples/route.csv"
    )


def test_the_example_route_lists_the_simulated_fleet_but_its_neighbours() -> None:
    route = load_route(EXAMPLE)
    fleet = Fleet.generate(50, 1)
    ids = [meter.identity.meter_id for meter in fleet]
    assert [entry.meter_id for entry in route] == [m for n, m in enumerate(ids) if (n + 1) % 10]
    assert route.streets() == tuple(street for street, *_ in STREETS)
    assert all(entry.lat is not None and entry.lon is not None for entry in route)
    households = [e for e in route if e.premise.startswith("dz. ")]
    assert households and max(int(e.premise[4:]) for e in households) <= 6


def test_the_van_drives_past_the_houses_in_route_order() -> None:
    route = example_route(Fleet.generate(50, 1))
    track = Track.along(route, START, speed_mps=10.0)
    first = route.entries[0]
    assert track.position(START - timedelta(hours=1))[:2] == (float(first.lat), float(first.lon))
    lat, lon, course, speed = track.position(START + timedelta(seconds=1))
    assert 0 < course < 90 and speed == 10.0  # north-east, along Brīvības iela
    assert lat > float(first.lat) and lon > float(first.lon)
    last = route.entries[-1]
    parked = track.position(START + timedelta(days=1))
    assert parked == (float(last.lat), float(last.lon), 0.0, 0.0)
    # Houses stand HOUSE_SPACING_M apart: the van needs that long between two of them.
    second_house = track.position(START + timedelta(seconds=HOUSE_SPACING_M / 10.0))
    assert second_house[:2] == pytest.approx(track.waypoints[1], abs=1e-6)  # 6 decimals given


def test_a_track_needs_points_and_speed() -> None:
    with pytest.raises(ValueError):
        Track((), START)
    with pytest.raises(ValueError):
        Track(((56.9, 24.1),), START, speed_mps=0)


def test_the_route_command_prints_the_csv(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--meters", "50", "--seed", "1"]) == 0
    assert capsys.readouterr().out == EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "argv",
    [
        ["route", "--meters", "0"],
        ["route", "--meters", "many"],
        ["serve", "--start", "yesterday"],
        ["serve", "--start", "2026-02-01T06:00"],
        ["serve", "--period", "0"],
        ["serve", "--van-speed", "-1"],
        ["fly"],
    ],
)
def test_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


@pytest.mark.timeout(60)
def test_the_serve_command_gives_a_port_a_reader_gets_fixes_from(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "firmware_sim.gps", "serve", "--meters", "20",
        "--period", "0.05", "--link", str(tmp_path / "ttyACM0"),
        "--start", "2026-02-01T06:00:00Z", "--speed", "10",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout is not None
        head = json.loads(process.stdout.readline())
        assert head["port"] == str(tmp_path / "ttyACM0")
        with GpsReader(head["port"]) as gps:
            deadline = datetime.now(UTC) + timedelta(seconds=20)
            while gps.location() is None:
                assert datetime.now(UTC) < deadline, "no fix from the served receiver"
                time.sleep(0.01)
            location = gps.location()
            assert location is not None and abs(location.lat - 56) < 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert not (tmp_path / "ttyACM0").exists()
