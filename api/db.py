"""The API's connections: one async psycopg pool, rows as dicts, autocommit unless a route opens
a transaction. Queries are constant text with bound parameters; nothing is built from input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from api.auth import Token
from api.settings import Settings

Connection = AsyncConnection[DictRow]


class Database:
    def __init__(self, settings: Settings) -> None:
        self.pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            open=False,
            timeout=settings.pool_timeout_s,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
        )

    async def open(self) -> None:
        # Not waiting: the API starts while the database is down and answers 503 until it is up.
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self.pool.connection() as conn:
            yield conn

    async def find_token(self, sha256: bytes) -> Token | None:
        async with self.connection() as conn:
            cur = await conn.execute(
                "SELECT id, name, scopes FROM api_tokens"
                " WHERE token_sha256 = %s AND revoked_at IS NULL",
                (sha256,),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return Token(int(row["id"]), str(row["name"]), frozenset(row["scopes"]))

    async def ping(self) -> dict[str, Any]:
        async with self.connection() as conn:
            cur = await conn.execute("SELECT now() AS now")
            row = await cur.fetchone()
        assert row is not None
        return row


def database_of(request: Request) -> Database:
    """The app's database (create_app keeps it in app.state)."""
    db: Database = request.app.state.db
    return db


def settings_of(request: Request) -> Settings:
    """The app's settings (create_app keeps them in app.state)."""
    settings: Settings = request.app.state.settings
    return settings
