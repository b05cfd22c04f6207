"""The shapes of requests and answers, as the OpenAPI document shows them.

Values are decimal strings (DESIGN.md section 2: exact, never floats); instants are ISO 8601
with their UTC offset.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeterSummary(_Model):
    meter_id: str
    serial: str | None
    manufacturer: str | None
    medium: str | None
    kind: str | None
    model: str | None
    premise: str | None
    address: str | None
    customer_ref: str | None
    contract_ref: str | None
    status: str
    installed_on: date | None
    removed_on: date | None
    verified_on: date | None
    next_verification_due: date | None


class LastReading(_Model):
    measured_at: datetime
    value: str
    unit: str
    source: str


class Alert(_Model):
    id: int
    meter_id: str
    kind: str
    rule: str | None
    opened_at: datetime
    closed_at: datetime | None
    evidence: dict[str, Any]


class MeterDetail(MeterSummary):
    country: str | None
    meter_class: str | None
    q3_m3h: str | None = Field(description="permanent flow Q3 in m3/h")
    verification_interval_years: int | None
    last_reading: LastReading | None
    open_alerts: list[Alert]


class MeterPage(_Model):
    items: list[MeterSummary]
    next_cursor: str | None


class Reading(_Model):
    measured_at: datetime
    quantity: str
    value: str
    unit: str
    storage: int
    tariff: int
    subunit: int
    function: str
    received_at: datetime
    source: str
    gateway_id: str | None
    implausible: bool


class ReadingPage(_Model):
    meter_id: str
    items: list[Reading]
    next_cursor: str | None


class Bucket(_Model):
    start: datetime = Field(description="local time with its UTC offset")
    end: datetime
    consumption: str | None = Field(description="null where the index is unknown at an edge")


class ConsumptionSeries(_Model):
    meter_id: str
    bucket: Literal["hour", "day", "month"]
    zone: str
    unit: str | None
    buckets: list[Bucket]


class AlertPage(_Model):
    items: list[Alert]
    next_cursor: str | None


class VerificationDue(_Model):
    meter_id: str
    serial: str | None
    premise: str | None
    address: str | None
    medium: str | None
    kind: str | None
    verified_on: date | None
    next_verification_due: date
    days_left: int = Field(description="negative when overdue")
    overdue: bool


class VerificationPage(_Model):
    today: date = Field(description="today in the utility's time zone")
    within_days: int
    items: list[VerificationDue]
    next_cursor: str | None


class BillingFlags(_Model):
    leak: bool
    verification_overdue: bool
    estimated: bool
    meter_replaced: bool
    consumption_clamped: bool = Field(description="a part of the month's volume was negative")
    missing: bool = Field(description="no monthly reading yet")


class LaterRevision(_Model):
    revision: int
    value: str
    unit: str
    method: str
    computed_at: datetime


class BillingRow(_Model):
    meter_id: str
    serial: str | None
    customer_ref: str | None
    contract_ref: str | None
    premise: str | None
    address: str | None
    value: str | None
    unit: str | None
    method: Literal["register", "actual", "interpolated", "customer", "estimated"] | None
    revision: int | None
    boundary: datetime | None
    computed_at: datetime | None
    exported_at: datetime | None
    consumption: str | None
    flags: BillingFlags
    later_revisions: list[LaterRevision] = Field(
        description="revisions written after the exported one; they never replace it"
    )


class BillingPage(_Model):
    period: str
    boundary: datetime
    zone: str
    frozen: bool = Field(description="the period was exported: values are the exported ones")
    next_cursor: str | None
    items: list[BillingRow]


class ExportResult(_Model):
    period: str
    exported_at: datetime
    newly_exported: int
    previously_exported: int
    revised_after_export: int
    missing: int = Field(description="billed meters that have no monthly reading")


class ManualReadingIn(_Model):
    meter_id: str = Field(min_length=1, max_length=64)
    value: Decimal = Field(ge=0, max_digits=20, description="the index the person read")
    unit: Literal["m3"] = "m3"
    measured_at: datetime | None = Field(None, description="default: now")
    reader: Literal["customer", "engineer"]
    replacement: bool = Field(
        False, description="the meter was replaced: the index may be below the last one"
    )
    confirm: bool = Field(False, description="store it even with warnings")


class ManualWarning(_Model):
    code: str
    message: str


class ReadingWindowOut(_Model):
    first_day: int
    last_day: int
    inside: bool


class ManualReadingOut(_Model):
    meter_id: str
    measured_at: datetime
    value: str
    unit: str
    stored: bool
    warnings: list[ManualWarning]
    reading_window: ReadingWindowOut


class RejectionItem(_Model):
    loc: list[str | int]
    msg: str
    type: str
    problems: list[ManualWarning] = Field(default_factory=list)
    reading_window: ReadingWindowOut | None = None


class Rejection(_Model):
    """A 422 of the manual readings: FastAPI's shape, with the plausibility problems."""

    detail: list[RejectionItem]


class RowError(_Model):
    line: int
    message: str


class ImportResult(_Model):
    inserted: int
    updated: int
    rejected: int
    errors: list[RowError]


class KeyIn(_Model):
    key: str = Field(min_length=32, max_length=32, description="AES-128 key, 32 hex digits")


class Health(_Model):
    status: Literal["ok"]
    database: Literal["ok"]
    database_time: datetime
