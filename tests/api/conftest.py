"""A database of its own for each test module of the API, migrated, seeded by the module with
SQL (tests/api/seed.py), and dropped afterwards; the app runs over it in-process (TestClient)
or on a real socket (uvicorn on 127.0.0.1, a free port) where a browser or a load needs one.
The database is the real PostgreSQL of METERGATE_TEST_DATABASE_URL, never a mock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.app import create_app
from api.auth import SCOPES, create_token
from api.settings import Settings
from ingest.migrate import migrate
from tests.api.server import Server

ADMIN_URL = os.environ.get(
    "METERGATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL ({conninfo_to_dict(ADMIN_URL).get('host')}) is not reachable: {exc}"
        )


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    name = f"metergate_api_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_conninfo(ADMIN_URL, dbname=name)
        migrate(url)
        yield url
    finally:
        with _admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, max_body_bytes=4096, max_import_bytes=64 * 1024)


@pytest.fixture(scope="module")
def tokens(db: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """A token per scope, one with every scope ("all") and one for each "all but" a scope
    ("-billing:read", ...)."""
    out: dict[str, str] = {}
    for scope in SCOPES:
        out[scope] = create_token(db, scope, [scope])[1]
        others = [s for s in SCOPES if s != scope]
        out[f"-{scope}"] = create_token(db, f"all but {scope}", others)[1]
    out["all"] = create_token(db, "all", SCOPES)[1]
    return out


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[Server]:
    with Server(create_app(settings)) as running:
        yield running


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
