"""API tokens and their scopes (issue 6).

A token is `mg_` and 32 random bytes in base64url (256 bits); the database keeps only its
SHA-256 (ingest/migrations/0100_api_tokens.sql says why no slow hash is needed). A request
presents it as `Authorization: Bearer mg_...`.

Every route under /v1 is a `ScopedRoute` and names the one scope it needs (`scoped`); it checks
token and scope before anything reads or parses the request's body, and `create_app` refuses to
build an app with a /v1 route that is not scoped.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

BILLING_READ = "billing:read"
READINGS_READ = "readings:read"
READINGS_WRITE = "readings:write"
METERS_ADMIN = "meters:admin"
SCOPES = (BILLING_READ, READINGS_READ, READINGS_WRITE, METERS_ADMIN)

TOKEN_PREFIX = "mg_"
SCOPE_KEY = "x-required-scope"  # where a route keeps its scope, in its OpenAPI operation too
_STATE_KEY = "metergate.token"

# Declares the bearer scheme in the OpenAPI document; the Authenticator does the checking.
bearer_scheme = HTTPBearer(auto_error=False, description="an API token: mg_...")


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    name: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in SCOPES order; ValueError naming the first unknown one."""
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; the scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"a token needs at least one scope of {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in scopes)


def create_token(
    conn: psycopg.Connection[Any], name: str, scopes: Sequence[str]
) -> tuple[TokenInfo, str]:
    """Store a new token; return its row and the token itself, which exists nowhere else."""
    if not name.strip():
        raise ValueError("a token needs a name (who or what uses it)")
    checked = check_scopes(scopes)
    token = new_token()
    row = conn.execute(
        "INSERT INTO api_tokens (name, token_sha256, scopes) VALUES (%s, %s, %s)"
        " RETURNING id, created_at",
        (name.strip(), token_hash(token), list(checked)),
    ).fetchone()
    assert row is not None
    return TokenInfo(int(row[0]), name.strip(), checked, row[1], None), token


def list_tokens(conn: psycopg.Connection[Any]) -> list[TokenInfo]:
    rows = conn.execute(
        "SELECT id, name, scopes, created_at, revoked_at FROM api_tokens ORDER BY id"
    ).fetchall()
    return [TokenInfo(int(r[0]), r[1], tuple(r[2]), r[3], r[4]) for r in rows]


def revoke_token(conn: psycopg.Connection[Any], token_id: int) -> bool:
    """Revoke a token; False when there is no such token or it was revoked already."""
    cur = conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        (token_id,),
    )
    return cur.rowcount == 1


def scoped(
    scope: str,
    *,
    responses: dict[int | str, dict[str, Any]] | None = None,
    openapi_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The route decorator arguments of a route that needs `scope` (with its own `responses`
    and `openapi_extra`, if any, merged in)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return {
        "dependencies": [Depends(bearer_scheme)],
        "openapi_extra": {**(openapi_extra or {}), SCOPE_KEY: scope},
        "responses": {
            401: {"description": "no token, or not a valid one"},
            403: {"description": f"the token lacks the scope {scope}"},
            **(responses or {}),
        },
    }


# What every route that takes a body can also answer.
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body cannot be read as what the route takes"},
    413: {"description": "the body is larger than the API accepts"},
}


def route_scope(route: APIRoute) -> str | None:
    extra = route.openapi_extra or {}
    scope = extra.get(SCOPE_KEY)
    return scope if isinstance(scope, str) else None


def current_token(request: Request) -> Token:
    """The token the Authenticator accepted for this request."""
    token = request.scope.get(_STATE_KEY)
    if not isinstance(token, Token):
        raise RuntimeError("a scoped route ran without the Authenticator")
    return token


TokenLookup = Callable[[bytes], Awaitable[Token | None]]


class ScopedRoute(APIRoute):
    """A route that checks the request's token and its own scope before FastAPI reads the body
    or solves a parameter: a request without the right token learns nothing but 401 or 403.
    The app keeps the token lookup in `app.state.token_lookup`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needed = route_scope(self)
        if needed is None:
            raise RuntimeError(f"route {self.path} needs a scope (api.auth.scoped)")
        known = frozenset(field.alias for field in self.dependant.query_params)

        async def checked(request: Request) -> Response:
            lookup: TokenLookup = request.app.state.token_lookup
            presented = _bearer(request.headers.get("authorization"))
            token = await lookup(token_hash(presented)) if presented else None
            if token is None:
                return JSONResponse(
                    {"detail": "a valid API token is needed: Authorization: Bearer mg_..."},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if needed not in token.scopes:
                return JSONResponse(
                    {"detail": f"this token ({token.name}) lacks the scope {needed}"},
                    status_code=403,
                )
            # A misspelt parameter (perod=, forma=csv) must not be ignored in silence.
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                return JSONResponse(
                    {"detail": [{"loc": ["query", unknown[0][:40]], "type": "extra_forbidden",
                                 "msg": f"unknown parameter; this route takes {_names(known)}"}]},
                    status_code=422,
                )  # fmt: skip
            request.scope[_STATE_KEY] = token
            return await handler(request)

        return checked


def _names(known: frozenset[str]) -> str:
    return ", ".join(sorted(known)) if known else "no query parameters"


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    kind, _, credentials = header.partition(" ")
    token = credentials.strip()
    return token if kind.lower() == "bearer" and token.startswith(TOKEN_PREFIX) else None
