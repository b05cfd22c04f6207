"""The drive-by on the engineer's screen: a rich renderable of a DrivebySnapshot.

Every line of the view is one terminal row (nothing wraps; long text ends in an ellipsis), so
the view can count its rows and fit the terminal: on 80x24 it shows the totals, the meters that
failed to decode (a key is missing: the office must act, driving again will not help), the
streets, the last frames heard, the missing meters by street and the meters heard that are not
on the route, each cut to the rows it can have. From 132 columns on, the sections stand in two
columns. live() refreshes it a few times a second with rich.live.Live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from gateway.driveby.gps import GpsReader, GpsStatus
from gateway.driveby.progress import DrivebyEvent, DrivebyProgress, DrivebySnapshot, MeterProgress
from gateway.driveby.route import RouteEntry

DEFAULT_ZONE = ZoneInfo("Europe/Riga")
WIDE = 132  # columns from which the sections stand side by side
_HEADER_ROWS = 3
T = TypeVar("T")


def _clock(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%H:%M:%S")


def _elapsed(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _dbm(value: Decimal | None) -> str:
    return "" if value is None else f"{value:f} dBm"


def _place(entry: RouteEntry) -> str:
    return f"{entry.house} {entry.premise}".strip() or "?"


def _line(*parts: str | tuple[str, str]) -> Text:
    return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")


def _table(*columns: str | tuple[str, int], header: bool = False) -> Table:
    """A borderless table; a column given as (name, width) keeps that width when space is short
    (times, meter ids and levels are no use cut), the others give way."""
    table = Table(box=None, show_header=header, pad_edge=False, padding=(0, 1), expand=False)
    for column in columns:
        name, width = column if isinstance(column, tuple) else (column, None)
        table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=width)
    return table


@dataclass(frozen=True, slots=True)
class _Section:
    """A titled block whose rows can be cut: `fixed` rows (title, table header) always show."""

    fixed: int
    rows: int
    minimum: int
    build: Callable[[int], RenderableType]  # the block with at most n rows

    def lines(self, rows: int) -> int:
        return self.fixed + rows


def _fit(sections: Sequence[_Section], budget: int, need: Sequence[int] | None = None) -> list[int]:
    """Rows per section (-1: not shown at all). `need` orders the sections by importance
    (default: as given). First each one's minimum, in that order while there is room; then
    one more row each in turn, so no section starves the others."""
    order = list(need) if need is not None else list(range(len(sections)))
    shown = [-1] * len(sections)
    left = budget
    for i in order:
        section = sections[i]
        rows = min(section.rows, section.minimum)
        if section.rows and section.lines(rows) <= left:
            shown[i] = rows
            left -= section.lines(rows)
    growing = True
    while left > 0 and growing:
        growing = False
        for i in order:
            if left > 0 and 0 <= shown[i] < sections[i].rows:
                shown[i] += 1
                left -= 1
                growing = True
    return shown


class DrivebyView:
    """The drive-by screen for one snapshot (and the GPS, when there is one)."""

    def __init__(
        self,
        snapshot: DrivebySnapshot,
        gps: GpsStatus | None = None,
        *,
        title: str = "drive-by",
        zone: tzinfo = DEFAULT_ZONE,
    ) -> None:
        self.snapshot = snapshot
        self.gps = gps
        self.title = title
        self.zone = zone

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Outside the alternate screen the last row is the cursor's: leave it free.
        height = options.height if options.height is not None else options.max_height - 1
        body = max(0, height - _HEADER_ROWS)
        yield from self._header(options.max_width)
        if options.max_width >= WIDE:
            left = self._column([self._streets(), self._missing(), self._unknown()], body)
            right = self._column([self._failed(), self._recent()], body)
            grid = Table.grid(expand=True, padding=(0, 2))
            grid.add_column(ratio=2)
            grid.add_column(ratio=3)  # the last-heard table is the widest
            grid.add_row(left, right)
            yield grid
            return
        # Shown in the order an eye runs down the screen; room goes by need: a missing key
        # first, then the streets, the missing meters, the last frames, the strangers.
        sections = [self._failed(), self._streets(), self._recent(), self._missing()]
        yield self._column([*sections, self._unknown()], body, need=(0, 1, 3, 2, 4))

    def _column(
        self, sections: list[_Section], budget: int, need: Sequence[int] | None = None
    ) -> RenderableType:
        rows = _fit(sections, budget, need)
        return Group(*(s.build(n) for s, n in zip(sections, rows, strict=True) if n >= 0))

    def _header(self, width: int) -> list[RenderableType]:
        snap = self.snapshot
        top = Table.grid(expand=True)
        top.add_column(no_wrap=True, overflow="ellipsis")
        top.add_column(justify="right", no_wrap=True)
        top.add_row(
            _line(("Drive-by ", "bold"), self.title),
            _line(
                _clock(snap.taken_at, self.zone),
                f"  elapsed {_elapsed(snap.taken_at - snap.started_at)}",
            ),
        )
        totals = Table.grid(padding=(0, 1))
        totals.add_column(no_wrap=True)
        totals.add_column(no_wrap=True)
        totals.add_column(no_wrap=True, overflow="ellipsis")
        done = snap.collected == snap.expected
        totals.add_row(
            _line(
                ("Collected ", "bold"),
                (f"{snap.collected}/{snap.expected}", "bold green" if done else "bold"),
                f" {snap.percent:3d}%",
            ),
            ProgressBar(total=max(1, snap.expected), completed=snap.collected, width=width // 4),
            _line(f"frames {snap.frames}, failed {snap.frames - snap.decoded}"),
        )
        return [top, totals, self._gps_line()]

    def _gps_line(self) -> Text:
        snap = self.snapshot
        unknown = f"   not on route {len(snap.unknown())}"
        gps = self.gps
        if gps is None:
            return _line(("GPS ", "bold"), ("none", "dim"), unknown)
        if gps.location is None:
            state = "no device" if not gps.connected else "searching, no fix"
            return _line(("GPS ", "bold"), (state, "yellow"), unknown)
        where = f"{gps.location.lat:f}, {gps.location.lon:f}"
        satellites = f" ({gps.satellites} sat)" if gps.satellites is not None else ""
        return _line(("GPS ", "bold"), (where, "green"), satellites, unknown)

    def _failed(self) -> _Section:
        failed = self.snapshot.failed()

        def build(rows: int) -> RenderableType:
            table = _table(("meter", 12), "where", "why")
            shown, more = _cut(failed, rows)
            for meter in shown:
                where = meter.entry.address if meter.entry else ""
                table.add_row(meter.meter_id, where, Text(meter.status, style="red"))
            _more(table, more)
            title = _line((f"Not decoded: {len(failed)}", "bold red"), _failed_hint(failed))
            return Group(title, table)

        return _Section(1, len(failed), 3, build)

    def _streets(self) -> _Section:
        streets = self.snapshot.streets()

        def build(rows: int) -> RenderableType:
            shown, more = _cut(streets, rows)
            done = max((len(f"{s.collected}/{s.expected}") for s in shown), default=4)
            missing = max((len(f"{s.missing} ({s.failed} failed)") for s in shown), default=7)
            table = _table("Street", ("Done", done), "", ("Missing", missing), header=True)
            for street in shown:
                bar = ProgressBar(
                    total=max(1, street.expected), completed=street.collected, width=10
                )
                failed = f" ({street.failed} failed)" if street.failed else ""
                table.add_row(
                    street.street,
                    f"{street.collected}/{street.expected}",
                    bar,
                    f"{street.missing}{failed}" if street.missing else "-",
                )
            _more(table, more)
            return table

        return _Section(1, len(streets), 3, build)

    def _recent(self) -> _Section:
        recent = self.snapshot.recent

        def build(rows: int) -> RenderableType:
            table = _table(("time", 8), ("meter", 12), "where", "value", ("rssi", 8))
            for event in recent[:rows]:  # the newest first: the older ones are no loss
                table.add_row(*self._event_row(event))
            return Group(_line(("Last heard", "bold")), table)

        return _Section(1, len(recent), 2, build)

    def _event_row(self, event: DrivebyEvent) -> tuple[str | Text, ...]:
        entry = self.snapshot.route.get(event.meter_id) if event.meter_id else None
        if event.volume is not None:
            value: str | Text = f"{event.volume:f} {event.unit}"
        elif event.error is not None:
            value = Text(event.error, style="red")
        else:
            value = "no volume"
        where = entry.address if entry else Text("not on route", style="dim")
        return (
            _clock(event.received_at, self.zone),
            event.meter_id or "?",
            where,
            value,
            _dbm(event.rssi_dbm),
        )

    def _missing(self) -> _Section:
        by_street = self.snapshot.missing_by_street()
        total = sum(len(entries) for entries in by_street.values())

        def build(rows: int) -> RenderableType:
            lines: list[RenderableType] = [_line((f"Missing: {total}", "bold yellow"))]
            items = list(by_street.items())
            shown = items if rows >= len(items) else items[: max(0, rows - 1)]
            for street, entries in shown:
                places = ", ".join(_place(entry) for entry in entries)
                lines.append(_line((street, "bold"), f" ({len(entries)}): {places}"))
            if len(shown) < len(items):
                lines.append(_line(f"... and {len(items) - len(shown)} more streets"))
            return Group(*lines)

        return _Section(1, len(by_street), 2, build)

    def _unknown(self) -> _Section:
        unknown = self.snapshot.unknown()

        def build(rows: int) -> RenderableType:
            table = _table(("meter", 12), ("rssi", 8), "frames")
            shown, more = _cut(unknown, rows)
            for meter in shown:
                table.add_row(meter.meter_id, _dbm(meter.best_rssi_dbm), f"x{meter.frames}")
            _more(table, more)
            return Group(_line((f"Not on the route: {len(unknown)}", "bold")), table)

        return _Section(1, len(unknown), 2, build)


def _cut(items: Sequence[T], rows: int) -> tuple[Sequence[T], int]:
    """The items that fit in `rows`, and how many did not; when some did not, the last row is
    kept to say so."""
    if len(items) <= rows:
        return items, 0
    shown = max(0, rows - 1)
    return items[:shown], len(items) - shown


def _more(table: Table, more: int) -> None:
    if more:
        table.add_row(Text(f"... and {more} more", style="dim"))


def live(
    progress: DrivebyProgress,
    gps: GpsReader | None = None,
    *,
    console: Console | None = None,
    title: str = "drive-by",
    refresh_per_second: float = 4.0,
    zone: tzinfo = DEFAULT_ZONE,
) -> Live:
    """A Live display of `progress`, redrawn `refresh_per_second` times; use it with `with`."""

    def render() -> RenderableType:
        status = gps.status() if gps is not None else None
        return DrivebyView(progress.snapshot(), status, title=title, zone=zone)

    return Live(
        get_renderable=render,
        console=console,
        refresh_per_second=refresh_per_second,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )


# The errors a key fixes; others (a compact frame before any full one, a format the decoder
# does not know) are not the keys' fault, and the "why" column says what they are.
_KEY_ERRORS = frozenset({"MissingKeyError", "DecryptionError"})


def _failed_hint(failed: tuple[MeterProgress, ...]) -> str:
    kinds = {kind for meter in failed for kind, _ in meter.errors}
    if not kinds & _KEY_ERRORS:
        return " (see why)"
    return " (check the keys)" if kinds <= _KEY_ERRORS else " (some keys: see why)"
