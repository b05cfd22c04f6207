"""/healthz, /metrics, the OpenAPI document, the dashboard's files and the settings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.settings import ReadingWindow, Settings
from metergate.errors import ConfigError
from tests.api.conftest import auth

pytestmark = pytest.mark.timeout(60)


def test_healthz(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["database_time"].endswith("Z")


def test_metrics_count_requests_by_route_template(
    client: TestClient, tokens: dict[str, str]
) -> None:
    client.get("/v1/meters/KAM-12345678", headers=auth(tokens["readings:read"]))
    client.get("/v1/meters/KAM-87654321", headers=auth(tokens["readings:read"]))
    client.get("/no/such/path")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    line = 'metergate_api_requests_total{method="GET",route="/v1/meters/{meter_id}",status="404"}'
    assert f"{line} 2.0" in text
    assert 'route="unmatched",status="404"' in text
    assert "KAM-12345678" not in text  # one series per route, never per meter
    assert "metergate_api_request_duration_seconds_bucket" in text


def test_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "metergate API"
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    monthly = document["paths"]["/v1/billing/monthly"]["get"]
    assert set(monthly["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    body = document["paths"]["/v1/meters/import"]["post"]["requestBody"]
    assert "text/csv" in body["content"]
    assert client.get("/docs").status_code == 200


def test_dashboard_files(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert client.get("/dashboard/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/style.css").status_code == 200
    assert client.get("/dashboard/../api/app.py").status_code == 404


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://x/y",
            "METERGATE_TZ": "Europe/Berlin",
            "METERGATE_READING_WINDOW": "20-23",
            "METERGATE_API_MAX_BODY": "1000",
        }
    )
    assert settings.zone.key == "Europe/Berlin"
    assert settings.reading_window == ReadingWindow(20, 23)
    assert settings.max_body_bytes == 1000 and settings.max_import_bytes == 16 * 1024 * 1024
    defaults = Settings.from_env({"DATABASE_URL": "postgresql://x/y"})
    assert defaults.zone.key == "Europe/Riga" and str(defaults.reading_window) == "25-28"


@pytest.mark.parametrize(
    ("environ", "location"),
    [
        ({}, "DATABASE_URL"),
        ({"DATABASE_URL": " "}, "DATABASE_URL"),
        ({"METERGATE_TZ": "Mars/Olympus"}, "METERGATE_TZ"),
        ({"METERGATE_TZ": "../etc/passwd"}, "METERGATE_TZ"),
        ({"METERGATE_READING_WINDOW": "28-25"}, "METERGATE_READING_WINDOW"),
        ({"METERGATE_READING_WINDOW": "25-31"}, "METERGATE_READING_WINDOW"),
        ({"METERGATE_READING_WINDOW": "last week"}, "METERGATE_READING_WINDOW"),
        ({"METERGATE_API_MAX_BODY": "-5"}, "METERGATE_API_MAX_BODY"),
        ({"METERGATE_API_MAX_IMPORT": "1e6"}, "METERGATE_API_MAX_IMPORT"),
    ],
)
def test_bad_settings(environ: dict[str, str], location: str) -> None:
    base = {} if "DATABASE_URL" in location else {"DATABASE_URL": "postgresql://x/y"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**base, **environ})
    assert caught.value.location == location


def test_unknown_query_parameters_are_refused(client: TestClient, tokens: dict[str, str]) -> None:
    response = client.get(
        "/v1/billing/monthly", params={"period": "2026-10", "forma": "csv"},
        headers=auth(tokens["all"]),
    )  # fmt: skip
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "forma"]
    assert "cursor, format, limit, period" in error["msg"]
    response = client.get("/v1/meters/KAM-12345678?x=1", headers=auth(tokens["all"]))
    assert "no query parameters" in response.json()["detail"][0]["msg"]
