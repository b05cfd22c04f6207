"""One billing row per meter and period: what the monthly billing export says, as JSON and CSV.

The value of an exported period is the revision billing exported; later revisions are listed
beside it and never replace it (DESIGN.md section 5). The consumption of the month is the
determinant minus the previous month's, across the meter replacements between the two
boundaries (ingest.monthly_values.consumption), so a new meter is never billed as negative
consumption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from ingest.monthly_values import Consumption, Method, MonthlyResult, consumption
from ingest.series import Replacement

# Alerts that flag a month's consumption as possibly including lost water.
LEAK_KINDS = ("leak", "burst", "night_flow")

CSV_COLUMNS = (
    "meter_id",
    "serial",
    "customer_ref",
    "contract_ref",
    "premise",
    "address",
    "period",
    "boundary",
    "value",
    "unit",
    "method",
    "revision",
    "consumption",
    "leak",
    "verification_overdue",
    "estimated",
    "meter_replaced",
    "consumption_clamped",
    "missing",
    "exported_at",
    "later_revision",
    "later_value",
    "later_method",
)


def _replacement(item: Mapping[str, Any]) -> Replacement:
    return Replacement(
        at=datetime.fromisoformat(str(item["at"])),
        old_meter_id=str(item["old_meter_id"]),
        old_final=Decimal(str(item["old_final"])),
        new_meter_id=str(item["new_meter_id"]),
        new_start=Decimal(str(item["new_start"])),
    )


def _result(
    meter_id: str, period: date, boundary: datetime, *, value: Decimal, method: str, unit: str
) -> MonthlyResult:
    # consumption() reads the meter, boundary and value; the evidence stays in the database.
    return MonthlyResult(meter_id, period, boundary, value, unit, cast(Method, method), ())


def month_consumption(
    row: Mapping[str, Any], period: date, opening: datetime, previous_period: date
) -> Consumption | None:
    """The water used in the month of `row` (a row of BILLING_ROWS), None when a determinant is
    missing at either end or no replacement links the two meters."""
    if row["value"] is None:
        return None
    replacements = [_replacement(item) for item in row["replacements"] or ()]
    start = None
    if row["previous_value"] is not None:
        start = _result(
            row["meter_id"],
            previous_period,
            opening,
            value=row["previous_value"],
            method=row["previous_method"],
            unit=row["unit"],
        )
    else:
        for item in row["replacements"] or ():
            installs = item["new_meter_id"] == row["meter_id"] != item["old_meter_id"]
            if installs and item["old_previous_value"] is not None:
                start = _result(
                    str(item["old_meter_id"]),
                    previous_period,
                    opening,
                    value=Decimal(str(item["old_previous_value"])),
                    method=str(item["old_previous_method"]),
                    unit=row["unit"],
                )
                break
    if start is None:
        return None
    end = _result(
        row["meter_id"],
        period,
        row["boundary"],
        value=row["value"],
        method=row["method"],
        unit=row["unit"],
    )
    try:
        return consumption(start, end, replacements)
    except ValueError:
        return None


def billing_json(
    row: Mapping[str, Any], period: date, opening: datetime, previous_period: date
) -> dict[str, Any]:
    """The JSON object of one row (api.models.BillingRow)."""
    used = month_consumption(row, period, opening, previous_period)
    value = row["value"]
    later: Sequence[Mapping[str, Any]] = row["later_revisions"] or ()
    return {
        "meter_id": row["meter_id"],
        "serial": row["serial"],
        "customer_ref": row["customer_ref"],
        "contract_ref": row["contract_ref"],
        "premise": row["premise"],
        "address": row["address"],
        "value": None if value is None else str(value),
        "unit": row["unit"],
        "method": row["method"],
        "revision": row["revision"],
        "boundary": None if row["boundary"] is None else row["boundary"].isoformat(),
        "computed_at": None if row["computed_at"] is None else row["computed_at"].isoformat(),
        "exported_at": None if row["exported_at"] is None else row["exported_at"].isoformat(),
        "consumption": None if used is None else str(used.volume),
        "flags": {
            "leak": bool(row["leak"]),
            "verification_overdue": bool(row["verification_overdue"]),
            "estimated": row["method"] == "estimated",
            "meter_replaced": bool(row["replacements"]),
            "consumption_clamped": used is not None and used.clamped,
            "missing": value is None,
        },
        "later_revisions": [
            {
                "revision": item["revision"],
                "value": item["value"],
                "unit": item["unit"],
                "method": item["method"],
                "computed_at": item["computed_at"],
            }
            for item in later
        ],
    }


def billing_csv_row(item: Mapping[str, Any], period: date) -> list[str]:
    """The CSV_COLUMNS of one row's JSON object; the last later revision is the one to look at."""
    flags = item["flags"]
    later = item["later_revisions"][-1] if item["later_revisions"] else None
    cells: list[object] = [
        item["meter_id"],
        item["serial"],
        item["customer_ref"],
        item["contract_ref"],
        item["premise"],
        item["address"],
        period.strftime("%Y-%m"),
        item["boundary"],
        item["value"],
        item["unit"],
        item["method"],
        item["revision"],
        item["consumption"],
        *(
            str(flags[name]).lower()
            for name in (
                "leak",
                "verification_overdue",
                "estimated",
                "meter_replaced",
                "consumption_clamped",
                "missing",
            )
        ),
        item["exported_at"],
        None if later is None else later["revision"],
        None if later is None else later["value"],
        None if later is None else later["method"],
    ]
    return ["" if cell is None else str(cell) for cell in cells]
