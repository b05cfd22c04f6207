"""MQTT messages for the ingest's tests: `reading/1` and `raw/1` as DESIGN.md section 3 shows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

BASE = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)

Row = tuple[str, str, int, int, int, str, datetime, Decimal]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def reading(
    seq: int,
    *,
    topic_root: str = "metergate",
    gateway_id: str = "gw-01",
    meter_id: str | None = None,
    count: int = 2,
) -> tuple[str, dict[str, Any]]:
    """Message `seq` of a gateway: `count` values (a volume and stored registers), each with its
    own exact decimal, none shared with another seq."""
    meter_id = meter_id or f"KAM-{seq % 50:08d}"
    measured_at = BASE + timedelta(minutes=seq)
    payload = {
        "schema": "reading/1",
        "gateway_id": gateway_id,
        "seq": seq,
        "msg_id": f"{gateway_id}:{seq}",
        "meter_id": meter_id,
        "manufacturer": meter_id[:3],
        "medium": "water",
        "protocol": "wmbus",
        "frame": "2e44",
        "rssi_dbm": -71,
        "location": None,
        "received_at": iso(measured_at + timedelta(seconds=3)),
        "status": {"flags": ["leak"] if seq % 7 == 0 else [], "raw": 4 if seq % 7 == 0 else 0},
        "readings": [
            {
                "quantity": "volume",
                "unit": "m3",
                "value": f"{seq}.{storage}{seq % 1000:03d}0",
                "storage": storage,
                "tariff": 0,
                "subunit": 0,
                "function": "instantaneous",
                "measured_at": iso(measured_at - timedelta(days=storage)),
            }
            for storage in range(count)
        ],
    }
    return f"{topic_root}/{gateway_id}/{meter_id}/reading", payload


def raw(
    seq: int, *, topic_root: str = "metergate", gateway_id: str = "gw-01", meter_id: str | None
) -> tuple[str, dict[str, Any]]:
    payload = {
        "schema": "raw/1",
        "gateway_id": gateway_id,
        "seq": seq,
        "msg_id": f"{gateway_id}:{seq}",
        "meter_id": meter_id,
        "frame": "2E442D2C998734761B16",
        "error": {"type": "MissingKeyError", "message": "no key for KAM-99873476", "offset": 15},
        "received_at": iso(BASE + timedelta(minutes=seq)),
        "rssi_dbm": -80,
        "location": {"lat": 56.95, "lon": 24.1},
    }
    return f"{topic_root}/{gateway_id}/{meter_id or 'unknown'}/raw", payload


def encode(message: tuple[str, dict[str, Any]]) -> tuple[str, bytes]:
    topic, payload = message
    return topic, json.dumps(payload).encode()


def rows_of(messages: Iterable[tuple[str, dict[str, Any]]]) -> set[Row]:
    """The readings rows the messages must produce, by key and exact value."""
    out = set()
    for _topic, payload in messages:
        for value in payload["readings"]:
            out.add(
                (
                    payload["meter_id"],
                    value["quantity"],
                    value["storage"],
                    value["tariff"],
                    value["subunit"],
                    value["function"],
                    datetime.fromisoformat(value["measured_at"]),
                    Decimal(value["value"]),
                )
            )
    return out
