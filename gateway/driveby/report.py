"""The report at the end of a drive-by (or at Ctrl-C): what was collected, what is missing.

Three files side by side, each written to a temporary file in the same directory, flushed to
disk and renamed over its name, so a reader (or a laptop whose battery dies) sees the old file
or the whole new one, never half of one:

- `{stem}-collected.csv`: meter_id, street, house, premise, value, unit, measured_at,
  received_at, rssi_dbm (the strongest frame of the meter), lat, lon (where the van was when
  the value came).
- `{stem}-missing.csv`: the route meters without a value, with the route's own columns first,
  so the file is the route of the walk-by that follows (gateway.driveby.route reads it and
  ignores the extra columns: status, last_heard, rssi_dbm).
- `{stem}.json`: both, the meters heard that are not on the route, and the totals.

Values are exact decimal strings, times ISO 8601 in UTC (`Z`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.driveby.progress import DrivebySnapshot, MeterProgress
from gateway.driveby.route import ROUTE_COLUMNS, RouteEntry
from gateway.messages import utc_text
from metergate.errors import StorageError

REPORT_SCHEMA = "driveby-report/1"
COLLECTED_COLUMNS = (
    "meter_id",
    "street",
    "house",
    "premise",
    "value",
    "unit",
    "measured_at",
    "received_at",
    "rssi_dbm",
    "lat",
    "lon",
)
MISSING_COLUMNS = (*ROUTE_COLUMNS, "status", "last_heard", "rssi_dbm")


@dataclass(frozen=True, slots=True)
class ReportFiles:
    collected_csv: Path
    missing_csv: Path
    json: Path


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def collected_rows(snapshot: DrivebySnapshot) -> list[dict[str, str]]:
    """One row per route meter with a value, in route order."""
    rows = []
    for meter in snapshot.on_route():
        if meter.entry is None or meter.volume is None:
            continue
        where = meter.value_location
        rows.append(
            {
                "meter_id": meter.meter_id,
                "street": meter.entry.street,
                "house": meter.entry.house,
                "premise": meter.entry.premise,
                "value": _text(meter.volume),
                "unit": meter.unit or "",
                "measured_at": utc_text(meter.measured_at) if meter.measured_at else "",
                "received_at": (
                    utc_text(meter.value_received_at) if meter.value_received_at else ""
                ),
                "rssi_dbm": _text(meter.best_rssi_dbm),
                "lat": _text(where.lat) if where else "",
                "lon": _text(where.lon) if where else "",
            }
        )
    return rows


def missing_rows(snapshot: DrivebySnapshot) -> list[dict[str, str]]:
    """One row per route meter without a value, in route order, with why."""
    rows = []
    for entry in snapshot.missing():
        heard = snapshot.meters.get(entry.meter_id)
        rows.append(
            {
                **_route_fields(entry),
                "status": snapshot.status(entry),
                "last_heard": utc_text(heard.last_heard) if heard else "",
                "rssi_dbm": _text(heard.best_rssi_dbm) if heard else "",
            }
        )
    return rows


def _route_fields(entry: RouteEntry) -> dict[str, str]:
    return {
        "meter_id": entry.meter_id,
        "street": entry.street,
        "house": entry.house,
        "premise": entry.premise,
        "note": entry.note,
        "lat": _text(entry.lat),
        "lon": _text(entry.lon),
    }


def _unknown(meter: MeterProgress) -> dict[str, Any]:
    return {
        "meter_id": meter.meter_id,
        "frames": meter.frames,
        "first_heard": utc_text(meter.first_heard),
        "last_heard": utc_text(meter.last_heard),
        "best_rssi_dbm": _text(meter.best_rssi_dbm) or None,
        "value": _text(meter.volume) or None,
        "unit": meter.unit,
        "errors": dict(meter.errors),
    }


def report_json(snapshot: DrivebySnapshot) -> dict[str, Any]:
    """The JSON report: totals, collected, missing and the meters not on the route."""
    return {
        "schema": REPORT_SCHEMA,
        "route": snapshot.route.path,
        "started_at": utc_text(snapshot.started_at),
        "finished_at": utc_text(snapshot.taken_at),
        "totals": {
            "expected": snapshot.expected,
            "collected": snapshot.collected,
            "missing": snapshot.expected - snapshot.collected,
            "failed_to_decode": len(snapshot.failed()),
            "not_on_route": len(snapshot.unknown()),
            "frames": snapshot.frames,
            "frames_decoded": snapshot.decoded,
            "frames_unidentified": snapshot.unidentified,
        },
        "collected": collected_rows(snapshot),
        "missing": missing_rows(snapshot),
        "not_on_route": [_unknown(meter) for meter in snapshot.unknown()],
    }


def _csv(columns: Sequence[str], rows: Iterable[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """`text` at `path`, or nothing changed: a temporary file renamed over it once on disk."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename itself reaches the disk only with the directory.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def default_stem(snapshot: DrivebySnapshot) -> str:
    """`driveby-20260201T060000Z`: named for the start, so a second drive writes new files."""
    return "driveby-" + snapshot.started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_report(
    snapshot: DrivebySnapshot, directory: str | os.PathLike[str], *, stem: str | None = None
) -> ReportFiles:
    """The three report files in `directory` (created when missing); StorageError when they
    cannot be written, so the caller can try another place before the data are gone."""
    folder = Path(directory)
    stem = default_stem(snapshot) if stem is None else stem
    if not stem or "/" in stem or stem.startswith("."):
        raise ValueError(f"a report name is a plain file name, not {stem!r}")
    files = ReportFiles(
        folder / f"{stem}-collected.csv", folder / f"{stem}-missing.csv", folder / f"{stem}.json"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(files.collected_csv, _csv(COLLECTED_COLUMNS, collected_rows(snapshot)))
        write_atomically(files.missing_csv, _csv(MISSING_COLUMNS, missing_rows(snapshot)))
        text = json.dumps(report_json(snapshot), ensure_ascii=False, indent=2) + "\n"
        write_atomically(files.json, text)
    except OSError as error:
        raise StorageError(f"cannot write the report in {folder}: {error}") from error
    return files
