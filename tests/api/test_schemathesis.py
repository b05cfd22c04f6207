"""schemathesis against the app's own OpenAPI document, with a token of every scope: whatever
the schema allows (and some of what it does not), no answer is a server error, and every answer
matches what the document says of it."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from api.settings import Settings
from tests.api import seed
from tests.api.conftest import auth
from tests.api.server import Server

pytestmark = pytest.mark.timeout(300)


# The document of an app that is never started: building it touches no database.
schema = schemathesis.openapi.from_dict(create_app(Settings("postgresql://unused")).openapi())


@pytest.fixture(scope="module")
def base_url(server: Server, db: psycopg.Connection[Any]) -> str:
    seed.meter(db, "KAM-60000001")
    seed.hourly(
        db, "KAM-60000001", seed.utc(2026, 9, 28), seed.utc(2026, 10, 3),
        start="1.000", per_hour="0.010",
    )  # fmt: skip
    seed.monthly(db, "KAM-60000001", date(2026, 9, 1), "1.500")
    seed.alert(db, "KAM-60000001", "leak", seed.utc(2026, 9, 29))
    return server.url


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors_and_answers_as_documented(
    case: Any, base_url: str, tokens: dict[str, str]
) -> None:
    # positive_data_acceptance is left out: a cursor, a range or a period can fit the schema and
    # still be refused with a 422 that says why (a cursor this API never gave, from after to).
    case.call_and_validate(
        base_url=base_url,
        headers=auth(tokens["all"]),
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
