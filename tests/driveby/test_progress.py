"""The drive-by's state: events in, snapshots out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from decoders.telegram import DataRecord, RecordSpec, Status
from gateway.driveby.progress import DrivebyEvent, DrivebyProgress, event_from_message
from gateway.driveby.route import parse_route
from gateway.frames import Location, RawFrame
from gateway.messages import raw_message, records_message
from metergate.errors import MissingKeyError

T0 = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)
ROUTE = parse_route(
    "meter_id,street,house,premise\n"
    "KAM-00000001,Brīvības iela,1,dz. 1\n"
    "KAM-00000002,Brīvības iela,1,dz. 2\n"
    "KAM-00000003,Tērbatas iela,5,\n"
    "KAM-00000004,Tērbatas iela,7,\n",
    path="route.csv",
)
HERE = Location(Decimal("56.9586380"), Decimal("24.1218250"))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def value(meter_id: str, seconds: int, volume: str, rssi: int = -70) -> DrivebyEvent:
    at = T0 + timedelta(seconds=seconds)
    return DrivebyEvent(
        meter_id,
        at,
        decoded=True,
        volume=Decimal(volume),
        unit="m3",
        measured_at=at - timedelta(seconds=30),
        rssi_dbm=Decimal(rssi),
        location=HERE,
    )


def failure(meter_id: str | None, seconds: int, error: str = "MissingKeyError") -> DrivebyEvent:
    return DrivebyEvent(meter_id, T0 + timedelta(seconds=seconds), False, error, rssi_dbm=None)


def test_a_fresh_drive_has_everything_missing() -> None:
    clock = Clock()
    snap = DrivebyProgress(ROUTE, clock=clock).snapshot()
    assert (snap.expected, snap.collected, snap.percent, snap.frames) == (4, 0, 0, 0)
    assert [e.meter_id for e in snap.missing()] == [e.meter_id for e in ROUTE]
    assert list(snap.missing_by_street()) == ["Brīvības iela", "Tērbatas iela"]
    assert [(s.street, s.expected, s.collected, s.missing) for s in snap.streets()] == [
        ("Brīvības iela", 2, 0, 2),
        ("Tērbatas iela", 2, 0, 2),
    ]
    assert snap.status(ROUTE.entries[0]) == "not heard"
    assert snap.started_at == snap.taken_at == T0


def test_collected_meters_keep_their_newest_value_and_best_signal() -> None:
    clock = Clock()
    progress = DrivebyProgress(ROUTE, clock=clock)
    progress.record(value("KAM-00000001", 10, "12.345", rssi=-80))
    progress.record(value("kam-00000001", 40, "12.346", rssi=-65))  # any spelling of the id
    progress.record(value("KAM-00000001", 25, "12.340", rssi=-90))  # late, from a repeater
    clock.now = T0 + timedelta(minutes=1)
    snap = progress.snapshot()
    meter = snap.meters["KAM-00000001"]
    assert (meter.volume, meter.values, meter.frames) == (Decimal("12.346"), 3, 3)
    assert meter.value_received_at == T0 + timedelta(seconds=40)
    assert meter.measured_at == T0 + timedelta(seconds=10)
    assert (meter.first_heard, meter.last_heard) == (
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=40),
    )
    assert (meter.rssi_dbm, meter.best_rssi_dbm) == (Decimal(-65), Decimal(-65))
    assert meter.value_location == HERE and meter.status == "collected"
    assert (snap.collected, snap.percent, snap.taken_at) == (1, 25, clock.now)
    assert snap.streets()[0].collected == 1
    assert [e.meter_id for e in snap.missing()] == ["KAM-00000002", "KAM-00000003", "KAM-00000004"]


def test_a_meter_heard_without_its_key_is_failed_not_collected_nor_silent() -> None:
    progress = DrivebyProgress(ROUTE, clock=Clock())
    for second in (1, 2, 3):
        progress.record(failure("KAM-00000003", second))
    progress.record(failure("KAM-00000003", 4, "DecryptionError"))
    snap = progress.snapshot()
    (failed,) = snap.failed()
    assert failed.meter_id == "KAM-00000003" and failed.entry == ROUTE.get("KAM-00000003")
    assert failed.status == "DecryptionError x1, MissingKeyError x3"
    assert snap.status(ROUTE.entries[2]) == failed.status
    assert snap.collected == 0 and ROUTE.entries[2] in snap.missing()
    assert [(s.street, s.failed) for s in snap.streets()] == [
        ("Brīvības iela", 0),
        ("Tērbatas iela", 1),
    ]
    assert (snap.frames, snap.decoded) == (4, 0)
    # Once a key turns up and a frame decodes, the meter is collected and no longer failed.
    progress.record(value("KAM-00000003", 9, "1.000"))
    snap = progress.snapshot()
    assert snap.failed() == () and snap.is_collected("KAM-00000003")


def test_a_decoded_frame_without_a_volume_is_heard_but_not_collected() -> None:
    progress = DrivebyProgress(ROUTE, clock=Clock())
    progress.record(DrivebyEvent("KAM-00000004", T0, decoded=True))
    snap = progress.snapshot()
    assert snap.status(ROUTE.entries[3]) == "no volume"
    assert snap.collected == 0 and snap.failed() == ()


def test_meters_not_on_the_route_and_frames_naming_no_meter() -> None:
    progress = DrivebyProgress(ROUTE, clock=Clock())
    progress.record(value("ABC-11111111", 1, "5", rssi=-90))
    progress.record(failure("ABC-22222222", 2))
    progress.record(
        DrivebyEvent("ABC-22222222", T0, False, "MissingKeyError", rssi_dbm=Decimal(-60))
    )
    progress.record(failure(None, 3, "FrameError"))
    snap = progress.snapshot()
    assert [m.meter_id for m in snap.unknown()] == ["ABC-22222222", "ABC-11111111"]
    assert snap.unknown()[0].frames == 2
    assert (snap.frames, snap.decoded, snap.unidentified, snap.collected) == (4, 1, 1, 0)
    assert snap.failed() == ()  # strangers without keys are no task for the office


def test_recent_frames_are_newest_first_and_bounded() -> None:
    progress = DrivebyProgress(ROUTE, clock=Clock(), recent=3)
    for second in range(5):
        progress.record(value("KAM-00000002", second, f"{second}.000"))
    assert [e.volume for e in progress.snapshot().recent] == [Decimal(4), Decimal(3), Decimal(2)]


def test_every_meter_collected_is_one_hundred_percent() -> None:
    progress = DrivebyProgress(ROUTE, clock=Clock())
    for n, entry in enumerate(ROUTE):
        progress.record(value(entry.meter_id, n, "1"))
        assert progress.snapshot().percent == (n + 1) * 100 // 4
    snap = progress.snapshot()
    assert snap.missing() == () and snap.missing_by_street() == {}


def test_a_snapshot_does_not_change_when_the_drive_goes_on() -> None:
    progress = DrivebyProgress(ROUTE, clock=Clock())
    before = progress.snapshot()
    progress.record(value("KAM-00000001", 1, "1"))
    assert before.meters == {} and before.frames == 0
    with pytest.raises(TypeError):
        before.meters["KAM-00000001"] = progress.snapshot().meters["KAM-00000001"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"decoded": True, "error": "MissingKeyError"}, "either decoded or has an error"),
        ({"decoded": False}, "either decoded or has an error"),
        ({"decoded": True, "volume": Decimal(1)}, "comes with its unit"),
        ({"decoded": False, "error": "X", "volume": Decimal(0), "unit": "m3"}, "decoded frame"),
        ({"decoded": True, "received_at": datetime(2026, 2, 1)}, "aware"),
        ({"decoded": True, "measured_at": datetime(2026, 2, 1)}, "aware"),
    ],
)
def test_events_that_cannot_be(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DrivebyEvent(**({"meter_id": "KAM-00000001", "received_at": T0} | fields))


def record(
    quantity: str, unit: str, number: str, storage: int = 0, dif: bytes = b"\x04"
) -> DataRecord:
    spec = RecordSpec(dif, b"\x13", 4, "instantaneous", storage, 0, 0, quantity, unit)
    return DataRecord(spec, Decimal(number), b"")


def test_events_from_the_messages_the_pipeline_publishes() -> None:
    raw = RawFrame(b"\x01\x02", T0, "im871a:/dev/ttyUSB0", "wmbus", Decimal("-71.5"), HERE)
    records = [
        record("volume_flow", "m3/h", "0.012"),
        record("volume", "m3", "99.000", storage=1),
        record("volume", "m3", "123.456"),
    ]
    message = records_message(
        "KAM-00000001", "KAM", "water", records, raw, "gw-01", status=Status(0)
    )
    event = event_from_message(message)
    assert event == DrivebyEvent(
        "KAM-00000001",
        T0,
        decoded=True,
        volume=Decimal("123.456"),
        unit="m3",
        measured_at=T0,
        rssi_dbm=Decimal(-72),  # reading/1 carries whole dBm
        location=Location(HERE.lat, HERE.lon),
    )
    error = MissingKeyError("no key for this meter", data=raw.data)
    failed = event_from_message(raw_message(raw, error, "gw-01", "KAM-00000002"))
    assert (failed.meter_id, failed.decoded, failed.error) == (
        "KAM-00000002",
        False,
        "MissingKeyError",
    )
    no_volume = event_from_message(
        records_message("KAM-00000001", "KAM", "water", [], raw, "gw-01")
    )
    assert no_volume.decoded and no_volume.volume is None


@pytest.mark.parametrize(
    "message",
    [
        {"schema": "status/1", "received_at": "2026-02-01T06:00:00Z"},
        {"schema": "reading/1"},
        {"schema": "reading/1", "received_at": "yesterday"},
        {"schema": "raw/1", "received_at": "2026-02-01T06:00:00Z", "error": "x"},
        {"schema": "reading/1", "received_at": "2026-02-01T06:00:00Z", "rssi_dbm": "loud"},
        {"schema": "reading/1", "received_at": "2026-02-01T06:00:00Z", "location": {"lat": 1}},
        {"schema": "reading/1", "received_at": "2026-02-01T06:00:00", "readings": []},
    ],
)
def test_messages_that_are_no_event(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        event_from_message(message)
