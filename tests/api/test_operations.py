"""GET /v1/alerts and GET /v1/verification/due."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.operations import AlertKind
from ingest.alerts import ALERT_KINDS
from tests.api import seed
from tests.api.conftest import auth
from tests.api.seed import utc

pytestmark = pytest.mark.timeout(120)

TODAY = datetime.now(ZoneInfo("Europe/Riga")).date()


@pytest.fixture(scope="module")
def alert_ids(db: psycopg.Connection[Any]) -> dict[str, int]:
    seed.meter(db, "KAM-40000001", next_verification_due=TODAY - timedelta(days=10))
    seed.meter(db, "KAM-40000002", next_verification_due=TODAY + timedelta(days=30))
    seed.meter(db, "KAM-40000003", next_verification_due=TODAY + timedelta(days=200))
    seed.meter(
        db, "KAM-40000004", next_verification_due=TODAY, status="removed",
        removed_on=TODAY - timedelta(days=1),
    )  # fmt: skip
    seed.meter(db, "KAM-40000005", next_verification_due=TODAY + timedelta(days=30))
    return {
        "leak_closed": seed.alert(db, "KAM-40000001", "leak", utc(2026, 9, 1), utc(2026, 9, 2)),
        "leak_open": seed.alert(db, "KAM-40000001", "leak", utc(2026, 10, 1)),
        "burst": seed.alert(db, "KAM-40000002", "burst", utc(2026, 10, 2)),
        "overdue": seed.alert(
            db, "KAM-40000001", "verification_overdue", utc(2026, 10, 3), rule="verification"
        ),
    }


def _alerts(client: TestClient, token: str, **params: Any) -> Any:
    response = client.get("/v1/alerts", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def test_alerts_filters(
    client: TestClient, tokens: dict[str, str], alert_ids: dict[str, int]
) -> None:
    token = tokens["readings:read"]

    def ids(**params: Any) -> list[int]:
        return [a["id"] for a in _alerts(client, token, **params)["items"]]

    everything = ids()
    assert everything == sorted(alert_ids.values(), reverse=True)  # newest first
    assert ids(open="true") == [alert_ids["overdue"], alert_ids["burst"], alert_ids["leak_open"]]
    assert ids(open="false") == [alert_ids["leak_closed"]]
    assert ids(kind="leak") == [alert_ids["leak_open"], alert_ids["leak_closed"]]
    assert ids(kind="leak", open="true", meter_id="kam-40000001") == [alert_ids["leak_open"]]
    assert ids(kind="dry") == []
    item = _alerts(client, token, kind="verification_overdue")["items"][0]
    assert item["rule"] == "verification" and item["closed_at"] is None
    assert item["evidence"] == {"rule": "verification"}
    first = _alerts(client, token, limit=3)
    assert [a["id"] for a in first["items"]] == everything[:3]
    rest = _alerts(client, token, limit=3, cursor=first["next_cursor"])
    assert [a["id"] for a in rest["items"]] == everything[3:] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "params", [{"kind": "flood"}, {"open": "maybe"}, {"cursor": "abc"}, {"limit": -1}]
)
def test_alerts_bad_input(
    client: TestClient, tokens: dict[str, str], params: dict[str, Any]
) -> None:
    response = client.get("/v1/alerts", params=params, headers=auth(tokens["readings:read"]))
    assert response.status_code == 422


def test_verification_due(
    client: TestClient, tokens: dict[str, str], alert_ids: dict[str, int]
) -> None:
    token = tokens["readings:read"]
    response = client.get("/v1/verification/due", headers=auth(token))
    assert response.status_code == 200
    body = response.json()
    assert body["today"] == TODAY.isoformat() and body["within_days"] == 90
    assert [(m["meter_id"], m["days_left"], m["overdue"]) for m in body["items"]] == [
        ("KAM-40000001", -10, True),
        ("KAM-40000002", 30, False),
        ("KAM-40000005", 30, False),
    ]  # the removed meter is not listed
    wide = client.get(
        "/v1/verification/due", params={"within_days": 365, "limit": 2}, headers=auth(token)
    ).json()
    assert [m["meter_id"] for m in wide["items"]] == ["KAM-40000001", "KAM-40000002"]
    rest = client.get(
        "/v1/verification/due",
        params={"within_days": 365, "limit": 2, "cursor": wide["next_cursor"]},
        headers=auth(token),
    ).json()
    assert [m["meter_id"] for m in rest["items"]] == ["KAM-40000005", "KAM-40000003"]
    for bad in ({"within_days": -1}, {"within_days": "soon"}, {"cursor": "x"}):
        response = client.get("/v1/verification/due", params=bad, headers=auth(token))
        assert response.status_code == 422


def test_the_alert_kinds_are_the_ingests() -> None:
    assert set(get_args(AlertKind)) == ALERT_KINDS
