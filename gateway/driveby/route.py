"""The route list of a drive-by: which meters a field engineer sets out to collect, and where.

A CSV file, one meter per row, as an office exports it from a spreadsheet. Columns (the header
names are case-insensitive; spaces and hyphens count as underscores; the aliases in
`COLUMN_ALIASES` are accepted too):

- `meter_id` (`KAM-12345678`), or `manufacturer` and `serial` (`KAM`, `12345678`). A serial of
  fewer than 8 decimal digits is padded with leading zeros: spreadsheets store serials as
  numbers and drop them, while the wM-Bus identification number always has 8 digits.
- `street` (required), `house`, `premise` (apartment, flat), `note` (a name or customer note),
  `lat` and `lon` (where the meter is expected, WGS 84 decimal degrees; both or neither).

Columns with other names are ignored (an export often carries more) and listed in
`Route.ignored_columns`, so the caller can show them: a misspelt optional column is then seen.
The delimiter is the one of `,` `;` TAB that the header line uses most (spreadsheets in
locales with a decimal comma write `;`); with `;` or TAB, coordinates may use a decimal comma.

One bad row refuses the whole route: the engineer learns it at the start, in the office or the
van, and not at the end of the day with meters silently left off the list. Every bad row is
reported at once (RouteError, a ConfigError naming the file and the first bad line), so the
file is fixed in one go. A meter listed twice is a bad row: the report could not say where it
is.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from metergate.errors import ConfigError
from metergate.keys import canonical_meter_id

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "meter_id": ("meter_id", "meter", "meterid"),
    "manufacturer": ("manufacturer", "mfr", "maker"),
    "serial": ("serial", "serial_no", "serial_number"),
    "street": ("street",),
    "house": ("house", "house_no", "house_number"),
    "premise": ("premise", "apartment", "apt", "flat"),
    "note": ("note", "name", "customer", "customer_note", "comment"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "longitude"),
}
_FIELD_OF = {alias: name for name, aliases in COLUMN_ALIASES.items() for alias in aliases}
ROUTE_COLUMNS = ("meter_id", "street", "house", "premise", "note", "lat", "lon")
MAX_REPORTED = 10
_SERIAL_DIGITS = re.compile(r"[0-9]{1,8}", re.ASCII)
_SERIAL_HEX = re.compile(r"[0-9A-Fa-f]{8}", re.ASCII)
_MANUFACTURER = re.compile(r"[A-Za-z]{3}", re.ASCII)


class RouteError(ConfigError):
    """A route file that cannot be used. `problems` holds (line, message) of every bad row."""

    def __init__(self, problems: Sequence[tuple[int, str]], *, path: str) -> None:
        first = problems[0][0]
        shown = [f"line {line}: {message}" for line, message in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            shown.append(f"and {len(problems) - MAX_REPORTED} more")
        summary = (
            shown[0] if len(problems) == 1 else f"{len(problems)} bad rows: " + "; ".join(shown)
        )
        super().__init__(summary, path=path, location=f"line {first}")
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One meter on the route; `line` is where it stands in the file (0 when not from one)."""

    meter_id: str
    street: str
    house: str = ""
    premise: str = ""
    note: str = ""
    lat: Decimal | None = None
    lon: Decimal | None = None
    line: int = 0

    @property
    def address(self) -> str:
        """Street, house and premise as an engineer reads them: `Brīvības iela 12, dz. 3`."""
        place = f"{self.street} {self.house}".strip()
        return f"{place}, {self.premise}" if self.premise else place


@dataclass(frozen=True, slots=True)
class Route:
    """The meters of a route in file order; streets in the order they first appear."""

    entries: tuple[RouteEntry, ...]
    path: str = "<route>"
    ignored_columns: tuple[str, ...] = ()
    _index: dict[str, RouteEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, RouteEntry] = {}
        for entry in self.entries:
            if entry.meter_id in index:
                raise ValueError(f"{entry.meter_id} is on the route twice")
            index[entry.meter_id] = entry
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[RouteEntry]:
        return iter(self.entries)

    def __contains__(self, meter_id: object) -> bool:
        return meter_id in self._index

    def get(self, meter_id: str) -> RouteEntry | None:
        return self._index.get(meter_id)

    def streets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(entry.street for entry in self.entries))


def _delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _columns(header: list[str], path: str) -> tuple[dict[str, int], tuple[str, ...]]:
    columns: dict[str, int] = {}
    ignored: list[str] = []
    for position, name in enumerate(header):
        key = re.sub(r"[\s\-]+", "_", name.strip().lower())
        field_name = _FIELD_OF.get(key)
        if field_name is None:
            if name.strip():
                ignored.append(name.strip())
            continue
        if field_name in columns:
            raise ConfigError(
                f"columns {columns[field_name] + 1} and {position + 1} both give {field_name}",
                path=path,
                location="line 1",
            )
        columns[field_name] = position
    if "meter_id" not in columns and not {"manufacturer", "serial"} <= columns.keys():
        raise ConfigError(
            "the header needs a meter_id column, or manufacturer and serial",
            path=path,
            location="line 1",
        )
    if "street" not in columns:
        raise ConfigError("the header needs a street column", path=path, location="line 1")
    if ("lat" in columns) != ("lon" in columns):
        raise ConfigError("lat and lon come together", path=path, location="line 1")
    return columns, tuple(ignored)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 30 else text[:30] + "...")


def _meter_id(cells: dict[str, str]) -> str:
    """The canonical meter id of a row; ValueError with the reason when there is none."""
    by_id = None
    if cells.get("meter_id"):
        by_id = canonical_meter_id(cells["meter_id"])
        if by_id is None:
            raise ValueError(f"not a meter id (MFR-12345678): {_shown(cells['meter_id'])}")
    manufacturer, serial = cells.get("manufacturer", ""), cells.get("serial", "")
    by_serial = None
    if manufacturer or serial:
        if _MANUFACTURER.fullmatch(manufacturer) is None:
            raise ValueError(f"a manufacturer is 3 letters, not {_shown(manufacturer)}")
        if _SERIAL_DIGITS.fullmatch(serial):
            serial = serial.zfill(8)
        elif _SERIAL_HEX.fullmatch(serial) is None:
            raise ValueError(f"a serial is up to 8 digits, not {_shown(serial)}")
        by_serial = canonical_meter_id(f"{manufacturer}-{serial}")
    if by_id and by_serial and by_id != by_serial:
        raise ValueError(f"meter_id {by_id} and manufacturer/serial {by_serial} disagree")
    meter_id = by_id or by_serial
    if meter_id is None:
        raise ValueError("no meter id")
    return meter_id


def _coordinate(text: str, name: str, limit: int, decimal_comma: bool) -> Decimal:
    if decimal_comma:
        text = text.replace(",", ".")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} is not a number: {_shown(text)}") from None
    if not (value.is_finite() and -limit <= value <= limit):
        raise ValueError(f"{name} {_shown(text)} is not within -{limit}..{limit} degrees")
    return value


def _entry(cells: dict[str, str], line: int, decimal_comma: bool) -> RouteEntry:
    meter_id = _meter_id(cells)
    street = cells.get("street", "")
    if not street:
        raise ValueError(f"{meter_id} has no street")
    lat_text, lon_text = cells.get("lat", ""), cells.get("lon", "")
    if bool(lat_text) != bool(lon_text):
        raise ValueError("give both lat and lon, or neither")
    lat = _coordinate(lat_text, "lat", 90, decimal_comma) if lat_text else None
    lon = _coordinate(lon_text, "lon", 180, decimal_comma) if lon_text else None
    return RouteEntry(
        meter_id,
        street,
        cells.get("house", ""),
        cells.get("premise", ""),
        cells.get("note", ""),
        lat,
        lon,
        line,
    )


def parse_route(text: str, *, path: str = "<route>") -> Route:
    """The route in a CSV text; RouteError (a ConfigError) listing every bad row."""
    text = text.removeprefix("\ufeff")
    delimiter = _delimiter(text)
    # strict: an unclosed quote is an error, not the rest of the file swallowed into one field
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise ConfigError(f"not CSV: {error}", path=path, location="line 1") from None
    if header is None:
        raise ConfigError("the file is empty", path=path)
    columns, ignored = _columns(header, path)
    entries: list[RouteEntry] = []
    seen: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader, None)
        except csv.Error as error:
            problems.append((start, f"not CSV: {error}"))
            break
        if row is None:
            break
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if any(cell.strip() for cell in row[len(header) :]):  # empty extra cells are harmless
            problems.append((start, f"{len(row)} fields, but the header names {len(header)}"))
            continue
        cells = {
            name: row[position].strip() if position < len(row) else ""
            for name, position in columns.items()
        }
        try:
            entry = _entry(cells, start, decimal_comma=delimiter != ",")
        except ValueError as error:
            problems.append((start, str(error)))
            continue
        if entry.meter_id in seen:
            problems.append((start, f"{entry.meter_id} is already on line {seen[entry.meter_id]}"))
            continue
        seen[entry.meter_id] = start
        entries.append(entry)
    if problems:
        raise RouteError(problems, path=path)
    if not entries:
        raise ConfigError("the route lists no meters", path=path)
    return Route(tuple(entries), path, ignored)


def load_route(path: str | Path) -> Route:
    """The route file at `path` (UTF-8, a byte-order mark allowed as Excel writes it)."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", path=name) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"not UTF-8 text (byte {error.start}); save the sheet as CSV UTF-8", path=name
        ) from None
    return parse_route(text, path=name)


def format_route(entries: Iterable[RouteEntry]) -> str:
    """A route file's text for `entries`: what parse_route reads back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROUTE_COLUMNS)
    for entry in entries:
        writer.writerow(
            [
                entry.meter_id,
                entry.street,
                entry.house,
                entry.premise,
                entry.note,
                "" if entry.lat is None else format(entry.lat, "f"),
                "" if entry.lon is None else format(entry.lon, "f"),
            ]
        )
    return out.getvalue()
