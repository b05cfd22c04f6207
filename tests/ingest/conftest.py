"""Databases and brokers for the ingest's tests.

Each test module gets a database of its own (`metergate_test_<random>`, dropped afterwards) on
the PostgreSQL of METERGATE_TEST_DATABASE_URL, and topics of its own on the Mosquitto of
METERGATE_TEST_MQTT_URL, so that nothing another test does (or another run on the same
machine) reaches it. Neither is mocked: scripts/lib.sh starts them when they are not running.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.broker import BrokerConfig
from ingest.migrate import migrate
from tests.ingest.services import Publisher

ADMIN_URL = os.environ.get(
    "METERGATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MQTT_URL = os.environ.get("METERGATE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")

# Every table the ingest writes; a test starts with them empty.
DATA_TABLES = (
    "readings",
    "raw_frames",
    "meter_status",
    "dead_letters",
    "meters",
    "meter_replacements",
    "monthly_readings",
    "monthly_reading_revisions",
    "alerts",
    "meter_keys",
    "engine_marks",
)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL ({conninfo_to_dict(ADMIN_URL).get('host')}) is not reachable: {exc};"
            " scripts/lib.sh ensure_services starts it"
        )


@pytest.fixture(scope="module")
def create_database() -> Iterator[Callable[[], str]]:
    """Makes empty databases; all of them are dropped when the module is done."""
    made: list[str] = []

    def create() -> str:
        name = f"metergate_test_{uuid.uuid4().hex[:12]}"
        with _admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return make_conninfo(ADMIN_URL, dbname=name)

    yield create
    with _admin() as conn:
        for name in made:
            # FORCE: a worker the test killed may have left a connection behind.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def migrated_url(create_database: Callable[[], str]) -> str:
    url = create_database()
    migrate(url)
    return url


@pytest.fixture
def db(migrated_url: str) -> str:
    """The module's migrated database, its data tables emptied."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, DATA_TABLES)))
        )
    return migrated_url


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    broker = BrokerConfig.from_url(MQTT_URL)
    try:
        socket.create_connection((broker.host, broker.port), timeout=5).close()
    except OSError as exc:
        pytest.fail(
            f"Mosquitto at {broker.host}:{broker.port} is not reachable: {exc};"
            " scripts/lib.sh ensure_services starts it"
        )
    return MQTT_URL


@pytest.fixture
def topic_root() -> str:
    """A first topic level no other test uses."""
    return f"mgtest{uuid.uuid4().hex[:12]}"


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[Publisher]:
    client = Publisher(mqtt_url)
    yield client
    client.close()
