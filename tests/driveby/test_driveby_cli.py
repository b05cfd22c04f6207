"""`metergate driveby` as an engineer uses it, in a terminal.

The simulated fleet serves on an emulated iM871A (`metergate sim wmbus`) and a simulated GPS
drives its route (`metergate sim gps`); the drive-by runs in an interactive shell in a tmux
pane of 120x40, its screen is read with `tmux capture-pane` as a person reads it, Ctrl-C is
typed with `tmux send-keys`, then the report files and the readings on the real Mosquitto are
checked. The office forgot one meter's key, and the route lists a meter whose radio is dead.
Bad input at the command line must stop it with one line and exit status 2, opening nothing.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from gateway.broker import BrokerConfig
from gateway.driveby.session import default_gateway_id, default_spool_path
from gateway.messages import status_topic
from gateway.spool import Spool
from metergate.cli import main
from tests.driveby.terminal import METERGATE, ROOT, Tmux, simulator
from tests.gateway.mqtt_services import Subscriber
from tests.ingest.services import free_port, wait_until

pytestmark = pytest.mark.timeout(120)

MQTT_URL = os.environ.get("METERGATE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
START = "2026-02-01T06:00:00+00:00"
SEED = "1"
DEAD = "ABC-00000001"  # on the route, never heard: its radio is dead
DEAD_ROW = f"{DEAD},Miera iela,99,,radio dead?,,\n"


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    binary = shutil.which("tmux")
    if binary is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux)")
    terminal = Tmux(binary, 120, 40)
    try:
        yield terminal
    finally:
        terminal.close()


@pytest.fixture
def gateway_id() -> Iterator[str]:
    """A gateway id of this test's own; its retained status is removed afterwards."""
    name = f"driveby-test-{uuid.uuid4().hex[:12]}"
    yield name
    broker = BrokerConfig.from_url(MQTT_URL)
    mqtt_publish.single(
        status_topic(name), payload=None, qos=1, retain=True, hostname=broker.host, port=broker.port
    )


def keys_file(path: Path, meters: list[dict[str, Any]], forget: str) -> Path:
    lines = ["[keys]"]
    for meter in meters:
        for identity in (meter, meter.get("replacement") or {}):
            if identity.get("key") and identity["meter_id"] != forget:
                lines.append(f'"{identity["meter_id"]}" = "{identity["key"]}"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def forgettable(meters: list[dict[str, Any]], route: str) -> str:
    """A route meter with a key of its own (security mode 5) that keeps its device."""
    return next(
        str(m["meter_id"])
        for m in meters
        if m["key"]
        and m["security_mode"] == 5
        and "replacement" not in m
        and m["meter_id"] in route
    )


def collected(screen: str) -> tuple[int, int] | None:
    match = re.search(r"Collected (\d+)/(\d+)", screen)
    return (int(match[1]), int(match[2])) if match else None


def test_a_drive_by_in_a_terminal(tmux: Tmux, gateway_id: str, tmp_path: Path) -> None:
    assert tmux.size().strip() == "120x40"
    route_file = tmp_path / "route.csv"
    with (
        simulator(
            "wmbus", "--receiver", "im871a", "--meters", "50", "--seed", SEED, "--speed", "100",
            "--start", START, "--faults", "0.01", "--link", str(tmp_path / "ttyUSB0"),
        ) as fleet,
        simulator(
            "gps", "--meters", "50", "--seed", SEED, "--period", "0.2",
            "--link", str(tmp_path / "ttyACM0"), "--write-route", str(route_file),
        ) as gps,
    ):  # fmt: skip
        assert gps["route"] == str(route_file)
        with route_file.open("a", encoding="utf-8") as route:
            route.write(DEAD_ROW)
        route_text = route_file.read_text(encoding="utf-8")
        forgotten = forgettable(fleet["meters"], route_text)
        keys = keys_file(tmp_path / "keys.toml", fleet["meters"], forgotten)
        report_dir = tmp_path / "report"
        subscriber = Subscriber(MQTT_URL, [f"metergate/{gateway_id}/+/reading"])
        try:
            tmux.type(
                shlex.join(
                    [
                        *METERGATE, "driveby", "--route", str(route_file),
                        "--device", f"im871a:{fleet['port']}", "--gps", gps["port"],
                        "--keys", str(keys), "--gateway-id", gateway_id, "--mqtt-url", MQTT_URL,
                        "--spool", str(tmp_path / "spool.sqlite"),
                        "--report-dir", str(report_dir),
                    ]
                )
            )  # fmt: skip
            first = tmux.wait_for(collected, 30, "the drive-by screen")
            at_start, expected = collected(first) or (0, 0)
            assert expected == route_text.count("\n") - 1  # every route row, the dead one too
            screen = tmux.wait_for(
                lambda s: (
                    (n := collected(s)) is not None
                    and n[0] > max(at_start, expected // 2)
                    and forgotten in s
                    and re.search(r"-\d+(\.\d+)? dBm", s)
                ),
                40,
                "half the route collected and the forgotten key shown",
            )
            # What the engineer reads: the totals, the GPS fix, the streets, the meter whose
            # key is missing, the missing meters by street, the last frames with their RSSI,
            # and that the broker takes the readings.
            assert re.search(r"Collected \d+/\d+ +\d+%", screen)
            assert re.search(r"GPS 5[67]\.\d+, 24\.\d+", screen)
            assert re.search(r"Brīvības iela +\d+/\d+", screen)
            # Damaged frames (--faults) may leave a meter undecoded besides the missing key.
            assert re.search(r"Not decoded: \d+ \((check the keys|some keys: see why)\)", screen)
            assert re.search(rf"{forgotten} .*MissingKeyError", screen)
            assert re.search(r"Missing: \d+", screen)
            assert "Miera iela (1): 99" in screen
            assert "Last heard" in screen
            assert re.search(r"MQTT 127\.0\.0\.1:\d+ online", screen)
            on_screen = collected(screen)
            assert on_screen is not None

            tmux.keys("C-c")
            end = tmux.wait_for(lambda s: "Spool:" in s, 30, "the drive-by to end")
            assert "Drive-by ended: collected" in end and "Report:" in end
            tmux.type('echo "driveby exit status $?"')
            tmux.wait_for(lambda s: "driveby exit status 0" in s, 10, "exit status 0")

            wait_until(
                lambda: any(r.document().get("location") for r in subscriber.received()),
                15,
                "a reading with a GPS position on the broker",
            )
            readings = [r.document() for r in subscriber.received()]
        finally:
            subscriber.close()

    assert all(r["schema"] == "reading/1" and r["gateway_id"] == gateway_id for r in readings)
    located = next(r for r in readings if r["location"])
    assert set(located["location"]) == {"lat", "lon"}
    assert located["location"]["lat"].startswith(("56.", "57."))

    (report,) = report_dir.glob("driveby-*.json")
    document = json.loads(report.read_text(encoding="utf-8"))
    totals = document["totals"]
    assert totals["expected"] == expected
    assert totals["collected"] >= on_screen[0]
    assert totals["collected"] + totals["missing"] == expected
    missing = {row["meter_id"]: row for row in document["missing"]}
    assert missing[DEAD]["status"] == "not heard"
    assert "MissingKeyError" in missing[forgotten]["status"]
    values = document["collected"]
    assert len(values) == totals["collected"]
    assert all(row["unit"] == "m3" and re.fullmatch(r"\d+(\.\d+)?", row["value"]) for row in values)
    assert any(row["lat"] and row["lon"] for row in values)  # the GPS gave positions

    (collected_csv,) = report_dir.glob("driveby-*-collected.csv")
    with collected_csv.open(encoding="utf-8") as stream:
        assert len(list(csv.DictReader(stream))) == totals["collected"]
    (missing_csv,) = report_dir.glob("driveby-*-missing.csv")
    with missing_csv.open(encoding="utf-8") as stream:
        rows = {row["meter_id"]: row for row in csv.DictReader(stream)}
    assert set(rows) == set(missing) and rows[DEAD]["street"] == "Miera iela"


def test_offline_with_no_view_everything_stays_in_the_spool(tmp_path: Path) -> None:
    """No broker answers (a van out of reach): plain lines for a script, SIGTERM ends it, and
    every frame counted in the report waits in the spool for the next run."""
    route_file = tmp_path / "route.csv"
    spool = tmp_path / "spool.sqlite"
    with (
        simulator(
            "wmbus", "--receiver", "im871a", "--meters", "20", "--seed", SEED, "--speed", "200",
            "--start", START, "--link", str(tmp_path / "ttyUSB0"),
        ) as fleet,
        simulator("gps", "--meters", "20", "--seed", SEED, "--write-route", str(route_file)),
    ):  # fmt: skip
        drive = subprocess.Popen(
            [
                *METERGATE, "driveby", "--route", str(route_file),
                "--device", f"im871a:{fleet['port']}", "--gateway-id", "driveby-offline",
                "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}", "--spool", str(spool),
                "--report-dir", str(tmp_path), "--no-view",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            assert drive.stdout is not None
            lines: list[str] = []
            for line in drive.stdout:
                lines.append(line)
                if re.match(r"collected [1-9]\d*/\d+", line):
                    break
            drive.send_signal(signal.SIGTERM)
            out, _ = drive.communicate(timeout=30)
        finally:
            if drive.poll() is None:
                drive.kill()
                drive.wait()
    assert drive.returncode == 0
    lines += out.splitlines(keepends=True)
    assert any(re.search(r"  -\d+(\.\d+)? dBm$", line) for line in lines)  # a frame's line
    (report,) = tmp_path.glob("driveby-*.json")
    totals = json.loads(report.read_text(encoding="utf-8"))["totals"]
    assert totals["frames"] > 0
    with Spool(spool, "driveby-offline") as kept:
        assert kept.depth() == totals["frames"]
    assert f"Spool: {totals['frames']} messages waiting" in out


ROUTE = "meter_id,street,house\nKAM-12345678,Brīvības iela,1\n"


@pytest.fixture
def route(tmp_path: Path) -> Path:
    path = tmp_path / "route.csv"
    path.write_text(ROUTE, encoding="utf-8")
    return path


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line of a refused command line; nothing was opened."""
    spool = tmp_path / "spool.sqlite"
    code = main(["driveby", "--spool", str(spool), "--report-dir", str(tmp_path), *args])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("metergate: "), captured.err
    assert not spool.exists()
    return lines[0]


def test_a_missing_route_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(
        tmp_path, capsys, "--route", str(tmp_path / "nope.csv"), "--device", "im871a:/dev/x"
    )
    assert "nope.csv: cannot read" in line


def test_a_bad_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(ROUTE + "not-a-meter,Tērbatas iela,2\n", encoding="utf-8")
    line = refused(tmp_path, capsys, "--route", str(bad), "--device", "im871a:/dev/x")
    assert "bad.csv:line 3:" in line


@pytest.mark.parametrize(
    ("device", "says"),
    [("usb:/dev/ttyUSB0", "--device: unknown receiver 'usb'"), ("im871a:", "needs a port")],
)
def test_a_bad_device(
    route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str, says: str
) -> None:
    assert says in refused(tmp_path, capsys, "--route", str(route), "--device", device)


def test_a_keys_file_others_can_read(
    route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"KAM-12345678" = "000102030405060708090A0B0C0D0E0F"\n')
    keys.chmod(0o644)
    line = refused(
        tmp_path, capsys, "--route", str(route), "--device", "im871a:/dev/x", "--keys", str(keys)
    )
    assert "chmod 600" in line and "0F" not in line


def test_a_missing_keys_file(
    route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(
        tmp_path, capsys, "--route", str(route), "--device", "im871a:/dev/x",
        "--keys", str(tmp_path / "keys.toml"),
    )  # fmt: skip
    assert "keys.toml: cannot read" in line


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (("--mqtt-url", "http://broker"), "--mqtt-url: a broker URL starts with mqtt://"),
        (("--mqtt-url", "mqtt://broker:port"), "--mqtt-url: the broker URL's port"),
        (("--gateway-id", "van/1"), "--gateway-id: 'van/1' is not"),
        (("--topic-root", "city/b"), "--topic-root: the topic root 'city/b' cannot be an MQTT"),
        (("--timezone", "Mars/Olympus"), "--timezone: 'Mars/Olympus' is not an IANA time zone"),
    ],
)
def test_bad_options(
    route: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: tuple[str, str],
    says: str,
) -> None:
    line = refused(tmp_path, capsys, "--route", str(route), "--device", "im871a:/dev/x", *option)
    assert says in line


def test_a_report_dir_that_is_a_file(
    route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(
        tmp_path, capsys, "--route", str(route), "--device", "im871a:/dev/x",
        "--report-dir", str(route),
    )  # fmt: skip
    assert "--report-dir: cannot make" in line


def test_the_defaults() -> None:
    assert default_gateway_id("van 7.local") == "driveby-van-7.local"
    assert default_gateway_id("ÄÖ") == "driveby-host"
    assert len(default_gateway_id("x" * 100)) == 64
    assert default_spool_path("driveby-van", {"XDG_DATA_HOME": "/data"}) == Path(
        "/data/metergate/spool-driveby-van.sqlite"
    )
    assert default_spool_path("v", {"HOME": "/h"}).name == "spool-v.sqlite"
