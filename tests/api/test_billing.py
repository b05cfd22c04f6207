"""GET /v1/billing/monthly (JSON and CSV, paged) and POST /v1/billing/periods/{p}/export."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.billing_rows import CSV_COLUMNS
from api.params import encode_cursor
from tests.api import seed
from tests.api.conftest import auth
from tests.api.seed import utc
from tests.api.server import Server

pytestmark = pytest.mark.timeout(120)

SEP, OCT = date(2026, 9, 1), date(2026, 10, 1)
A, B, OLD, NEW, E, G = (f"KAM-1000000{n}" for n in (1, 2, 3, 4, 5, 6))


@pytest.fixture(scope="module", autouse=True)
def _data(db: psycopg.Connection[Any]) -> None:
    # A: two ordinary months and a leak during October.
    seed.meter(db, A, customer_ref="C-A", premise="P-A")
    seed.monthly(db, A, SEP, "100.000")
    seed.monthly(db, A, OCT, "107.450", "register")
    seed.alert(db, A, "leak", utc(2026, 10, 3), utc(2026, 10, 4))
    # B: an estimate with no previous month, on a meter overdue for verification.
    seed.meter(db, B, next_verification_due=date(2026, 10, 15))
    seed.monthly(db, B, OCT, "50.000", "estimated")
    # OLD replaced by NEW on 15 October.
    seed.meter(db, OLD, premise="P-R", status="removed", removed_on=date(2026, 10, 15))
    seed.meter(db, NEW, premise="P-R", installed_on=date(2026, 10, 15))
    seed.monthly(db, OLD, SEP, "200.000")
    seed.replacement(db, utc(2026, 10, 15, 10), (OLD, "210.000"), (NEW, "0.010"))
    seed.monthly(db, NEW, OCT, "5.010", "interpolated")
    # E: active, no monthly reading yet; an unregistered meter is not billed.
    seed.meter(db, E)
    seed.meter(db, "KAM-10000007", status="unregistered")
    # G: its index restarted in place on 20 October.
    seed.meter(db, G)
    seed.monthly(db, G, SEP, "900.000")
    seed.replacement(db, utc(2026, 10, 20), (G, "950.000"), (G, "0.000"))
    seed.monthly(db, G, OCT, "3.000")
    # A night-flow alert of another month does not flag October.
    seed.alert(db, G, "night_flow", utc(2026, 8, 1), utc(2026, 8, 5))


def _get(client: TestClient, token: str, **params: Any) -> Any:
    response = client.get("/v1/billing/monthly", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    return response


def _rows(client: TestClient, token: str, period: str = "2026-10") -> dict[str, Any]:
    page = _get(client, token, period=period).json()
    return {row["meter_id"]: row for row in page["items"]}


def test_one_row_per_billed_meter_with_its_provenance(
    client: TestClient, tokens: dict[str, str]
) -> None:
    page = _get(client, tokens["billing:read"], period="2026-10").json()
    assert page["period"] == "2026-10"
    assert page["boundary"] == "2026-10-31T22:00:00+00:00"  # 00:00 1 Nov in Riga (EET)
    assert page["zone"] == "Europe/Riga" and page["next_cursor"] is None
    rows = {row["meter_id"]: row for row in page["items"]}
    assert list(rows) == [A, B, NEW, E, G]
    a = rows[A]
    assert (a["value"], a["unit"], a["method"], a["revision"]) == ("107.450", "m3", "register", 1)
    assert a["consumption"] == "7.450"
    assert (a["customer_ref"], a["premise"], a["serial"]) == ("C-A", "P-A", "10000001")
    assert a["flags"] == {
        "leak": True, "verification_overdue": False, "estimated": False,
        "meter_replaced": False, "consumption_clamped": False, "missing": False,
    }  # fmt: skip
    b = rows[B]
    assert b["consumption"] is None
    assert b["flags"]["estimated"] and b["flags"]["verification_overdue"]
    assert not b["flags"]["leak"]
    new = rows[NEW]
    assert new["consumption"] == "15.000"  # 10 m3 on the old meter, 5 on the new one
    assert new["flags"]["meter_replaced"]
    assert rows[E]["value"] is None and rows[E]["flags"]["missing"]
    g = rows[G]
    assert g["consumption"] == "53.000" and g["flags"]["meter_replaced"]
    assert not g["flags"]["leak"]


def test_pages_follow_the_cursor_and_stay_put(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    token = tokens["billing:read"]
    first = _get(client, token, period="2026-10", limit=2).json()
    assert [r["meter_id"] for r in first["items"]] == [A, B]
    # A meter that sorts before the cursor appears meanwhile: the next page does not move.
    seed.meter(db, "KAM-10000000")
    try:
        second = _get(client, token, period="2026-10", limit=2, cursor=first["next_cursor"])
        assert [r["meter_id"] for r in second.json()["items"]] == [NEW, E]
        third = _get(
            client, token, period="2026-10", limit=2, cursor=second.json()["next_cursor"]
        ).json()
        assert [r["meter_id"] for r in third["items"]] == [G]
        assert third["next_cursor"] is None
    finally:
        db.execute("DELETE FROM meters WHERE meter_id = 'KAM-10000000'")


def test_csv_export(client: TestClient, tokens: dict[str, str]) -> None:
    response = _get(client, tokens["billing:read"], period="2026-10", format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert "billing-2026-10.csv" in response.headers["content-disposition"]
    assert "x-next-cursor" not in response.headers
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert tuple(table[0]) == CSV_COLUMNS
    rows = {row["meter_id"]: row for row in table}
    assert list(rows) == [A, B, NEW, E, G]
    assert rows[A]["value"] == "107.450" and rows[A]["consumption"] == "7.450"
    assert rows[A]["leak"] == "true" and rows[A]["period"] == "2026-10"
    assert rows[NEW]["meter_replaced"] == "true" and rows[NEW]["method"] == "interpolated"
    assert rows[E]["missing"] == "true" and rows[E]["value"] == ""
    assert response.text.endswith("\r\n")
    paged = _get(client, tokens["billing:read"], period="2026-10", format="csv", limit=3)
    assert len(list(csv.DictReader(io.StringIO(paged.text)))) == 3
    after = _get(
        client,
        tokens["billing:read"],
        period="2026-10",
        format="csv",
        cursor=paged.headers["x-next-cursor"],
    )
    assert [r["meter_id"] for r in csv.DictReader(io.StringIO(after.text))] == [E, G]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"period": "2026-13"},
        {"period": "26-10"},
        {"period": "2026-10-01"},
        {"period": "October"},
        {"period": "2026-10", "format": "xml"},
        {"period": "2026-10", "limit": 0},
        {"period": "2026-10", "limit": 10**9},
        {"period": "2026-10", "cursor": "not a cursor"},
        {"period": "2026-10", "cursor": encode_cursor("2026-09-01", A)},
        {"period": "2026-10", "cursor": encode_cursor(1, 2)},
    ],
)
def test_bad_input_is_a_422_that_says_why(
    client: TestClient, tokens: dict[str, str], params: dict[str, Any]
) -> None:
    response = client.get(
        "/v1/billing/monthly", params=params, headers=auth(tokens["billing:read"])
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_export_freezes_the_period(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    token = tokens["billing:read"]
    response = client.post("/v1/billing/periods/2026-10/export", headers=auth(token))
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["newly_exported"], result["previously_exported"]) == (4, 0)
    assert (result["missing"], result["revised_after_export"]) == (1, 0)
    by = db.execute("SELECT exported_by FROM billing_exports WHERE period = %s", (OCT,))
    assert by.fetchall() == [("billing:read",)]

    # The ingest finds a better value for A afterwards: billing keeps what it exported.
    seed.monthly(db, A, OCT, "107.500", "actual", revision=2)
    page = _get(client, token, period="2026-10").json()
    assert page["frozen"]
    a = {row["meter_id"]: row for row in page["items"]}[A]
    assert (a["value"], a["revision"], a["method"]) == ("107.450", 1, "register")
    assert a["exported_at"] == result["exported_at"].replace("Z", "+00:00")
    assert [(r["revision"], r["value"], r["method"]) for r in a["later_revisions"]] == [
        (2, "107.500", "actual")
    ]
    table = _get(client, token, period="2026-10", format="csv").text
    row = next(r for r in csv.DictReader(io.StringIO(table)) if r["meter_id"] == A)
    assert (row["value"], row["later_revision"], row["later_value"]) == ("107.450", "2", "107.500")

    # Exporting again freezes only what had no value: the meter that got its first one.
    seed.monthly(db, E, OCT, "1.000", "estimated")
    again = client.post("/v1/billing/periods/2026-10/export", headers=auth(token)).json()
    assert (again["newly_exported"], again["previously_exported"]) == (1, 4)
    assert (again["revised_after_export"], again["missing"]) == (1, 0)
    assert _rows(client, token)[A]["value"] == "107.450"


def test_export_refuses_a_period_that_has_not_ended(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = client.post(
        "/v1/billing/periods/2099-01/export", headers=auth(tokens["billing:read"])
    )
    assert response.status_code == 409
    assert "2099-01 ends at 2099-02-01T00:00:00+02:00" in response.json()["detail"]
    for bad in ("2026-1", "2026-00", "x"):
        response = client.post(
            f"/v1/billing/periods/{bad}/export", headers=auth(tokens["billing:read"])
        )
        assert response.status_code == 422


def test_a_period_without_readings_lists_the_active_meters(
    client: TestClient, tokens: dict[str, str]
) -> None:
    rows = _rows(client, tokens["billing:read"], "2026-08")
    # NEW came in October, after OLD; every meter there in August is listed, as missing.
    assert list(rows) == [A, B, OLD, E, G]
    assert all(row["flags"]["missing"] for row in rows.values())


def test_the_export_is_streamed_over_a_real_socket(server: Server, tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url) as http, http.stream(
        "GET", "/v1/billing/monthly", params={"period": "2026-10", "format": "csv"},
        headers=auth(tokens["billing:read"]),
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        lines = b"".join(response.iter_bytes()).decode().splitlines()
    assert lines[0].startswith("meter_id,serial,") and len(lines) == 6
