"""A whole simulated drive-by without the daemon: the fleet on an emulated iM871A, a GPS on
another pty, each frame decoded and turned into the reading/1 or raw/1 message the gateway
publishes, the drive-by's event taken from that message, then the screen and the report.

One route meter's key is left out of the keys, as an office forgets one: the drive must show it
as heard but not decoded, and the report must list it as missing with the reason.
"""

from __future__ import annotations

import io
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console

from decoders.decode import Decoder
from firmware_sim.gps import GpsServer, Track, example_route
from firmware_sim.receivers import Im871aDevice
from gateway.driveby.gps import GpsReader
from gateway.driveby.progress import DrivebyProgress, event_from_message
from gateway.driveby.report import write_report
from gateway.driveby.view import DrivebyView
from gateway.frames import RawFrame
from gateway.messages import raw_message, reading_message, undecoded_meter_id
from gateway.pipeline import decode_with_keys
from metergate.errors import DecodeError
from tests.drivers.wmbus_sim import FAST, START, air, receiver_for, serving

pytestmark = pytest.mark.timeout(120)


def test_a_drive_past_the_simulated_fleet(tmp_path: Path) -> None:
    fleet = air()
    route = example_route(fleet.fleet)
    keys = fleet.keys()
    forgotten = next(
        entry.meter_id
        for entry in route
        if entry.meter_id in keys and fleet.fleet.by_meter_id(entry.meter_id).replacement is None
    )
    del keys[forgotten]
    # Route meters that keep their device during the few simulated hours of the test.
    steady = {
        entry.meter_id
        for entry in route
        if (rep := fleet.fleet.by_meter_id(entry.meter_id).replacement) is None
        or rep.at > START + timedelta(days=1)
    }
    wanted = steady - {forgotten}
    off_route = {m.meter.identity.meter_id for m in fleet.meters} - {e.meter_id for e in route}
    decoder = Decoder()
    with serving(Im871aDevice(), fault_rate=0.02, tmp_path=tmp_path) as (server, clock):
        progress = DrivebyProgress(route, clock=clock.now)
        track = Track.along(route, START, speed_mps=10.0)
        gps_server = GpsServer(track, clock=clock.now, link=tmp_path / "ttyACM0", period_s=0.02)
        with gps_server, GpsReader(gps_server.url, backoff=FAST) as gps:
            receiver = receiver_for(server, "im871a", mode="C1T1")
            deadline = time.monotonic() + 60
            try:
                for received in receiver.frames(idle_timeout_s=5):
                    raw = RawFrame(
                        received.frame,
                        clock.now(),
                        receiver.name,
                        "wmbus",
                        received.rssi_dbm,
                        gps.location(),
                    )
                    try:
                        message = reading_message(
                            decode_with_keys(decoder, received.frame, keys, protocol="wmbus"),
                            raw,
                            "van-1",
                        )
                    except DecodeError as error:
                        message = raw_message(raw, error, "van-1", undecoded_meter_id(raw, error))
                    progress.record(event_from_message(message))
                    snap = progress.snapshot()
                    done = {m.meter_id for m in snap.on_route() if m.collected}
                    heard_forgotten = forgotten in snap.meters
                    if (done >= wanted and heard_forgotten) or time.monotonic() > deadline:
                        break
            finally:
                receiver.close()
    snap = progress.snapshot()
    collected = {m.meter_id for m in snap.on_route() if m.collected}
    assert collected >= wanted
    assert forgotten not in collected
    assert any(m.meter_id == forgotten for m in snap.failed())
    assert "MissingKeyError" in snap.meters[forgotten].status
    assert {m.meter_id for m in snap.unknown()} & off_route
    located = [m for m in snap.on_route() if m.collected and m.value_location is not None]
    assert len(located) > len(wanted) // 2  # the GPS had a fix for most of the drive
    for meter in snap.on_route():
        if meter.collected:
            assert meter.unit == "m3" and meter.volume is not None and meter.volume >= 0

    console = Console(record=True, width=80, height=24, file=io.StringIO())
    console.print(DrivebyView(snap, gps.status(), title="route.csv"))
    text = console.export_text()
    assert f"Collected {snap.collected}/{len(route)}" in text
    assert forgotten in text and "Not decoded" in text

    files = write_report(snap, tmp_path / "report")
    missing = files.missing_csv.read_text(encoding="utf-8")
    assert forgotten in missing and "MissingKeyError" in missing
    collected_lines = files.collected_csv.read_text(encoding="utf-8").splitlines()
    assert len(collected_lines) == 1 + snap.collected
