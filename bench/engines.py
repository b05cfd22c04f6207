"""The pure engines' share of a monthly fill and a night-flow scan, per meter and for 100,000.

Each simulated meter has a month of hourly readings (October 2026 in Riga: 745 readings from
1 October 00:00 local to 1 November 00:00 local, the autumn DST night included), exact to the
litre, with a household's daily pattern; one in twenty leaks at night, one in ten has a 9-day gap
before the month end (so its monthly value is estimated rather than read). The figures are the
time inside the engines only: making Reading values from (measured_at, value) rows, which the
storage side does after its query, is timed on its own line; nothing touches a database.

    .venv/bin/python bench/engines.py [--meters 2000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.flow import DEFAULT_THRESHOLDS, hourly_flows, night_lows, nights_covered
from ingest.leaks import continuous_flow_changes, night_flow_changes
from ingest.monthly import compute_monthly
from ingest.series import Reading

ZONE = ZoneInfo("Europe/Riga")
PERIOD = date(2026, 10, 1)
START = datetime(2026, 10, 1, tzinfo=ZONE).astimezone(UTC)
END = datetime(2026, 11, 1, tzinfo=ZONE).astimezone(UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)
FLEET = 100_000
# Litres per hour by local hour: a household's day.
PATTERN = (0, 0, 0, 0, 0, 4, 16, 32, 24, 12, 8, 8, 12, 8, 8, 8, 12, 20, 28, 32, 24, 16, 8, 4)


def meter_rows(index: int) -> list[tuple[datetime, Decimal]]:
    """What the storage side would fetch for one meter: (measured_at, value) rows."""
    leak = 3 if index % 20 == 0 else 0
    gap = (END - timedelta(days=9), END + timedelta(days=1)) if index % 10 == 5 else None
    litres = 1000 * (index % 997) + 12_345
    out: list[tuple[datetime, Decimal]] = []
    t = START
    while t <= END:
        if gap is None or not gap[0] < t < gap[1]:
            out.append((t, Decimal(litres).scaleb(-3)))
        litres += PATTERN[t.astimezone(ZONE).hour] + leak
        t += timedelta(hours=1)
    return out


def night_scan(readings: list[Reading]) -> int:
    thresholds = DEFAULT_THRESHOLDS
    flows = hourly_flows(readings, thresholds)
    lows = night_lows(flows, nights_covered(readings, thresholds, ZONE), thresholds, ZONE)
    changes = night_flow_changes(lows, [], thresholds)
    changes += continuous_flow_changes(flows, [], thresholds)
    return len(changes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    args = parser.parse_args()
    build = monthly = night = 0.0
    methods: dict[str, int] = {}
    alerts = readings_seen = 0
    gc.disable()  # the engines allocate in bursts; a collection inside one call skews it
    for index in range(args.meters):
        rows = meter_rows(index)
        started = time.perf_counter()
        readings = [Reading(t, value, ref=i) for i, (t, value) in enumerate(rows)]
        built = time.perf_counter()
        result = compute_monthly("M", PERIOD, readings, now=NOW, zone=ZONE)
        filled = time.perf_counter()
        alerts += night_scan(readings)
        scanned = time.perf_counter()
        build += built - started
        monthly += filled - built
        night += scanned - filled
        readings_seen += len(readings)
        method = result.method if result is not None else "none"
        methods[method] = methods.get(method, 0) + 1
        if index % 500 == 499:
            gc.collect()
    gc.enable()
    count = args.meters
    print(f"meters: {count}, readings: {readings_seen} ({readings_seen / count:.0f} per meter)")
    print(f"monthly methods: {methods}; alerts opened by the scan: {alerts}")
    for name, seconds in (
        ("building Reading values from rows (storage side)", build),
        ("monthly fill (compute_monthly)", monthly),
        ("night-flow + continuous-flow scan", night),
    ):
        per_meter = seconds / count
        print(
            f"{name}: {per_meter * 1e3:.3f} ms per meter, "
            f"{readings_seen / seconds:,.0f} readings/s, "
            f"{per_meter * FLEET:.1f} s for {FLEET:,} meters on one core"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
