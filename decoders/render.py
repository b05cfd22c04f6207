"""Telegrams as the JSON objects of DESIGN.md section 2 ("Decoded telegram as JSON")."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from decoders.telegram import DataRecord, RecordSpec, RecordValue, Telegram
from metergate.errors import DecodeError


def value_text(value: RecordValue) -> str | None:
    """Decimals as plain decimal strings (never exponent notation), dates in ISO 8601."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    return value


def _spec_fields(spec: RecordSpec) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "dif": spec.dif.hex(),
        "vif": spec.vif.hex(),
        "function": spec.function,
        "storage": spec.storage,
        "tariff": spec.tariff,
        "subunit": spec.subunit,
        "quantity": spec.quantity,
        "unit": spec.unit,
    }
    if spec.name:
        fields["name"] = spec.name
    if spec.error_code is not None:
        fields["error_code"] = spec.error_code
    return fields


# Keyed by identity: specs come from cached layouts, so the same object recurs, and hashing a
# spec's thirteen fields per record would cost more than the lookup saves. The entry keeps the
# spec alive, so its id cannot be reused while it is here.
_SPEC_MEMO: dict[int, tuple[RecordSpec, dict[str, Any]]] = {}


def record_json(record: DataRecord) -> dict[str, Any]:
    spec = record.spec
    entry = _SPEC_MEMO.get(id(spec))
    if entry is None or entry[0] is not spec:
        if len(_SPEC_MEMO) > 4096:
            _SPEC_MEMO.clear()
        entry = _SPEC_MEMO[id(spec)] = (spec, _spec_fields(spec))
    out = dict(entry[1])
    out["value"] = value_text(record.value)
    return out


def telegram_json(telegram: Telegram) -> dict[str, Any]:
    address = telegram.address
    tpl = telegram.tpl
    out: dict[str, Any] = {
        "meter_id": address.meter_id if address else None,
        "manufacturer": address.manufacturer if address else None,
        "id": address.id if address else None,
        "version": address.version if address else None,
        "device_type": address.device_type if address else None,
        "medium": address.medium if address else None,
        "protocol": telegram.protocol,
        "ci": f"{tpl.ci:02x}",
        "access_no": tpl.access_no,
        "security": {
            "mode": telegram.security.mode,
            "encrypted": telegram.security.encrypted,
            "decrypted": telegram.security.decrypted,
        },
        "status": {"raw": telegram.status.raw, "flags": list(telegram.status.flags)},
        "records": [record_json(r) for r in telegram.records],
    }
    if telegram.primary_address is not None:
        out["primary_address"] = telegram.primary_address
    if telegram.profile:
        out["profile"] = telegram.profile
    if telegram.more_records_follow:
        out["more_records_follow"] = True
    if telegram.application_error is not None:
        out["application_error"] = telegram.application_error
    return out


def error_json(error: DecodeError) -> dict[str, Any]:
    return {
        "error": {"type": type(error).__name__, "message": error.message, "offset": error.offset}
    }
