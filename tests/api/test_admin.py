"""POST /v1/meters/import (CSV) and PUT /v1/meters/{id}/key; the key never comes back."""

from __future__ import annotations

import base64
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import api_routers
from api.meter_import import MeterFileError, parse_meters_csv
from api.settings import Settings
from tests.api import seed
from tests.api.conftest import auth
from tests.api.seed import utc

pytestmark = pytest.mark.timeout(120)

CSV = "text/csv"
KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F0"


def _import(client: TestClient, token: str, text: str | bytes, content_type: str = CSV) -> Any:
    return client.post(
        "/v1/meters/import",
        content=text.encode() if isinstance(text, str) else text,
        headers={**auth(token), "Content-Type": content_type},
    )


def test_parse_reports_bad_rows_with_their_line_numbers() -> None:
    text = (
        "Meter_ID;Premise;Country;Medium;Kind;Marking_Year;Installed_On;Q3_m3h\n"
        "KAM-50000001;P-1;lv;Cold Water;;2023;2024-02-01;2,5\n"
        "not an id!;P-2;LV;water;;;;\n"
        "KAM-50000003;P-3;LV;water;ultrasonic;;2024-13-01;\n"
        '"KAM-50000004";"P-4\nsecond line";LV;water;;1899;;\n'
        "KAM-50000005;P-5;LV;water;;;;0\n"
        "kam-50000001;P-6;;;;;;\n"
        "KAM-50000007;P-7\n"
        "\n"
        "KAM-50000008;P-8;LV;water;ultrasonic;2024;;\n"
    )
    parsed = parse_meters_csv("\ufeff" + text)
    assert [(e.line, e.message.split(":")[0]) for e in parsed.errors] == [
        (3, "meter_id"),
        (4, "installed_on"),
        (5, "marking_year"),
        (7, "q3_m3h"),
        (8, "KAM-50000001 is on line 2 already"),
        (9, "2 cells; the header has 8"),
    ]
    first, last = parsed.rows
    assert (first.line, first.meter_id, first.medium, first.country) == (
        2, "KAM-50000001", "cold water", "LV"
    )  # fmt: skip
    assert first.q3_m3h == Decimal("2.5") and first.installed_on == date(2024, 2, 1)
    # Latvia, water, 4 years from the marking year (earliest day: 1 January 2027).
    assert (first.verification_interval_years, first.next_verification_due) == (4, date(2027, 1, 1))
    assert (last.line, last.verification_interval_years) == (11, 6)  # ultrasonic: 6 years


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("meter_id,premise,colour\nKAM-50000001,P,red\n", "unknown column"),
        ("premise,address\nP,A\n", "meter_id column"),
        ("meter_id,customer_ref\nKAM-50000001,C\n", "premise or an address"),
        ("meter_id,premise,premise\nKAM-50000001,P,P\n", "named twice"),
        ('meter_id,"premise\nKAM-50000001,P\n', "not CSV"),
    ],
)
def test_parse_refuses_unusable_files(text: str, message: str) -> None:
    with pytest.raises(MeterFileError, match=message):
        parse_meters_csv(text)


def marks(db: psycopg.Connection[Any]) -> list[tuple[str, datetime]]:
    return db.execute(
        "SELECT meter_id, since FROM engine_marks WHERE meter_id LIKE 'KAM-5000002%%'"
        " ORDER BY meter_id"
    ).fetchall()


def test_import_upserts_and_lists_bad_rows(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    token = tokens["meters:admin"]
    seed.meter(db, "KAM-50000020", status="unregistered", premise=None, customer_ref=None)
    response = _import(
        client,
        token,
        "meter_id,premise,customer_ref,country,medium,kind,verified_on\n"
        "KAM-50000020,P-20,C-20,DE,water,,2025-03-10\n"
        "KAM-50000021,P-21,C-21,LV,water,,2024-05-02\n"
        "KAM-50000022,P-22,C-22,LV,water,,10.05.2024\n",
    )
    assert response.status_code == 200, response.text
    message = "verified_on: a date is written YYYY-MM-DD, got '10.05.2024'"
    assert response.json() == {
        "inserted": 1, "updated": 1, "rejected": 1, "errors": [{"line": 4, "message": message}],
    }  # fmt: skip
    rows = db.execute(
        "SELECT meter_id, status, premise, customer_ref, next_verification_due, address"
        " FROM meters WHERE meter_id LIKE 'KAM-5000002%%' ORDER BY meter_id"
    ).fetchall()
    assert rows == [
        # Germany counts to the end of the year: 2025 + 6 -> 1 January 2032.
        ("KAM-50000020", "active", "P-20", "C-20", date(2032, 1, 1), "Brivibas iela 1, Riga"),
        ("KAM-50000021", "active", "P-21", "C-21", date(2028, 5, 2), None),
    ]
    marks_after_first = marks(db)
    assert [meter for meter, _ in marks_after_first] == ["KAM-50000020", "KAM-50000021"]
    # A second file with fewer columns leaves the others as they are.
    response = _import(
        client, token, "serial,manufacturer,premise,removed_on\n50000021,kam,P-21b,2025-01-01\n"
    )
    assert response.json()["updated"] == 1
    row = db.execute(
        "SELECT premise, customer_ref, status, next_verification_due FROM meters"
        " WHERE meter_id = 'KAM-50000021'"
    ).fetchone()
    assert row == ("P-21b", "C-21", "removed", date(2028, 5, 2))
    # Both were registered by the first file (one new, one only heard before) and marked for
    # the ingest's engines; the second file changed a registered meter and marked nothing.
    assert marks_after_first == marks(db)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"meter_id,premise\nKAM-50000030,P\n", "application/json", 415),
        (b"meter_id,premise\nKAM-50000030,P\n", "text/plain", 415),
        (b"\xff\xfe\x00garbage", CSV, 422),
        (b"meter_id;colour\nKAM-50000030;red\n", CSV, 422),
        (b"", CSV, 422),
        (b"meter_id,premise\n" + b"KAM-50000030,P\n" * 20_000, CSV, 413),
    ],
)
def test_import_bad_files(
    client: TestClient, tokens: dict[str, str], body: bytes, content_type: str, status: int
) -> None:
    response = _import(client, tokens["meters:admin"], body, content_type)
    assert response.status_code == status, response.text


def test_a_key_is_stored_and_never_comes_back(
    client: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any], settings: Settings
) -> None:
    meter = "KAM-50000040"
    seed.meter(db, meter)
    seed.monthly(db, meter, date(2026, 10, 1), "1.000")
    seed.readings(db, meter, [(utc(2026, 10, 5), "0.900")])
    seed.alert(db, meter, "tamper", utc(2026, 10, 6))
    response = client.put(
        f"/v1/meters/{meter.lower()}/key", json={"key": KEY}, headers=auth(tokens["meters:admin"])
    )
    assert response.status_code == 204 and response.content == b""
    stored = db.execute("SELECT key FROM meter_keys WHERE meter_id = %s", (meter,)).fetchone()
    assert stored is not None and bytes(stored[0]) == bytes.fromhex(KEY)
    key_bytes = bytes.fromhex(KEY)
    forms = {KEY.lower(), KEY.upper(), base64.b64encode(key_bytes).decode(),
             base64.urlsafe_b64encode(key_bytes).decode().rstrip("=")}  # fmt: skip
    answers = []
    for router in api_routers(settings):
        for route in router.routes:
            if "GET" not in getattr(route, "methods", ()):
                continue
            path = getattr(route, "path", "").replace("{meter_id}", meter)
            params = {"period": "2026-10"} if "billing" in path else {}
            answer = client.get(path, params=params, headers=auth(tokens["all"]))
            assert answer.status_code == 200, path
            answers.append(answer.text)
    answers.append(client.get("/v1/billing/monthly?period=2026-10&format=csv",
                              headers=auth(tokens["all"])).text)  # fmt: skip
    answers.append(client.get("/metrics").text)
    assert len(answers) >= 9
    for text in answers:
        for form in forms:
            assert form not in text


@pytest.mark.parametrize(
    ("meter", "body", "status"),
    [
        ("KAM-50000040", {"key": KEY[:-1] + "G"}, 422),
        ("KAM-50000040", {"key": KEY[:20]}, 422),
        ("KAM-50000040", {"key": KEY + "00"}, 422),
        ("KAM-50000040", {"key": 12345}, 422),
        ("KAM-50000040", {}, 422),
        ("KAM-99999999", {"key": KEY}, 404),
        ("modbus-7", {"key": KEY}, 422),
    ],
)
def test_bad_keys_are_refused_without_repeating_them(
    client: TestClient, tokens: dict[str, str], meter: str, body: dict[str, Any], status: int
) -> None:
    response = client.put(
        f"/v1/meters/{meter}/key", json=body, headers=auth(tokens["meters:admin"])
    )
    assert response.status_code == status, response.text
    if "key" in body:
        assert str(body["key"])[:16] not in response.text
