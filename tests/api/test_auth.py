"""Tokens and scopes: every route under /v1 answers 401 without a valid token and 403 with a
token that lacks its scope. The routes come from the app itself, so a new one cannot escape."""

from __future__ import annotations

import argparse
import hashlib
from datetime import date
from typing import Any

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.app import api_routers, create_app
from api.auth import SCOPE_KEY, SCOPES, ScopedRoute, create_token, list_tokens, revoke_token, scoped
from api.settings import Settings
from metergate.cli import build_parser
from metergate.errors import ConfigError
from tests.api import seed
from tests.api.conftest import auth

pytestmark = pytest.mark.timeout(120)

METER = "KAM-00000001"
KEY = "00112233445566778899aabbccddeeff"

# Enough of a request for each route to pass validation once authorised.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/readings/manual": {
        "json": {"meter_id": METER, "value": "5.000", "reader": "engineer", "confirm": True}
    },
    "/v1/meters/{meter_id}/key": {"json": {"key": KEY}},
    "/v1/meters/import": {
        "content": "meter_id,premise\nKAM-00000009,P-9\n",
        "headers": {"Content-Type": "text/csv"},
    },
}
QUERIES = {"/v1/billing/monthly": {"period": "2026-10"}}


def _routes() -> list[tuple[str, str, str]]:
    """(method, path, scope) of every route under /v1."""
    out = []
    for router in api_routers(Settings("postgresql://unused")):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in sorted(route.methods):
                out.append((method, route.path, str((route.openapi_extra or {})[SCOPE_KEY])))
    return out


ROUTES = _routes()


def _url(path: str) -> str:
    return path.replace("{meter_id}", METER).replace("{period}", "2026-10")


def _call(client: TestClient, method: str, path: str, token: str | None) -> Any:
    extra = dict(BODIES.get(path, {}))
    headers = dict(extra.pop("headers", {}))
    if token is not None:
        headers.update(auth(token))
    return client.request(method, _url(path), params=QUERIES.get(path), headers=headers, **extra)


@pytest.fixture(scope="module", autouse=True)
def _meter(db: psycopg.Connection[Any]) -> None:
    seed.meter(db, METER)
    seed.monthly(db, METER, date(2026, 10, 1), "10.000")


def test_every_v1_route_is_scoped_and_documented(client: TestClient) -> None:
    documented = set()
    for path, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, operation in operations.items():
            if path.startswith("/v1"):
                assert operation[SCOPE_KEY] in SCOPES, (method, path)
                assert operation["security"] == [{"HTTPBearer": []}], (method, path)
                documented.add((method.upper(), path))
    assert documented == {(method, path) for method, path, _ in ROUTES}
    assert len(ROUTES) == 11


def test_an_unscoped_v1_route_is_refused() -> None:
    with pytest.raises(RuntimeError, match="needs a scope"):
        ScopedRoute("/v1/x", endpoint=lambda: None)
    with pytest.raises(ValueError, match="unknown scope"):
        scoped("billing:write")


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_401_without_a_valid_token(
    client: TestClient, tokens: dict[str, str], method: str, path: str, scope: str
) -> None:
    for token in (None, "mg_" + "A" * 43, tokens["all"][:-1], "not-a-token"):
        response = _call(client, method, path, token)
        assert response.status_code == 401, (token, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    response = client.request(method, _url(path), headers={"Authorization": tokens["all"]})
    assert response.status_code == 401  # the token without "Bearer"


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_403_with_a_token_that_lacks_the_scope(
    client: TestClient, tokens: dict[str, str], method: str, path: str, scope: str
) -> None:
    response = _call(client, method, path, tokens[f"-{scope}"])
    assert response.status_code == 403, response.text
    assert scope in response.json()["detail"]
    for other in SCOPES:
        if other != scope:
            assert _call(client, method, path, tokens[other]).status_code == 403


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_the_right_scope_is_let_in(
    client: TestClient, tokens: dict[str, str], method: str, path: str, scope: str
) -> None:
    response = _call(client, method, path, tokens[scope])
    assert response.status_code < 400, response.text


def test_a_revoked_token_is_refused(db: psycopg.Connection[Any], client: TestClient) -> None:
    info, token = create_token(db, "short-lived", ["readings:read"])
    assert client.get("/v1/meters", headers=auth(token)).status_code == 200
    assert revoke_token(db, info.id)
    assert not revoke_token(db, info.id)
    assert client.get("/v1/meters", headers=auth(token)).status_code == 401
    listed = {t.id: t for t in list_tokens(db)}
    assert listed[info.id].revoked_at is not None


def test_only_the_hash_is_stored(db: psycopg.Connection[Any]) -> None:
    info, token = create_token(db, "hash check", ["billing:read"])
    assert token.startswith("mg_") and len(token) == 46
    row = db.execute(
        "SELECT token_sha256, api_tokens::text FROM api_tokens WHERE id = %s", (info.id,)
    ).fetchone()
    assert row is not None
    assert bytes(row[0]) == hashlib.sha256(token.encode()).digest()
    assert token[3:] not in row[1]


def test_bad_token_requests_are_refused_by_create_token(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        create_token(db, "x", ["billing:write"])
    with pytest.raises(ValueError, match="at least one scope"):
        create_token(db, "x", [])
    with pytest.raises(ValueError, match="needs a name"):
        create_token(db, " ", ["billing:read"])


def test_public_routes_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/dashboard/").status_code == 200


def _parser() -> argparse.ArgumentParser:
    return build_parser()


def test_cli_token_create_list_revoke(
    database_url: str,
    client: TestClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parser().parse_args(
        ["api", "token", "create", "--scope", "readings:read", "--scope", "billing:read",
         "--name", "dashboard", "--database-url", database_url]
    )  # fmt: skip
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("mg_") and "billing:read readings:read" in err
    assert client.get("/v1/meters", headers=auth(token)).status_code == 200
    args = _parser().parse_args(["api", "token", "list", "--database-url", database_url])
    assert args.handler(args) == 0
    listing = capsys.readouterr().out
    assert "dashboard\tbilling:read readings:read\tactive" in listing
    assert token not in listing
    token_id = next(line.split("\t")[0] for line in listing.splitlines() if "\tdashboard\t" in line)
    args = _parser().parse_args(
        ["api", "token", "revoke", token_id, "--database-url", database_url]
    )
    assert args.handler(args) == 0
    assert client.get("/v1/meters", headers=auth(token)).status_code == 401
    assert args.handler(args) == 1


def test_cli_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["api", "token", "create", "--scope", "billing:write"])
    with pytest.raises(SystemExit):
        parser.parse_args(["api", "token", "create"])
    with pytest.raises(SystemExit):
        parser.parse_args(["api", "serve", "--port", "eighty"])
    monkeypatch.delenv("DATABASE_URL", raising=False)
    args = parser.parse_args(["api", "token", "create", "--scope", "billing:read"])
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        args.handler(args)
    args = parser.parse_args(["api", "serve", "--port", "70000", "--database-url", "x"])
    with pytest.raises(ConfigError, match="port"):
        args.handler(args)
    args = parser.parse_args(
        ["api", "token", "list", "--database-url", "postgresql://postgres@127.0.0.1:1/none"]
    )
    with pytest.raises(ConfigError, match="cannot use the database"):
        args.handler(args)


def test_an_app_over_an_unreachable_database_answers_503() -> None:
    settings = Settings("postgresql://postgres@127.0.0.1:1/none", pool_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 503
        response = client.get("/v1/meters", headers=auth("mg_" + "x" * 43))
        assert response.status_code == 503
        assert "database" in response.json()["detail"]
