"""POST /v1/readings/manual: plausibility with explanations, confirmation, the reading window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ReadingWindow, Settings
from tests.api import seed
from tests.api.conftest import auth
from tests.api.seed import utc

pytestmark = pytest.mark.timeout(120)

METER, PLAIN, SWAP, GONE = "KAM-30000001", "KAM-30000002", "KAM-30000003", "KAM-30000004"


@pytest.fixture(scope="module", autouse=True)
def _data(db: psycopg.Connection[Any]) -> None:
    # 0.2 m3 a day from 1 August to 1 October (112.200 then), Q3 2.5 m3/h (Q4 3.125).
    for meter, q3 in ((METER, Decimal("2.5")), (PLAIN, None), (SWAP, None)):
        seed.meter(db, meter, q3_m3h=q3)
        day, value = utc(2026, 8, 1), Decimal("100.000")
        points = []
        while day <= utc(2026, 10, 1):
            points.append((day, value))
            day += timedelta(days=1)
            value += Decimal("0.200")
        seed.readings(db, meter, points)
    seed.meter(db, GONE, status="removed", removed_on=date(2026, 9, 1))


def _post(client: TestClient, token: str, **body: Any) -> Any:
    return client.post("/v1/readings/manual", json=body, headers=auth(token))


def _count(db: psycopg.Connection[Any], meter: str) -> tuple[int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM readings WHERE meter_id = %s AND source = 'manual'),"
        " (SELECT count(*) FROM manual_submissions WHERE meter_id = %s)",
        (meter, meter),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_plausible_reading_is_stored(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    token = tokens["readings:write"]
    body = {"meter_id": METER, "value": "112.500", "reader": "customer",
            "measured_at": "2026-10-26T09:00:00Z"}  # fmt: skip
    response = _post(client, token, **body)
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["stored"] and out["warnings"] == [] and out["value"] == "112.500"
    assert out["reading_window"] == {"first_day": 25, "last_day": 28, "inside": True}
    row = db.execute(
        "SELECT value, source, implausible, quantity FROM readings"
        " WHERE meter_id = %s AND measured_at = %s",
        (METER, utc(2026, 10, 26, 9)),
    ).fetchone()
    assert row == (Decimal("112.500"), "manual", False, "volume")
    sub = db.execute(
        "SELECT reader, confirmed, submitted_by, warnings FROM manual_submissions"
        " WHERE meter_id = %s",
        (METER,),
    ).fetchall()
    assert sub == [("customer", False, "readings:write", [])]
    # Marked for the ingest's engines, which put it into October's monthly reading.
    mark = db.execute("SELECT since FROM engine_marks WHERE meter_id = %s", (METER,)).fetchone()
    assert mark == (utc(2026, 10, 26, 9),)
    # The same reading again is no change; another value at the same instant is a conflict.
    again = _post(client, token, **body)
    assert again.status_code == 200 and not again.json()["stored"]
    clash = _post(client, token, **{**body, "value": "112.600"})
    assert clash.status_code == 409 and "112.500" in clash.json()["detail"]


def test_an_index_below_the_last_one_is_explained_then_confirmed(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    token = tokens["readings:write"]
    body = {"meter_id": METER, "value": "100.000", "reader": "customer",
            "measured_at": "2026-10-27T09:00:00Z"}  # fmt: skip
    before = _count(db, METER)
    response = _post(client, token, **body)
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "value"] and detail["type"] == "implausible_reading"
    assert detail["problems"][0]["code"] == "below_last_reading"
    assert (
        "100.000 m3 is lower than the meter's reading of 112.200 m3 on 2026-10-01 03:00"
        in (detail["msg"])
    )
    assert "confirm: true" in detail["msg"]
    assert _count(db, METER) == before  # nothing stored
    confirmed = _post(client, token, **body, confirm=True)
    assert confirmed.status_code == 201
    assert [w["code"] for w in confirmed.json()["warnings"]] == ["below_last_reading"]
    assert _count(db, METER) == (before[0] + 1, before[1] + 1)
    row = db.execute(
        "SELECT confirmed, warnings->0->>'code' FROM manual_submissions"
        " WHERE meter_id = %s AND measured_at = %s",
        (METER, utc(2026, 10, 27, 9)),
    ).fetchone()
    assert row == (True, "below_last_reading")


def test_more_than_usual_and_more_than_the_meter_can_pass(
    client: TestClient, tokens: dict[str, str]
) -> None:
    token = tokens["readings:write"]
    when = "2026-10-25T12:00:00Z"
    usual = _post(client, token, meter_id=METER, value="150", reader="customer", measured_at=when)
    assert usual.status_code == 422
    problem = usual.json()["detail"][0]["problems"][0]
    assert problem["code"] == "above_usual"
    assert "37.800 m3 since the reading of 112.200 m3" in problem["message"]
    fast = _post(client, token, meter_id=METER, value="5000", reader="engineer", measured_at=when)
    assert fast.status_code == 422
    problem = fast.json()["detail"][0]["problems"][0]
    assert problem["code"] == "faster_than_meter"
    assert "at its largest flow" in problem["message"]


def test_a_reading_above_the_meters_own_later_one(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = _post(
        client, tokens["readings:write"], meter_id=PLAIN, value="109.500", reader="engineer",
        measured_at="2026-09-15T12:00:00Z",
    )  # fmt: skip
    assert response.status_code == 422
    assert response.json()["detail"][0]["problems"][0]["code"] == "above_later_reading"


def test_a_declared_replacement(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    response = _post(
        client, tokens["readings:write"], meter_id=SWAP, value="0.500", reader="engineer",
        measured_at="2026-10-10T08:00:00Z", replacement=True,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == []
    row = db.execute(
        "SELECT old_meter_id, old_final, new_meter_id, new_start FROM meter_replacements"
        " WHERE old_meter_id = %s",
        (SWAP,),
    ).fetchone()
    assert row == (SWAP, Decimal("112.200"), SWAP, Decimal("0.500"))


def test_the_reading_window(client: TestClient, tokens: dict[str, str], settings: Settings) -> None:
    token = tokens["readings:write"]
    early = _post(client, token, meter_id=PLAIN, value="114.000", reader="customer",
                  measured_at="2026-10-10T09:00:00Z")  # fmt: skip
    assert early.status_code == 201  # outside the window is a note, not a problem
    out = early.json()
    assert out["reading_window"]["inside"] is False
    assert [w["code"] for w in out["warnings"]] == ["outside_reading_window"]
    engineer = _post(client, token, meter_id=PLAIN, value="114.100", reader="engineer",
                     measured_at="2026-10-11T09:00:00Z")  # fmt: skip
    assert engineer.json()["warnings"] == []
    other = Settings(settings.database_url, reading_window=ReadingWindow(10, 12))
    with TestClient(create_app(other)) as second:
        response = _post(second, token, meter_id=PLAIN, value="114.200", reader="customer",
                         measured_at="2026-10-12T09:00:00Z")  # fmt: skip
    assert response.json()["reading_window"] == {"first_day": 10, "last_day": 12, "inside": True}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"meter_id": "KAM-99999999", "value": "1", "reader": "customer"}, 404),
        ({"meter_id": GONE, "value": "1", "reader": "engineer"}, 422),
        ({"meter_id": METER, "value": "1", "reader": "customer",
          "measured_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, 422),
        ({"meter_id": METER, "value": "1", "reader": "customer",
          "measured_at": "2026-10-26T09:00:00"}, 422),
        ({"meter_id": METER, "value": "-1", "reader": "customer"}, 422),
        ({"meter_id": METER, "value": "abc", "reader": "customer"}, 422),
        ({"meter_id": METER, "value": "NaN", "reader": "customer"}, 422),
        ({"meter_id": METER, "value": "1", "unit": "l", "reader": "customer"}, 422),
        ({"meter_id": METER, "value": "1", "reader": "cat"}, 422),
        ({"meter_id": METER, "value": "1", "reader": "customer", "extra": 1}, 422),
        ({"meter_id": "", "value": "1", "reader": "customer"}, 422),
        ({"value": "1", "reader": "customer"}, 422),
    ],
)  # fmt: skip
def test_bad_input(
    client: TestClient, tokens: dict[str, str], body: dict[str, Any], status: int
) -> None:
    response = client.post("/v1/readings/manual", json=body, headers=auth(tokens["all"]))
    assert response.status_code == status, response.text


def test_malformed_and_huge_bodies(client: TestClient, tokens: dict[str, str]) -> None:
    headers = {**auth(tokens["all"]), "Content-Type": "application/json"}
    response = client.post("/v1/readings/manual", content=b"{not json", headers=headers)
    assert response.status_code == 422
    huge = b'{"meter_id": "' + b"x" * 100_000 + b'"}'
    response = client.post("/v1/readings/manual", content=huge, headers=headers)
    assert response.status_code == 413


def test_counted_in_metrics(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'metergate_api_manual_readings_total{outcome="rejected"}' in text
    assert 'metergate_api_manual_readings_total{outcome="confirmed"} 1.0' in text
