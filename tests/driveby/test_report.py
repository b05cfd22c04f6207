"""The end-of-drive report: CSV of collected values, CSV of missing meters, JSON of both."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.driveby.progress import DrivebyEvent, DrivebyProgress, DrivebySnapshot
from gateway.driveby.report import (
    COLLECTED_COLUMNS,
    MISSING_COLUMNS,
    ReportFiles,
    write_atomically,
    write_report,
)
from gateway.driveby.route import load_route, parse_route
from gateway.frames import Location
from metergate.errors import StorageError

T0 = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)
ROUTE = parse_route(
    "meter_id,street,house,premise,note,lat,lon\n"
    "KAM-00000001,Brīvības iela,1,dz. 1,,56.958638,24.121825\n"
    'KAM-00000002,Brīvības iela,1,dz. 2,"dog, big",56.958638,24.121825\n'
    "KAM-00000003,Tērbatas iela,5,,,,\n",
    path="route.csv",
)
HERE = Location(Decimal("56.9586380"), Decimal("24.1218250"))


def snapshot() -> DrivebySnapshot:
    now = [T0]
    progress = DrivebyProgress(ROUTE, clock=lambda: now[0])
    progress.record(
        DrivebyEvent(
            "KAM-00000001",
            T0 + timedelta(minutes=5),
            True,
            volume=Decimal("123.4560"),
            unit="m3",
            measured_at=T0 + timedelta(minutes=4),
            rssi_dbm=Decimal("-71.5"),
            location=HERE,
        )
    )
    progress.record(
        DrivebyEvent(
            "KAM-00000002",
            T0 + timedelta(minutes=6),
            False,
            "MissingKeyError",
            rssi_dbm=Decimal(-80),
        )
    )
    progress.record(
        DrivebyEvent("ZRI-99999999", T0 + timedelta(minutes=7), True, volume=Decimal(5), unit="m3")
    )
    progress.record(DrivebyEvent(None, T0 + timedelta(minutes=8), False, "FrameError"))
    now[0] = T0 + timedelta(minutes=30)
    return progress.snapshot()


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        return list(reader.fieldnames or []), list(reader)


def test_the_three_files(tmp_path: Path) -> None:
    files = write_report(snapshot(), tmp_path / "reports")
    stem = tmp_path / "reports" / "driveby-20260201T060000Z"
    assert files == ReportFiles(
        Path(f"{stem}-collected.csv"), Path(f"{stem}-missing.csv"), Path(f"{stem}.json")
    )
    columns, collected = read_csv(files.collected_csv)
    assert tuple(columns) == COLLECTED_COLUMNS
    assert collected == [
        {
            "meter_id": "KAM-00000001",
            "street": "Brīvības iela",
            "house": "1",
            "premise": "dz. 1",
            "value": "123.4560",
            "unit": "m3",
            "measured_at": "2026-02-01T06:04:00Z",
            "received_at": "2026-02-01T06:05:00Z",
            "rssi_dbm": "-71.5",
            "lat": "56.9586380",
            "lon": "24.1218250",
        }
    ]
    columns, missing = read_csv(files.missing_csv)
    assert tuple(columns) == MISSING_COLUMNS
    assert [(m["meter_id"], m["status"], m["last_heard"], m["rssi_dbm"]) for m in missing] == [
        ("KAM-00000002", "MissingKeyError x1", "2026-02-01T06:06:00Z", "-80"),
        ("KAM-00000003", "not heard", "", ""),
    ]
    assert missing[0]["note"] == "dog, big" and missing[0]["lat"] == "56.958638"
    assert list(tmp_path.joinpath("reports").iterdir()) != []
    assert not [p for p in tmp_path.joinpath("reports").iterdir() if p.name.startswith(".")]


def test_the_json_report(tmp_path: Path) -> None:
    files = write_report(snapshot(), tmp_path, stem="van-7")
    assert files.json == tmp_path / "van-7.json"
    report = json.loads(files.json.read_text(encoding="utf-8"))
    assert report["schema"] == "driveby-report/1" and report["route"] == "route.csv"
    assert (report["started_at"], report["finished_at"]) == (
        "2026-02-01T06:00:00Z",
        "2026-02-01T06:30:00Z",
    )
    assert report["totals"] == {
        "expected": 3,
        "collected": 1,
        "missing": 2,
        "failed_to_decode": 1,
        "not_on_route": 1,
        "frames": 4,
        "frames_decoded": 2,
        "frames_unidentified": 1,
    }
    assert report["collected"][0]["value"] == "123.4560"
    assert [m["meter_id"] for m in report["missing"]] == ["KAM-00000002", "KAM-00000003"]
    assert report["not_on_route"] == [
        {
            "meter_id": "ZRI-99999999",
            "frames": 1,
            "first_heard": "2026-02-01T06:07:00Z",
            "last_heard": "2026-02-01T06:07:00Z",
            "best_rssi_dbm": None,
            "value": "5",
            "unit": "m3",
            "errors": {},
        }
    ]


def test_the_missing_file_is_the_route_of_the_walk_by(tmp_path: Path) -> None:
    files = write_report(snapshot(), tmp_path)
    walk = load_route(files.missing_csv)
    assert walk.entries == tuple(
        replace(entry, line=n + 2) for n, entry in enumerate(ROUTE.entries[1:])
    )
    assert walk.ignored_columns == ("status", "last_heard", "rssi_dbm")


def test_a_second_report_replaces_the_first_whole(tmp_path: Path) -> None:
    first = write_report(snapshot(), tmp_path, stem="r")
    empty = DrivebyProgress(ROUTE, clock=lambda: T0).snapshot()
    second = write_report(empty, tmp_path, stem="r")
    assert first == second
    assert read_csv(second.collected_csv)[1] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "r-collected.csv",
        "r-missing.csv",
        "r.json",
    ]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        write_atomically(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_a_place_that_cannot_be_written_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="cannot write the report"):
        write_report(snapshot(), blocker / "reports")


@pytest.mark.parametrize("stem", ["", "../up", "a/b", ".hidden"])
def test_report_names_are_plain_file_names(tmp_path: Path, stem: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        write_report(snapshot(), tmp_path, stem=stem)
