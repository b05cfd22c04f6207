"""GET /v1/meters, /v1/meters/{id}, its readings and its consumption in local-time buckets,
across both DST changes of 2026 in Riga (29 March: 23 h; 25 October: 25 h)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.consumption import bucket_edges, buckets, index_at
from api.params import encode_cursor
from ingest.series import Reading
from tests.api import seed
from tests.api.conftest import auth
from tests.api.seed import utc

pytestmark = pytest.mark.timeout(120)

RIGA = ZoneInfo("Europe/Riga")
M1, M2, M3 = "KAM-20000001", "KAM-20000002", "ELS-20000003"


@pytest.fixture(scope="module", autouse=True)
def _data(db: psycopg.Connection[Any]) -> None:
    seed.meter(db, M1, premise="P-1", address="Brivibas iela 1", customer_ref="C-100%")
    seed.hourly(db, M1, utc(2026, 3, 27), utc(2026, 3, 31), start="100.000", per_hour="0.010")
    seed.hourly(db, M1, utc(2026, 10, 23), utc(2026, 10, 28), start="200.000", per_hour="0.010")
    seed.readings(db, M1, [(utc(2026, 10, 25, 12), "21.5")], quantity="flow")
    seed.alert(db, M1, "night_flow", utc(2026, 10, 26), rule="night_flow")
    seed.alert(db, M1, "leak", utc(2026, 10, 1), utc(2026, 10, 2))
    seed.meter(
        db,
        M2,
        premise="P-2",
        address="Elizabetes iela 2",
        medium="warm water",
        next_verification_due=datetime.now(RIGA).date(),
    )
    # Six-hourly readings: local midnights fall between them and are interpolated.
    seed.readings(
        db,
        M2,
        [(utc(2026, 10, 24, 18), "10.000"), (utc(2026, 10, 25, 0), "10.060"),
         (utc(2026, 10, 25, 18), "10.240"), (utc(2026, 10, 26, 0), "10.300")],
    )  # fmt: skip
    seed.meter(
        db, M3, premise="P_3", address="Dzirnavu iela 3", status="removed",
        removed_on=date(2026, 1, 1),
    )  # fmt: skip


def _get(client: TestClient, token: str, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def _series(client: TestClient, token: str, meter: str, **params: Any) -> list[dict[str, Any]]:
    body = _get(client, token, f"/v1/meters/{meter}/consumption", **params)
    assert body["zone"] == "Europe/Riga"
    return list(body["buckets"])


def test_days_last_23_and_25_hours_on_the_dst_changes(
    client: TestClient, tokens: dict[str, str]
) -> None:
    token = tokens["readings:read"]
    spring = _series(client, token, M1, bucket="day", **{"from": "2026-03-28", "to": "2026-03-31"})
    assert [(b["start"], b["consumption"]) for b in spring] == [
        ("2026-03-28T00:00:00+02:00", "0.240"),
        ("2026-03-29T00:00:00+02:00", "0.230"),
        ("2026-03-30T00:00:00+03:00", "0.240"),
    ]
    autumn = _series(client, token, M1, bucket="day", **{"from": "2026-10-24", "to": "2026-10-27"})
    assert [(b["start"], b["end"], b["consumption"]) for b in autumn] == [
        ("2026-10-24T00:00:00+03:00", "2026-10-25T00:00:00+03:00", "0.240"),
        ("2026-10-25T00:00:00+03:00", "2026-10-26T00:00:00+02:00", "0.250"),
        ("2026-10-26T00:00:00+02:00", "2026-10-27T00:00:00+02:00", "0.240"),
    ]


def test_hours_are_real_hours_with_their_offsets(
    client: TestClient, tokens: dict[str, str]
) -> None:
    token = tokens["readings:read"]
    spring = _series(client, token, M1, bucket="hour", **{"from": "2026-03-29", "to": "2026-03-30"})
    assert len(spring) == 23
    assert [b["start"][11:] for b in spring[2:4]] == ["02:00:00+02:00", "04:00:00+03:00"]
    assert {b["consumption"] for b in spring} == {"0.010"}
    autumn = _series(client, token, M1, bucket="hour", **{"from": "2026-10-25", "to": "2026-10-26"})
    assert len(autumn) == 25
    assert [b["start"][11:] for b in autumn[2:6]] == [
        "02:00:00+03:00", "03:00:00+03:00", "03:00:00+02:00", "04:00:00+02:00",
    ]  # fmt: skip
    assert {b["consumption"] for b in autumn} == {"0.010"}


def test_interpolated_edges_and_unknown_ones(client: TestClient, tokens: dict[str, str]) -> None:
    token = tokens["readings:read"]
    days = _series(client, token, M2, bucket="day", **{"from": "2026-10-25", "to": "2026-10-26"})
    # Local midnights 21:00 and 22:00 UTC lie between readings rising 0.010 per hour:
    # 10.030 at the first, 10.280 at the second.
    assert [b["consumption"] for b in days] == ["0.250"]
    months = _series(
        client, token, M1, bucket="month", **{"from": "2026-10-10", "to": "2026-11-02"}
    )
    assert [(b["start"], b["consumption"]) for b in months] == [
        ("2026-10-01T00:00:00+03:00", None),  # no reading near 1 October
        ("2026-11-01T00:00:00+02:00", None),
    ]
    week = _series(client, token, M1, bucket="day", **{"from": "2026-10-20", "to": "2026-10-30"})
    assert [b["consumption"] is None for b in week] == [True] * 4 + [False] * 4 + [True] * 2


def test_consumption_pure_parts() -> None:
    before, after = (
        Reading(utc(2026, 1, 1), Decimal("1.000")),
        Reading(utc(2026, 1, 2), Decimal("1.240")),
    )
    assert index_at(utc(2026, 1, 1, 6), before, after) == Fraction(106, 100)
    assert index_at(utc(2026, 1, 1), before, after) == 1
    assert index_at(utc(2026, 1, 1, 6), after, before) is None  # the index fell
    far = Reading(utc(2026, 1, 20), Decimal("5"))
    assert index_at(utc(2026, 1, 5), before, far) is None  # a gap longer than 7 days
    assert index_at(utc(2026, 1, 5), before, None) is None
    edges = bucket_edges(date(2026, 10, 25), date(2026, 10, 26), "hour", RIGA)
    assert len(edges) == 26 and edges[-1] - edges[0] == timedelta(hours=25)
    assert len(bucket_edges(date(2026, 1, 1), date(2027, 1, 1), "month", RIGA)) == 13
    rounded = buckets(edges[:3], [Fraction(1, 3), Fraction(2, 3), None], -3, RIGA)
    assert [b.consumption for b in rounded] == [Decimal("0.334"), None]
    with pytest.raises(ValueError, match="at most"):
        bucket_edges(date(2025, 1, 1), date(2027, 1, 1), "hour", RIGA)
    with pytest.raises(ValueError, match="empty"):
        bucket_edges(date(2026, 1, 2), date(2026, 1, 1), "day", RIGA)


@pytest.mark.parametrize(
    "params",
    [
        {"bucket": "week"},
        {"bucket": "day", "from": "2026-10-10", "to": "2026-10-01"},
        {"bucket": "day", "from": "2026-10-10", "to": "2026-10-10"},
        {"bucket": "hour", "from": "2020-01-01", "to": "2026-01-01"},
        {"bucket": "day", "from": "yesterday"},
        {"bucket": "day", "from": "2026-02-30"},
    ],
)
def test_consumption_bad_input(
    client: TestClient, tokens: dict[str, str], params: dict[str, Any]
) -> None:
    response = client.get(
        f"/v1/meters/{M1}/consumption", params=params, headers=auth(tokens["readings:read"])
    )
    assert response.status_code == 422, response.text


def test_unknown_meters_are_404(client: TestClient, tokens: dict[str, str]) -> None:
    for path in ("", "/readings", "/consumption"):
        response = client.get(f"/v1/meters/KAM-99999999{path}", headers=auth(tokens["all"]))
        assert response.status_code == 404
        assert "KAM-99999999" in response.json()["detail"]


def test_meter_detail(client: TestClient, tokens: dict[str, str]) -> None:
    detail = _get(client, tokens["readings:read"], "/v1/meters/kam-20000001")  # any spelling
    assert detail["meter_id"] == M1 and detail["premise"] == "P-1"
    assert detail["last_reading"] == {
        "measured_at": "2026-10-28T00:00:00Z", "value": "201.200", "unit": "m3", "source": "wmbus",
    }  # fmt: skip
    assert [a["kind"] for a in detail["open_alerts"]] == ["night_flow"]


def test_meter_list_filters_search_and_pages(client: TestClient, tokens: dict[str, str]) -> None:
    token = tokens["readings:read"]

    def ids(**params: Any) -> list[str]:
        return [m["meter_id"] for m in _get(client, token, "/v1/meters", **params)["items"]]

    assert ids() == [M3, M1, M2]
    assert ids(medium="warm water") == [M2]
    assert ids(premise="P-1") == [M1]
    assert ids(status="removed") == [M3]
    assert ids(verification_due_within_days=0) == [M2]
    assert ids(q="brivibas") == [M1]
    assert ids(q="100%") == [M1]  # % is searched for, not a wildcard
    assert ids(q="P_") == [M3]  # and so is _
    assert ids(q="nothing like it") == []
    first = _get(client, token, "/v1/meters", limit=2)
    assert [m["meter_id"] for m in first["items"]] == [M3, M1]
    assert ids(limit=2, cursor=first["next_cursor"]) == [M2]
    for bad in ({"status": "gone"}, {"limit": 0}, {"cursor": "@@"}, {"q": ""},
                {"verification_due_within_days": -1}):  # fmt: skip
        assert client.get("/v1/meters", params=bad, headers=auth(token)).status_code == 422


def test_readings_in_a_range_and_pages(client: TestClient, tokens: dict[str, str]) -> None:
    token = tokens["readings:read"]
    path = f"/v1/meters/{M1}/readings"
    window = {"from": "2026-10-25T10:00:00Z", "to": "2026-10-25T13:00:00+00:00"}
    body = _get(client, token, path, **window)
    assert [(r["measured_at"], r["quantity"], r["value"]) for r in body["items"]] == [
        ("2026-10-25T10:00:00Z", "volume", "200.580"),
        ("2026-10-25T11:00:00Z", "volume", "200.590"),
        ("2026-10-25T12:00:00Z", "flow", "21.5"),
        ("2026-10-25T12:00:00Z", "volume", "200.600"),
    ]
    assert body["next_cursor"] is None
    assert len(_get(client, token, path, quantity="flow", **window)["items"]) == 1
    pages, cursor = [], None
    while True:
        params = {**window, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = _get(client, token, path, **params)
        pages.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [3, 1]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-10-25T10:00:00", "to": "2026-10-25T13:00:00Z"},  # no offset
        {"from": "2026-10-25T13:00:00Z", "to": "2026-10-25T10:00:00Z"},
        {"from": "last tuesday"},
        {"cursor": encode_cursor("x", "volume", 0, 0, 0, "instantaneous")},
        {"cursor": encode_cursor("2026-10-25T10:00:00Z", "volume", "0", 0, 0, "x")},
        {"limit": 10_001},
    ],
)
def test_readings_bad_input(
    client: TestClient, tokens: dict[str, str], params: dict[str, Any]
) -> None:
    response = client.get(
        f"/v1/meters/{M1}/readings", params=params, headers=auth(tokens["readings:read"])
    )
    assert response.status_code == 422, response.text
