"""The drive-by screen as text: what an engineer must be able to read on it, at 80x24 and wider."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rich.console import Console

from gateway.driveby.gps import GpsStatus
from gateway.driveby.progress import DrivebyEvent, DrivebyProgress, DrivebySnapshot
from gateway.driveby.route import Route, parse_route
from gateway.driveby.view import DrivebyView, live
from gateway.frames import Location

T0 = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)  # 08:00 in Riga
ROUTE = parse_route(
    "meter_id,street,house,premise\n"
    "KAM-00000001,Brīvības iela,1,dz. 1\n"
    "KAM-00000002,Brīvības iela,1,dz. 2\n"
    "KAM-00000003,Tērbatas iela,5,\n"
    "KAM-00000004,Tērbatas iela,7,\n",
    path="route.csv",
)
HERE = Location(Decimal("56.9586380"), Decimal("24.1218250"))


def gps(location: Location | None = HERE, *, connected: bool = True) -> GpsStatus:
    return GpsStatus("/dev/ttyACM0", connected, location, 9, 0.2, 10, 5, 0, 0, 0, 0, 0, None)


def screen(
    snapshot: DrivebySnapshot, status: GpsStatus | None = None, width: int = 80, height: int = 24
) -> list[str]:
    console = Console(record=True, width=width, height=height, file=io.StringIO())
    console.print(DrivebyView(snapshot, status, title="route.csv"))
    return console.export_text().splitlines()


def drive(route: Route = ROUTE) -> DrivebyProgress:
    now = [T0]
    progress = DrivebyProgress(route, clock=lambda: now[0])
    now[0] = T0 + timedelta(minutes=12, seconds=3)
    progress.record(
        DrivebyEvent(
            "KAM-00000001",
            T0 + timedelta(seconds=30),
            True,
            volume=Decimal("12.346"),
            unit="m3",
            rssi_dbm=Decimal(-65),
            location=HERE,
        )
    )
    for second in (40, 50):
        progress.record(
            DrivebyEvent("KAM-00000003", T0 + timedelta(seconds=second), False, "MissingKeyError")
        )
    progress.record(
        DrivebyEvent(
            "ZRI-99999999",
            T0 + timedelta(seconds=60),
            False,
            "MissingKeyError",
            rssi_dbm=Decimal(-58),
        )
    )
    return progress


def test_frames_no_key_would_open_do_not_send_the_engineer_after_keys() -> None:
    progress = drive()
    # A compact frame before any full one of its format: the keys are not the cause.
    progress.record(
        DrivebyEvent("KAM-00000004", T0 + timedelta(seconds=70), False, "UnsupportedError")
    )
    text = "\n".join(screen(progress.snapshot(), gps()))
    assert "Not decoded: 2 (some keys: see why)" in text
    assert "UnsupportedError x1" in text
    alone = DrivebyProgress(ROUTE, clock=lambda: T0 + timedelta(minutes=2))
    alone.record(DrivebyEvent("KAM-00000004", T0 + timedelta(seconds=70), False, "FrameError"))
    assert "Not decoded: 1 (see why)" in "\n".join(screen(alone.snapshot(), gps()))


def test_what_an_engineer_must_see_on_80_by_24() -> None:
    lines = screen(drive().snapshot(), gps())
    text = "\n".join(lines)
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("Drive-by route.csv") and "08:12:03" in lines[0]
    assert "elapsed 0:12:03" in lines[0]
    assert "Collected 1/4" in lines[1] and " 25%" in lines[1]
    assert "frames 4, failed 3" in lines[1]
    assert "56.9586380, 24.1218250 (9 sat)" in lines[2] and "not on route 1" in lines[2]
    # The meter whose key is missing: an office matter, shown first.
    assert "Not decoded: 1 (check the keys)" in text
    assert any(
        "KAM-00000003" in row and "Tērbatas iela 5" in row and "MissingKeyError x2" in row
        for row in lines
    )
    # Streets with their counts.
    assert any(row.startswith("Brīvības iela") and "1/2" in row for row in lines)
    assert any(
        row.startswith("Tērbatas iela") and "0/2" in row and "2 (1 failed)" in row for row in lines
    )
    # The last frames heard, newest first, in local time.
    heard = lines.index("Last heard")
    assert "08:01:00" in lines[heard + 1] and "ZRI-99999999" in lines[heard + 1]
    assert "not on route" in lines[heard + 1]
    assert any("08:00:30" in row and "12.346 m3" in row and "-65 dBm" in row for row in lines)
    # Missing meters by street, for the walk-by, and the meters not on the route.
    assert "Missing: 3" in text
    assert "Brīvības iela (1): 1 dz. 2" in text and "Tērbatas iela (2): 5, 7" in text
    assert "Not on the route: 1" in text
    assert any("ZRI-99999999" in row and "-58 dBm" in row and "x1" in row for row in lines)


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (None, "GPS none"),
        (gps(None, connected=False), "GPS no device"),
        (gps(None), "GPS searching, no fix"),
    ],
)
def test_the_gps_line_says_what_the_receiver_is_doing(status: GpsStatus | None, shown: str) -> None:
    assert screen(drive().snapshot(), status)[2].startswith(shown)


def big_route(streets: int, per_street: int) -> Route:
    rows = [
        f"KAM-{street * 1000 + house:08d},Street number {street},{house},"
        for street in range(streets)
        for house in range(per_street)
    ]
    return parse_route("meter_id,street,house,premise\n" + "\n".join(rows) + "\n")


def busy_drive() -> DrivebySnapshot:
    route = big_route(30, 20)
    progress = DrivebyProgress(route, clock=lambda: T0)
    for n, entry in enumerate(route.entries[::3]):
        at = T0 + timedelta(seconds=n)
        if n % 7 == 0:
            progress.record(DrivebyEvent(entry.meter_id, at, False, "MissingKeyError"))
        else:
            progress.record(DrivebyEvent(entry.meter_id, at, True, volume=Decimal(n), unit="m3"))
    for n in range(40):
        progress.record(DrivebyEvent(f"ZRI-{n:08d}", T0, False, "DecryptionError"))
    return progress.snapshot()


@pytest.mark.parametrize(("width", "height"), [(80, 24), (100, 30), (140, 40), (200, 60)])
def test_a_long_route_fits_the_terminal_and_says_what_it_left_out(width: int, height: int) -> None:
    lines = screen(busy_drive(), gps(), width, height)
    text = "\n".join(lines)
    assert len(lines) <= height - 1 and all(len(line) <= width for line in lines)
    for title in ("Collected 171/600", "Not decoded: 29", "Street", "Last heard", "Missing: 429"):
        assert title in text
    assert "... and" in text  # a cut list says so


def test_wide_terminals_put_the_sections_side_by_side() -> None:
    lines = screen(drive().snapshot(), gps(), width=140, height=40)
    assert any("Street" in line and "Not decoded: 1" in line for line in lines)
    assert any("Missing: 3" in line and "Last heard" in line for line in lines) or any(
        "Missing: 3" in line and "ZRI-99999999" in line for line in lines
    )


def test_every_meter_collected() -> None:
    progress = DrivebyProgress(ROUTE, clock=lambda: T0)
    for entry in ROUTE:
        progress.record(DrivebyEvent(entry.meter_id, T0, True, volume=Decimal(1), unit="m3"))
    text = "\n".join(screen(progress.snapshot()))
    assert "Collected 4/4 100%" in text and "Missing:" not in text and "Not decoded" not in text


def test_live_redraws_the_progress_as_it_changes() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, height=24, force_terminal=True, color_system=None)
    progress = DrivebyProgress(ROUTE, clock=lambda: T0)
    with live(progress, console=console, title="route.csv", refresh_per_second=4) as display:
        display.refresh()
        assert "Collected 0/4" in out.getvalue()
        progress.record(DrivebyEvent("KAM-00000002", T0, True, volume=Decimal(7), unit="m3"))
        display.refresh()
    assert "Collected 1/4" in out.getvalue() and "7 m3" in out.getvalue()
