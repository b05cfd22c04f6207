"""The engines against the real PostgreSQL (ingest.engine_run): every rule of DESIGN.md sections
5-7 with a scenario of its own in the database, re-runs that change nothing, `metergate monthly
fill`, and the worker running the engines by itself for what arrives over MQTT."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from ingest.boundaries import local_midnight
from ingest.engine_loop import SWEEP_LOCK, EngineLoop
from ingest.engine_marks import ON_MARKED, claim, finish
from ingest.engine_run import EngineReport, run_engines, sweep
from ingest.monthly_values import MonthlyResult, consumption
from ingest.payload import parse_message
from ingest.series import Reading
from ingest.store import Store
from metergate.cli import main
from tests.ingest.engine_data import series, utc
from tests.ingest.messages import BASE, encode, iso, reading
from tests.ingest.services import Publisher, count, running, wait_until, worker_config

pytestmark = pytest.mark.timeout(120)

RIGA = ZoneInfo("Europe/Riga")
OCTOBER = date(2026, 10, 1)
SEPTEMBER = date(2026, 9, 1)
NO_DELAY = timedelta(0)
OCT_END = utc(2026, 10, 31, 22)  # 2026-11-01 00:00 EET: October's boundary
NOW = utc(2026, 11, 20, 12)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def conn(db: str) -> Iterable[Conn]:
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


def register(conn: Conn, meter_id: str, **columns: object) -> None:
    values = {"status": "active", "medium": "water", **columns}
    names = ", ".join(["meter_id", *values])
    marks = ", ".join(["%s"] * (len(values) + 1))
    conn.execute(
        f"INSERT INTO meters ({names}) VALUES ({marks})".encode(), [meter_id, *values.values()]
    )


def store(conn: Conn, meter_id: str, readings: Iterable[Reading], source: str = "wmbus") -> None:
    """Readings as the worker stores them (a msg_id each)."""
    rows = [
        (meter_id, r.storage, r.measured_at, r.value, source,
         f"gw-01:{meter_id}:{r.storage}:{r.measured_at.isoformat()}")
        for r in readings
    ]  # fmt: skip
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (meter_id, quantity, storage, tariff, subunit, function,"
            " measured_at, value, unit, received_at, gateway_id, source, msg_id)"
            " VALUES (%s, 'volume', %s, 0, 0, 'instantaneous', %s, %s, 'm3', now(), 'gw-01',"
            " %s, %s)",
            rows,
        )


def at_values(*pairs: tuple[datetime, str]) -> list[Reading]:
    return [Reading(at, Decimal(value)) for at, value in pairs]


def submit_manual(conn: Conn, meter_id: str, at: datetime, value: str) -> int:
    """A customer's reading stored as POST /v1/readings/manual stores it (api/manual.py): a
    `readings` row of source manual and its manual_submissions provenance."""
    conn.execute(
        "INSERT INTO readings (meter_id, quantity, storage, tariff, subunit, function,"
        " measured_at, value, unit, received_at, source)"
        " VALUES (%s, 'volume', 0, 0, 0, 'instantaneous', %s, %s, 'm3', now(), 'manual')",
        (meter_id, at, Decimal(value)),
    )
    row = conn.execute(
        "INSERT INTO manual_submissions (meter_id, measured_at, value, unit, reader, confirmed,"
        " submitted_by) VALUES (%s, %s, %s, 'm3', 'customer', false, 'portal') RETURNING id",
        (meter_id, at, Decimal(value)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def status(conn: Conn, meter_id: str, at: datetime, *flags: str) -> None:
    conn.execute(
        "INSERT INTO meter_status (msg_id, meter_id, reported_at, flags, raw, gateway_id)"
        " VALUES (%s, %s, %s, %s, 0, 'gw-01')",
        (f"gw-01:{meter_id}:{at.isoformat()}", meter_id, at, list(flags)),
    )


def run(conn: Conn, **options: Any) -> EngineReport:
    report = run_engines(conn, now=options.pop("now", NOW), zone=RIGA, **options)
    assert report.failed == ()
    return report


def monthly(conn: Conn, meter_id: str, period: date = OCTOBER) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT * FROM monthly_readings WHERE meter_id = %s AND period = %s", (meter_id, period)
    ).fetchone()


def alerts(conn: Conn, meter_id: str) -> list[tuple[str, str, datetime, datetime | None]]:
    rows = conn.execute(
        "SELECT kind, rule, opened_at, closed_at FROM alerts WHERE meter_id = %s"
        " ORDER BY opened_at, id",
        (meter_id,),
    )
    return [(k, r, o, c) for k, r, o, c in rows]


def snapshot(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the engines write."""
    queries = {
        "monthly": "SELECT * FROM monthly_readings ORDER BY meter_id, period",
        "revisions": "SELECT * FROM monthly_reading_revisions ORDER BY meter_id, period, revision",
        "alerts": "SELECT * FROM alerts ORDER BY id",
        "marks": "SELECT meter_id, measured_at FROM readings WHERE implausible ORDER BY 1, 2",
        "meters": "SELECT meter_id, next_verification_due FROM meters ORDER BY meter_id",
        "replacements": "SELECT * FROM meter_replacements ORDER BY id",
    }
    return {name: list(conn.execute(query.encode())) for name, query in queries.items()}


def readings_of(evidence: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    return [(e["role"], e["measured_at"], e["value"], e["ref"]) for e in evidence["readings"]]


# --- DESIGN.md section 5: the methods, in order of trust --------------------------------------


def test_a_boundary_in_a_data_gap_is_interpolated(conn: Conn) -> None:
    register(conn, "M-GAP")
    # 100 l/h from 20 October (100.000) to 30 October 12:00Z (125.200), then nothing until
    # 2 November 12:00Z (132.400, 72 h later): the boundary is 34 h into the gap, 125.2 + 3.4.
    store(conn, "M-GAP", series(utc(2026, 10, 20), utc(2026, 10, 30, 12), 6 * HOUR, 100))
    store(conn, "M-GAP", at_values((utc(2026, 11, 2, 12), "132.400")))
    report = run(conn, meter_ids=["M-GAP"], periods=[OCTOBER])
    assert (report.meters, report.monthly_new) == (1, 1)
    row = monthly(conn, "M-GAP")
    assert row is not None
    assert (row["method"], row["value"], row["unit"]) == ("interpolated", Decimal("128.600"), "m3")
    assert readings_of(row["evidence"]) == [
        ("before", "2026-10-30T12:00:00+00:00", "125.200",
         "gw-01:M-GAP:0:2026-10-30T12:00:00+00:00"),
        ("after", "2026-11-02T12:00:00+00:00", "132.400",
         "gw-01:M-GAP:0:2026-11-02T12:00:00+00:00"),
    ]  # fmt: skip
    assert row["computed_at"] == NOW


def test_a_register_reading_is_the_determinant(conn: Conn) -> None:
    register(conn, "M-REG")
    store(
        conn, "M-REG", at_values((utc(2026, 10, 31, 20), "50.000"), (utc(2026, 11, 1, 2), "50.400"))
    )
    # The meter's month-end register, dated 1 November (placed at that date's UTC midnight).
    store(conn, "M-REG", [Reading(utc(2026, 11, 1), Decimal("50.123"), storage=1)])
    run(conn, meter_ids=["M-REG"], periods=[OCTOBER])
    row = monthly(conn, "M-REG")
    assert row is not None
    assert (row["method"], row["value"], row["revision"]) == ("register", Decimal("50.123"), 1)
    assert row["boundary"] == OCT_END
    (evidence,) = row["evidence"]["readings"]
    assert (evidence["role"], evidence["storage"], evidence["source"]) == ("register", 1, "wmbus")
    assert evidence["ref"] == f"gw-01:M-REG:1:{utc(2026, 11, 1).isoformat()}"


def test_a_reading_at_the_boundary_is_actual(conn: Conn) -> None:
    register(conn, "M-ACT")
    # 30 l/h from 31 October 18:00Z (200.000): 200.120 at the boundary itself.
    store(
        conn,
        "M-ACT",
        series(utc(2026, 10, 31, 18), utc(2026, 11, 1, 2), HOUR, 30, first=Decimal("200.000")),
    )
    run(conn, meter_ids=["M-ACT"], periods=[OCTOBER])
    row = monthly(conn, "M-ACT")
    assert row is not None
    assert (row["method"], row["value"]) == ("actual", Decimal("200.120"))
    assert readings_of(row["evidence"]) == [
        ("reading", OCT_END.isoformat(), "200.120", f"gw-01:M-ACT:0:{OCT_END.isoformat()}")
    ]


def daily(start: datetime, end: datetime, first: str = "100.000") -> list[Reading]:
    """A reading at every UTC midnight from `start` to `end`, 1 m3 a day."""
    return [Reading(start + n * DAY, Decimal(first) + n) for n in range((end - start) // DAY + 1)]


def test_a_customer_reading_on_the_26th_is_moved_to_the_boundary(conn: Conn) -> None:
    register(conn, "M-CUST")
    # The meter read itself daily until 10 October (170.000, 1 m3 a day since 1 August), then
    # nothing; the customer read 186.000 at 12:00 local on 26 October, 5.5 days before the
    # boundary: 186 + 5.5 at the last 90 days' rate.
    store(conn, "M-CUST", daily(utc(2026, 8, 1), utc(2026, 10, 10)))
    submission = submit_manual(conn, "M-CUST", utc(2026, 10, 26, 10), "186.000")
    run(conn, meter_ids=["M-CUST"], periods=[OCTOBER])
    row = monthly(conn, "M-CUST")
    assert row is not None
    assert (row["method"], row["value"]) == ("customer", Decimal("191.500"))
    assert readings_of(row["evidence"]) == [
        ("customer", "2026-10-26T10:00:00+00:00", "186.000", submission),
        ("bound", "2026-10-10T00:00:00+00:00", "170.000",
         "gw-01:M-CUST:0:2026-10-10T00:00:00+00:00"),
    ]  # fmt: skip
    (rate,) = row["evidence"]["rates"]
    assert (rate["basis"], rate["per_day"]) == ("last_90_days", "1.000000")


def build_estimated(conn: Conn) -> None:
    register(conn, "M-EST")
    # Daily readings until 20 October 00:00Z (180.000), then silence: 11 days 22 hours at
    # 1 m3 a day to the boundary.
    store(conn, "M-EST", daily(utc(2026, 8, 1), utc(2026, 10, 20)))


def test_an_estimated_month_is_revised_when_a_better_reading_comes(conn: Conn) -> None:
    build_estimated(conn)
    run(conn, meter_ids=["M-EST"], periods=[OCTOBER])
    row = monthly(conn, "M-EST")
    assert row is not None
    assert (row["method"], row["value"], row["revision"]) == ("estimated", Decimal("191.917"), 1)
    assert readings_of(row["evidence"])[0][:3] == ("anchor", "2026-10-20T00:00:00+00:00", "180.000")
    # The gateway's spool brings readings either side of the boundary: interpolation is more
    # trusted, so it becomes revision 2 and the estimate stays in the history.
    store(
        conn, "M-EST", at_values((utc(2026, 10, 31, 12), "191.500"), (utc(2026, 11, 2), "193.000"))
    )
    report = run(conn, meter_ids=["M-EST"], periods=[OCTOBER])
    assert (report.monthly_new, report.monthly_revised) == (0, 1)
    row = monthly(conn, "M-EST")
    assert row is not None
    assert (row["method"], row["value"], row["revision"]) == ("interpolated", Decimal("191.917"), 2)
    history = conn.execute(
        "SELECT revision, method FROM monthly_reading_revisions WHERE meter_id = 'M-EST'"
        " ORDER BY revision"
    ).fetchall()
    assert history == [(1, "estimated"), (2, "interpolated")]
    again = run(conn, meter_ids=["M-EST"], periods=[OCTOBER])
    assert (again.monthly_revised, again.monthly_kept) == (0, 1)


def build_replacement(conn: Conn) -> None:
    # Meter A (1 m3 a day since 1 September, 500.000) is swapped for B on 15 October at 06:00Z:
    # A's final index 544.250, B's start 0.010; B reads daily from 16 October.
    register(conn, "M-OLD", removed_on=date(2026, 10, 15), premise="flat 7")
    register(conn, "M-NEW", installed_on=date(2026, 10, 15), premise="flat 7")
    store(conn, "M-OLD", daily(utc(2026, 9, 1), utc(2026, 10, 15), "500.000"))
    conn.execute(
        "INSERT INTO meter_replacements (replaced_at, old_meter_id, old_final, new_meter_id,"
        " new_start) VALUES (%s, 'M-OLD', 544.250, 'M-NEW', 0.010)",
        (utc(2026, 10, 15, 6),),
    )
    store(conn, "M-NEW", daily(utc(2026, 10, 16), utc(2026, 11, 10), "0.760"))


def test_a_meter_replaced_mid_month_is_billed_across_the_swap(conn: Conn) -> None:
    build_replacement(conn)
    run(conn, meter_ids=["M-OLD", "M-NEW"])
    methods = dict(
        conn.execute("SELECT meter_id || ' ' || period, method FROM monthly_readings").fetchall()
    )
    # The old meter closes September and has no October value (it left before the boundary);
    # the new one starts with October.
    assert methods == {
        "M-OLD 2026-08-01": "estimated",
        "M-OLD 2026-09-01": "interpolated",
        "M-NEW 2026-10-01": "interpolated",
    }
    old, new = monthly(conn, "M-OLD", SEPTEMBER), monthly(conn, "M-NEW")
    assert old is not None and new is not None
    assert (old["value"], new["value"]) == (Decimal("529.875"), Decimal("16.677"))
    replacements = conn.execute(
        "SELECT replaced_at, old_meter_id, old_final, new_meter_id, new_start FROM"
        " meter_replacements"
    ).fetchall()
    swap = replacements[0]
    used = consumption(as_result(old), as_result(new), [replacement_of(swap)])
    # 544.250 - 529.875 on the old meter, 16.677 - 0.010 on the new one.
    assert used.parts == (Decimal("14.375"), Decimal("16.667"))
    assert (used.volume, used.clamped) == (Decimal("31.042"), False)


def as_result(row: dict[str, Any]) -> MonthlyResult:
    return MonthlyResult.from_row(
        meter_id=row["meter_id"], period=row["period"], boundary=row["boundary"],
        value=row["value"], unit=row["unit"], method=row["method"], evidence=row["evidence"],
    )  # fmt: skip


def replacement_of(row: tuple[Any, ...]) -> Any:
    from ingest.series import Replacement

    return Replacement(*row)


def build_restart(conn: Conn) -> None:
    register(conn, "M-RST")
    # 1 m3 a day from 800.000 on 1 October; on 21 October the index restarts at 0.500 (new
    # electronics) and goes on rising.
    store(conn, "M-RST", daily(utc(2026, 10, 1), utc(2026, 10, 20), "800.000"))
    store(conn, "M-RST", daily(utc(2026, 10, 21), utc(2026, 11, 5), "0.500"))


def test_an_index_restart_is_recorded_and_never_billed_negative(conn: Conn) -> None:
    build_restart(conn)
    report = run(conn, meter_ids=["M-RST"])
    assert report.restarts == 1
    (restart,) = conn.execute(
        "SELECT replaced_at, old_meter_id, old_final, new_meter_id, new_start, detected"
        " FROM meter_replacements"
    ).fetchall()
    assert restart == (
        utc(2026, 10, 21),
        "M-RST",
        Decimal("819.000"),
        "M-RST",
        Decimal("0.500"),
        True,
    )
    september, october = monthly(conn, "M-RST", SEPTEMBER), monthly(conn, "M-RST")
    assert september is not None and october is not None
    assert (october["method"], october["value"]) == ("interpolated", Decimal("11.417"))
    used = consumption(as_result(september), as_result(october), [replacement_of(restart[:5])])
    assert used.clamped is False and used.volume > 0
    assert count_marked(conn, "M-RST") == 0


def count_marked(conn: Conn, meter_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM readings WHERE meter_id = %s AND implausible", (meter_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def build_backwards(conn: Conn) -> None:
    register(conn, "M-BACK")
    values = ["100.000", "100.010", "100.020", "99.500", "100.030", "100.040"]
    store(
        conn,
        "M-BACK",
        [Reading(utc(2026, 10, 31, 19) + n * HOUR, Decimal(v)) for n, v in enumerate(values)],
    )


def test_an_index_going_backwards_is_marked_and_not_used(conn: Conn) -> None:
    build_backwards(conn)
    report = run(conn, meter_ids=["M-BACK"], periods=[OCTOBER])
    assert (report.marks, report.alerts_opened) == (1, 1)
    marked = conn.execute(
        "SELECT measured_at, value FROM readings WHERE meter_id = 'M-BACK' AND implausible"
    ).fetchall()
    assert marked == [(OCT_END, Decimal("99.500"))]
    ((kind, rule, opened, closed),) = alerts(conn, "M-BACK")
    assert (kind, rule, opened, closed) == ("implausible_reading", "plausibility", OCT_END, None)
    (evidence,) = (
        conn.execute("SELECT evidence FROM alerts WHERE meter_id = 'M-BACK'").fetchone() or ()
    )
    assert (evidence["reason"], evidence["readings_marked"]) == ("backwards", 1)
    # The reading at the boundary is the bad one: the nearest good ones are an hour either
    # side, and on a tie the earlier counts.
    row = monthly(conn, "M-BACK")
    assert row is not None
    assert (row["method"], row["value"]) == ("actual", Decimal("100.020"))


# --- DESIGN.md section 6: leaks and alarms -----------------------------------------------


def local_hour(t: datetime) -> int:
    return t.astimezone(RIGA).hour


def night_leak(quiet: date | None = None) -> Callable[[datetime], int]:
    """3 l/h from 02:00 to 05:00 local (none on the morning of `quiet`), no flow in the hours
    from 00:00 and from 12:00 (so no day has flow in every hour), 20 l/h otherwise."""

    def flow(t: datetime) -> int:
        hour = local_hour(t)
        if 2 <= hour < 5:
            return 0 if t.astimezone(RIGA).date() == quiet else 3
        return 0 if hour in (0, 12) else 20

    return flow


def build_night_flow(conn: Conn) -> None:
    register(conn, "M-NIGHT")
    store(
        conn,
        "M-NIGHT",
        series(utc(2026, 10, 23, 10), utc(2026, 10, 28, 12), HOUR, night_leak(date(2026, 10, 28))),
    )


def test_night_flow_over_three_nights_with_the_autumn_dst_night_opens_and_a_quiet_night_closes(
    conn: Conn,
) -> None:
    build_night_flow(conn)
    run(conn, meter_ids=["M-NIGHT"], periods=[])
    # Nights of 24, 25 (02:00 EEST to 05:00 EET: four hours) and 26 October; the night of
    # 28 October is quiet.
    assert alerts(conn, "M-NIGHT") == [
        ("night_flow", "night_flow", utc(2026, 10, 26, 3), utc(2026, 10, 28, 3))
    ]
    (evidence,) = (
        conn.execute("SELECT evidence FROM alerts WHERE meter_id = 'M-NIGHT'").fetchone() or ()
    )
    nights = evidence["nights"]
    assert [n["night"] for n in nights] == ["2026-10-24", "2026-10-25", "2026-10-26"]
    assert nights[1]["window"] == ["2026-10-24T23:00:00+00:00", "2026-10-25T03:00:00+00:00"]
    assert nights[1]["lowest_hour"]["litres_per_hour"] == "3.000"
    assert evidence["closed"]["quiet_night"]["night"] == "2026-10-28"


def test_the_spring_dst_night_counts_its_two_hours(conn: Conn) -> None:
    register(conn, "M-SPRING")
    store(conn, "M-SPRING", series(utc(2026, 3, 26, 10), utc(2026, 3, 29, 6), HOUR, night_leak()))
    run(conn, meter_ids=["M-SPRING"], periods=[])
    # 29 March: 02:00 EET is 00:00Z, 05:00 EEST is 02:00Z.
    assert alerts(conn, "M-SPRING") == [("night_flow", "night_flow", utc(2026, 3, 29, 2), None)]
    (evidence,) = (
        conn.execute("SELECT evidence FROM alerts WHERE meter_id = 'M-SPRING'").fetchone() or ()
    )
    assert evidence["nights"][-1]["window"] == [
        "2026-03-29T00:00:00+00:00",
        "2026-03-29T02:00:00+00:00",
    ]


def build_continuous(conn: Conn) -> None:
    register(conn, "M-FLOW")
    # 5 l/h in every hour from 10 October 00:00Z, none in the hour from 11 October 06:00Z.
    store(
        conn,
        "M-FLOW",
        series(
            utc(2026, 10, 10),
            utc(2026, 10, 11, 12),
            HOUR,
            lambda t: 0 if t == utc(2026, 10, 11, 6) else 5,
        ),
    )


def test_flow_in_every_hour_for_24_hours_opens_a_leak_and_a_dry_hour_closes_it(conn: Conn) -> None:
    build_continuous(conn)
    run(conn, meter_ids=["M-FLOW"], periods=[])
    assert alerts(conn, "M-FLOW") == [
        ("leak", "continuous_flow", utc(2026, 10, 11), utc(2026, 10, 11, 7))
    ]


def build_flags(conn: Conn) -> None:
    register(conn, "M-FLAG")
    status(conn, "M-FLAG", utc(2026, 10, 10, 8))
    status(conn, "M-FLAG", utc(2026, 10, 10, 9), "leak", "low_battery")
    status(conn, "M-FLAG", utc(2026, 10, 10, 10), "leak", "low_battery")
    status(conn, "M-FLAG", utc(2026, 10, 10, 11), "low_battery")


def test_a_meter_flag_opens_and_closes_its_alert(conn: Conn) -> None:
    build_flags(conn)
    run(conn, meter_ids=["M-FLAG"])
    assert alerts(conn, "M-FLAG") == [
        ("leak", "flag:leak", utc(2026, 10, 10, 9), utc(2026, 10, 10, 11)),
        ("low_battery", "flag:low_battery", utc(2026, 10, 10, 9), None),
    ]
    # A late telegram from before the last decision changes nothing; a new one without the
    # flag closes the battery alert.
    status(conn, "M-FLAG", utc(2026, 10, 10, 10, 30), "leak")
    assert run(conn, meter_ids=["M-FLAG"]).alerts_opened == 0
    status(conn, "M-FLAG", utc(2026, 10, 10, 12))
    report = run(conn, meter_ids=["M-FLAG"], changed_since={"M-FLAG": utc(2026, 10, 10, 12)})
    assert (report.alerts_opened, report.alerts_closed) == (0, 1)
    assert alerts(conn, "M-FLAG")[1][3] == utc(2026, 10, 10, 12)


# --- DESIGN.md section 7: verification ---------------------------------------------------


def build_verification(conn: Conn) -> None:
    # Latvia: water meters every 4 years, ultrasonic ones every 6 (counted from the date).
    register(conn, "M-DUE", country="LV", kind="mechanical", verified_on=date(2023, 1, 15))
    register(conn, "M-LATE", country="LV", verified_on=date(2022, 6, 1))
    register(conn, "M-SONIC", country="LV", kind="ultrasonic", verified_on=date(2021, 3, 1))
    # Poland, a new meter of marking year 2020 as the registry import stores it (verified_on
    # 1 January of the year, the due date counted from the marking: 1 December 2025).
    register(
        conn,
        "M-PL",
        country="PL",
        verified_on=date(2020, 1, 1),
        next_verification_due=date(2025, 12, 1),
    )


def test_verification_due_in_90_days_and_overdue(conn: Conn) -> None:
    build_verification(conn)
    report = run(conn)
    assert report.due_dates == 3
    dues = dict(conn.execute("SELECT meter_id, next_verification_due FROM meters").fetchall())
    assert dues == {
        "M-DUE": date(2027, 1, 15),
        "M-LATE": date(2026, 6, 1),
        "M-SONIC": date(2027, 3, 1),
        "M-PL": date(2025, 12, 1),
    }
    assert alerts(conn, "M-DUE") == [
        ("verification_due", "verification", local_midnight(date(2026, 10, 17), RIGA), None)
    ]
    assert alerts(conn, "M-LATE") == [
        ("verification_overdue", "verification", local_midnight(date(2026, 6, 1), RIGA), None)
    ]
    assert alerts(conn, "M-SONIC") == []
    assert [a[0] for a in alerts(conn, "M-PL")] == ["verification_overdue"]
    # Two weeks later the ultrasonic meter is within 90 days of 1 March 2027.
    run(conn, meter_ids=["M-SONIC"], now=utc(2026, 12, 5))
    assert alerts(conn, "M-SONIC") == [
        ("verification_due", "verification", local_midnight(date(2026, 12, 1), RIGA), None)
    ]
    # The late meter is verified again: its overdue alert closes and the date moves on.
    conn.execute("UPDATE meters SET verified_on = '2026-11-18' WHERE meter_id = 'M-LATE'")
    report = run(conn, meter_ids=["M-LATE"])
    assert (report.alerts_closed, report.due_dates) == (1, 1)
    assert alerts(conn, "M-LATE")[0][3] == NOW
    assert dues_of(conn, "M-LATE") == date(2030, 11, 18)


def dues_of(conn: Conn, meter_id: str) -> date | None:
    row = conn.execute(
        "SELECT next_verification_due FROM meters WHERE meter_id = %s", (meter_id,)
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


# --- idempotence ----------------------------------------------------------------------------

BUILDERS = (
    build_estimated, build_replacement, build_restart, build_backwards, build_night_flow,
    build_continuous, build_flags, build_verification,
)  # fmt: skip


def test_running_again_changes_nothing_and_the_incremental_run_agrees(conn: Conn) -> None:
    for build in BUILDERS:
        build(conn)
    register(conn, "M-NEIGHBOUR", status="unregistered")
    store(conn, "M-NEIGHBOUR", daily(utc(2026, 10, 1), utc(2026, 11, 5)))
    first = run(conn)
    assert first.monthly_new > 0 and first.alerts_opened > 0 and first.skipped == 0
    assert monthly(conn, "M-NEIGHBOUR") is None  # not run: not a meter of the utility
    before = snapshot(conn)
    again = run(conn)
    assert again.monthly_new == again.monthly_revised == 0
    assert again.alerts_opened == again.alerts_closed == again.marks == 0
    assert again.restarts == again.due_dates == 0
    assert snapshot(conn) == before
    # The worker's kind of run, from a change a week before the end of the data: it looks at
    # less, and decides the same.
    ids = [
        row[0] for row in conn.execute("SELECT meter_id FROM meters WHERE status <> 'unregistered'")
    ]
    incremental = run(conn, changed_since=dict.fromkeys(ids, utc(2026, 10, 28)))
    assert incremental.monthly_revised == incremental.alerts_opened == incremental.marks == 0
    assert snapshot(conn) == before
    assert run(conn, meter_ids=["M-NEIGHBOUR"]).skipped == 1


def test_runs_over_each_new_part_reach_what_one_run_over_all_of_it_does(conn: Conn) -> None:
    # The night-flow meter's readings arrive in two parts, each run from where its part begins.
    night = series(
        utc(2026, 10, 23, 10), utc(2026, 10, 28, 12), HOUR, night_leak(date(2026, 10, 28))
    )
    register(conn, "M-NIGHT")
    split = utc(2026, 10, 25, 12)
    store(conn, "M-NIGHT", [r for r in night if r.measured_at < split])
    run(conn, changed_since={"M-NIGHT": night[0].measured_at})
    assert alerts(conn, "M-NIGHT") == []  # two nights so far
    store(conn, "M-NIGHT", [r for r in night if r.measured_at >= split])
    run(conn, changed_since={"M-NIGHT": split})
    assert alerts(conn, "M-NIGHT") == [
        ("night_flow", "night_flow", utc(2026, 10, 26, 3), utc(2026, 10, 28, 3))
    ]
    # A spike is only seen as one when the next reading comes: then it is marked.
    register(conn, "M-SPIKE")
    spike = at_values(
        (utc(2026, 10, 31, 20), "100.000"),
        (utc(2026, 10, 31, 21), "100.010"),
        (utc(2026, 10, 31, 22), "150.000"),
    )
    store(conn, "M-SPIKE", spike)
    run(conn, changed_since={"M-SPIKE": spike[0].measured_at})
    first = monthly(conn, "M-SPIKE")
    assert first is not None and (first["method"], first["value"]) == ("actual", Decimal("150.000"))
    store(conn, "M-SPIKE", at_values((utc(2026, 10, 31, 23), "100.030")))
    report = run(conn, changed_since={"M-SPIKE": utc(2026, 10, 31, 23)})
    assert (report.marks, report.alerts_opened) == (1, 1)
    assert alerts(conn, "M-SPIKE")[0][:3] == ("implausible_reading", "plausibility", OCT_END)
    # The month's value rested on the spike: it is replaced by the nearest good reading (an
    # hour either side; the earlier on a tie), although that one is further from the boundary.
    revised = monthly(conn, "M-SPIKE")
    assert revised is not None
    assert (revised["method"], revised["value"], revised["revision"]) == (
        "actual",
        Decimal("100.010"),
        2,
    )
    assert report.monthly_revised == 1
    full = snapshot(conn)
    assert run(conn).marks == 0
    assert snapshot(conn) == full


def test_the_sweep_estimates_a_silent_meter_and_raises_verification_alerts(conn: Conn) -> None:
    # Nothing arrives for this meter after 20 October, so no batch ever marks it: the clock
    # alone makes October's estimate due, two days after the boundary.
    build_estimated(conn)
    register(conn, "M-DUE", country="LV", kind="mechanical", verified_on=date(2023, 1, 15))
    early = sweep(conn, now=utc(2026, 11, 2), zone=RIGA)  # October still settling
    assert (early.monthly_new, early.due_dates, early.alerts_opened) == (0, 1, 1)
    assert sweep(conn, now=NOW, zone=RIGA).monthly_new == 1
    row = monthly(conn, "M-EST")
    assert row is not None and row["method"] == "estimated"
    assert [a[0] for a in alerts(conn, "M-DUE")] == ["verification_due"]
    again = sweep(conn, now=NOW, zone=RIGA)
    assert again.monthly_new == again.alerts_opened == again.due_dates == 0


def test_one_worker_sweeps_at_a_time(conn: Conn, db: str) -> None:
    build_estimated(conn)  # October's estimate is due from the sweep alone
    engines = EngineLoop(db, zone=RIGA, clock=lambda: NOW)
    with psycopg.connect(db, autocommit=True) as other_worker:
        other_worker.execute("SELECT pg_advisory_lock(%s)", (SWEEP_LOCK,))
        assert engines.run_sweep()
        assert monthly(conn, "M-EST") is None  # the other worker's sweep does it
    try:
        assert engines.run_sweep()
    finally:
        engines.stop()
    row = monthly(conn, "M-EST")
    assert row is not None and row["method"] == "estimated"
    assert engines.totals.monthly_new == 1
    # The sweep let its lock go: another worker can sweep now.
    with psycopg.connect(db, autocommit=True) as other_worker:
        taken = other_worker.execute("SELECT pg_try_advisory_lock(%s)", (SWEEP_LOCK,)).fetchone()
        assert taken == (True,)


def test_the_engine_loop_counts_a_failure_and_goes_on() -> None:
    engines = EngineLoop("postgresql://postgres@127.0.0.1:1/nowhere", interval_s=0.05)
    engines.start()
    try:
        wait_until(lambda: engines.failures >= 2, 30, "two failed runs")
    finally:
        engines.stop()
    assert engines.runs == 0


def write(db: str, *messages: tuple[str, bytes]) -> None:
    with Store(db) as store:
        store.write([parse_message(topic, payload) for topic, payload in messages])


def marked(conn: Conn) -> dict[str, datetime]:
    return dict(conn.execute("SELECT meter_id, since FROM engine_marks").fetchall())


def test_a_batch_marks_its_meters_from_the_rows_it_adds(conn: Conn, db: str) -> None:
    topic, first = reading(7, meter_id="KAM-00000007", count=2)
    register_at = datetime.fromisoformat(first["readings"][1]["measured_at"])
    write(db, encode((topic, first)))
    assert marked(conn) == {"KAM-00000007": register_at}  # the register is the earliest
    taken = claim(conn, 10, NO_DELAY)
    assert taken.since == {"KAM-00000007": register_at}
    finish(conn, taken)
    assert marked(conn) == {}
    # The next telegram repeats the same month-end register: only its new reading marks.
    _, later = reading(8, meter_id="KAM-00000007", count=2)
    later["readings"][1]["measured_at"] = first["readings"][1]["measured_at"]
    write(db, encode((topic, later)))
    assert marked(conn) == {
        "KAM-00000007": datetime.fromisoformat(later["readings"][0]["measured_at"])
    }
    # A redelivered message adds no row, so no mark either.
    finish(conn, claim(conn, 10, NO_DELAY))
    write(db, encode((topic, later)))
    assert marked(conn) == {}


def test_a_mark_waits_the_delay_and_gathers_what_comes_meanwhile(conn: Conn, db: str) -> None:
    write(db, encode(reading(1, meter_id="KAM-00000001", count=1)))
    assert claim(conn, 10, timedelta(minutes=5)).since == {}  # too fresh: more may come
    conn.execute("UPDATE engine_marks SET first_marked_at = first_marked_at - interval '6 min'")
    write(db, encode(reading(0, meter_id="KAM-00000001", count=1)))  # a minute older
    taken = claim(conn, 10, timedelta(minutes=5))
    assert taken.since == {"KAM-00000001": BASE}  # one run for both


def test_marks_are_leased_and_a_mark_renewed_during_a_run_stays(conn: Conn, db: str) -> None:
    write(
        db, encode(reading(1, meter_id="KAM-00000001")), encode(reading(2, meter_id="KAM-00000002"))
    )
    taken = claim(conn, 10, NO_DELAY)
    assert set(taken.since) == {"KAM-00000001", "KAM-00000002"}
    assert claim(conn, 10, NO_DELAY).since == {}  # another worker's run finds them taken
    write(db, encode(reading(3, meter_id="KAM-00000001")))  # new rows while the engines run
    finish(conn, taken)
    assert set(marked(conn)) == {"KAM-00000001"}
    again = claim(conn, 10, NO_DELAY)
    assert set(again.since) == {"KAM-00000001"}
    # The worker holding it dies: once the lease is over, another run takes the mark.
    conn.execute("UPDATE engine_marks SET claimed_until = now() - interval '1 second'")
    assert set(claim(conn, 10, NO_DELAY).since) == {"KAM-00000001"}


def test_finishing_a_run_and_a_batch_writer_do_not_deadlock(conn: Conn, db: str) -> None:
    """The run took its marks in `since` order (C before B); a batch upserts them in meter
    order (B, then C). Finishing the run must wait for the batch, not form a cycle with it."""
    upsert = (
        "INSERT INTO engine_marks (meter_id, since) SELECT m, %s::timestamptz"
        f' FROM unnest(%s::text[]) AS m ORDER BY m COLLATE "C" {ON_MARKED}'
    )
    conn.execute(upsert, (BASE, ["KAM-C"]))
    conn.execute(upsert, (BASE + DAY, ["KAM-B"]))
    taken = claim(conn, 10, NO_DELAY)
    assert list(taken.since) == ["KAM-C", "KAM-B"]
    outcome: dict[str, str] = {}

    def finish_run() -> None:
        with psycopg.connect(db, autocommit=True) as other:
            try:
                finish(other, taken)
                outcome["run"] = "finished"
            except psycopg.Error as exc:
                outcome["run"] = repr(exc)

    with psycopg.connect(db) as writer:
        writer.execute(upsert, (BASE, ["KAM-B"]))  # the batch holds B
        finisher = threading.Thread(target=finish_run)
        finisher.start()
        time.sleep(0.3)  # the run now waits for B (or, before the fix, holds C)
        writer.execute(upsert, (BASE, ["KAM-C"]))
        writer.commit()
    finisher.join(30)
    assert outcome == {"run": "finished"}
    # Both marks changed under the run: they stay, free for the next one.
    assert set(marked(conn)) == {"KAM-B", "KAM-C"}
    assert set(claim(conn, 10, NO_DELAY).since) == {"KAM-B", "KAM-C"}


def test_the_engine_loop_runs_what_was_marked_and_removes_the_marks(conn: Conn, db: str) -> None:
    register(conn, "KAM-00000042")
    readings = series(
        utc(2026, 10, 31, 18), utc(2026, 11, 1, 2), HOUR, 30, first=Decimal("300.000")
    )
    write(db, *(
        reading_message("metergate", "KAM-00000042", seq, r, [])
        for seq, r in enumerate(readings)
    ))  # fmt: skip
    engines = EngineLoop(db, zone=RIGA, clock=lambda: NOW, delay_s=0)
    assert engines.run_pending()
    assert engines.totals.meters == 1 and engines.failures == 0
    row = monthly(conn, "KAM-00000042")
    assert row is not None and (row["method"], row["value"]) == ("actual", Decimal("300.120"))
    assert marked(conn) == {}


# --- metergate monthly fill ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-13", "x", "2026-1", "26-10"])
def test_monthly_fill_refuses_a_bad_period(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monthly", "fill", "--period", text, "--database-url", "postgresql://nowhere"])
    assert exit_info.value.code == 2
    assert f"a period is written YYYY-MM (e.g. 2026-10), got {text!r}" in capsys.readouterr().err


def test_monthly_fill_refuses_a_month_not_yet_ended(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monthly", "fill", "--period", "2999-01", "--database-url", db]) == 2
    assert "has not ended yet" in capsys.readouterr().err


def test_monthly_fill_fills_and_a_second_fill_changes_nothing(
    conn: Conn, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build_replacement(conn)
    assert main(["monthly", "fill", "--period", "2026-10", "--database-url", db]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("monthly fill 2026-10: 2 meters")
    assert "1 new" in line and "\n" not in line
    assert monthly(conn, "M-NEW") is not None
    assert main(["monthly", "fill", "--database-url", db, "--timezone", "Europe/Riga"]) == 0
    assert "0 revised" in capsys.readouterr().out
    assert main(["monthly", "fill", "--database-url", db]) == 0
    assert "monthly readings: 0 new, 0 revised" in capsys.readouterr().out


def test_monthly_fill_over_processes_gives_what_one_process_gives(
    conn: Conn, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build_replacement(conn)
    build_estimated(conn)
    build_night_flow(conn)
    assert main(["monthly", "fill", "--jobs", "2", "--database-url", db]) == 0
    line = capsys.readouterr().out
    assert "0 failed" in line and "0 revised" in line
    filled = snapshot(conn)
    assert filled["monthly"] and filled["alerts"]
    assert main(["monthly", "fill", "--database-url", db]) == 0
    assert "monthly readings: 0 new, 0 revised" in capsys.readouterr().out
    assert snapshot(conn) == filled


@pytest.mark.parametrize("jobs", ["0", "x", "-2", "257"])
def test_monthly_fill_refuses_a_bad_number_of_jobs(
    jobs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monthly", "fill", "--jobs", jobs, "--database-url", "postgresql://nowhere"])
    assert exit_info.value.code == 2
    assert "--jobs" in capsys.readouterr().err


# --- the worker runs the engines by itself --------------------------------------------------


def reading_message(
    topic_root: str, meter_id: str, seq: int, reading: Reading, flags: list[str]
) -> tuple[str, bytes]:
    payload = {
        "schema": "reading/1", "gateway_id": "gw-01", "seq": seq, "msg_id": f"gw-01:{seq}",
        "meter_id": meter_id, "manufacturer": meter_id[:3], "medium": "water",
        "protocol": "wmbus", "frame": "2e44", "rssi_dbm": -70, "location": None,
        "received_at": iso(reading.measured_at + timedelta(seconds=3)),
        "status": {"flags": flags, "raw": 4 if flags else 0},
        "readings": [{
            "quantity": "volume", "unit": "m3", "value": str(reading.value), "storage": 0,
            "tariff": 0, "subunit": 0, "function": "instantaneous",
            "measured_at": iso(reading.measured_at),
        }],
    }  # fmt: skip
    return encode((f"{topic_root}/gw-01/{meter_id}/reading", payload))


def test_the_worker_fills_monthly_readings_and_alerts_by_itself(
    conn: Conn, db: str, mqtt_url: str, topic_root: str, publisher: Publisher
) -> None:
    register(conn, "KAM-00000042")
    # Hourly telegrams around October's boundary; three of them carry the meter's leak flag.
    readings = series(
        utc(2026, 10, 31, 18), utc(2026, 11, 1, 2), HOUR, 30, first=Decimal("300.000")
    )
    messages = [
        reading_message(topic_root, "KAM-00000042", seq, r,
                        ["leak"] if 2 <= seq <= 4 else [])
        for seq, r in enumerate(readings)
    ]  # fmt: skip
    with running(
        worker_config(db, mqtt_url, topic_root, engine_interval_s=0.2, engine_delay_s=0)
    ) as worker:
        publisher.publish(messages)
        wait_until(
            lambda: (
                count(db, "SELECT count(*) FROM monthly_readings WHERE period = '2026-10-01'") == 1
                and count(db, "SELECT count(*) FROM alerts WHERE closed_at IS NOT NULL") == 1
            ),
            60,
            "the engines' results",
        )
        assert worker.engines is not None and worker.engines.failures == 0
    row = monthly(conn, "KAM-00000042")
    assert row is not None
    assert (row["method"], row["value"]) == ("actual", Decimal("300.120"))
    assert readings_of(row["evidence"])[0][3] == "gw-01:4"  # the message that brought it
    ((kind, rule, opened, closed),) = alerts(conn, "KAM-00000042")
    assert (kind, rule) == ("leak", "flag:leak")
    assert closed is not None and opened < closed
