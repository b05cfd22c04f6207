"""`metergate api serve` and `metergate api token create|list|revoke`.

Both read DATABASE_URL (or --database-url). `token create` prints the token once, on stdout,
and nowhere else: the database keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from metergate.cli import Subparsers, command_group
from metergate.errors import ConfigError, StorageError

SCOPE_NAMES = ("billing:read", "readings:read", "readings:write", "meters:admin")


def register(subparsers: Subparsers) -> None:
    commands = command_group(subparsers, "api")

    serve = commands.add_parser(
        "serve",
        help="run the API (and the dashboard at /dashboard/)",
        description="Serve the API with uvicorn. Settings come from the environment:"
        " DATABASE_URL, METERGATE_TZ (default Europe/Riga), METERGATE_READING_WINDOW"
        " (default 25-28), METERGATE_API_MAX_BODY, METERGATE_API_MAX_IMPORT.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--database-url", help="default: $DATABASE_URL")
    serve.add_argument(
        "--no-migrate", action="store_true", help="do not apply pending migrations first"
    )
    serve.set_defaults(handler=_cmd_serve)

    token = commands.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    create = token.add_parser(
        "create",
        help="make a token; it is printed once",
        description="Scopes: billing:read (billing export and freeze), readings:read"
        " (meters, readings, consumption, alerts, verification), readings:write (manual"
        " readings), meters:admin (meter import, keys).",
    )
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPE_NAMES, help="repeat for more"
    )
    create.add_argument("--name", default="api", help="who or what uses it")
    create.add_argument("--database-url", help="default: $DATABASE_URL")
    create.add_argument("--json", action="store_true", help="print a JSON object")
    create.set_defaults(handler=_cmd_token_create)

    listing = token.add_parser("list", help="the tokens (never the tokens themselves)")
    listing.add_argument("--database-url", help="default: $DATABASE_URL")
    listing.set_defaults(handler=_cmd_token_list)

    revoke = token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("id", type=int)
    revoke.add_argument("--database-url", help="default: $DATABASE_URL")
    revoke.set_defaults(handler=_cmd_token_revoke)


def _database_url(args: argparse.Namespace) -> str:
    url = args.database_url or os.environ.get("DATABASE_URL", "")
    if not url.strip():
        raise ConfigError("no database: give --database-url or set DATABASE_URL")
    return str(url)


def _connect(args: argparse.Namespace) -> Any:
    import psycopg

    from ingest.migrate import migrate

    url = _database_url(args)
    try:
        migrate(url)
        return psycopg.connect(url, autocommit=True)
    except (psycopg.Error, StorageError) as exc:
        raise ConfigError(f"cannot use the database: {exc}") from None


def _cmd_token_create(args: argparse.Namespace) -> int:
    from api.auth import create_token

    with _connect(args) as conn:
        try:
            info, token = create_token(conn, args.name, args.scope)
        except ValueError as exc:
            print(f"metergate api token create: {exc}", file=sys.stderr)
            return 2
    if args.json:
        shown = {"id": info.id, "name": info.name, "scopes": list(info.scopes), "token": token}
        print(json.dumps(shown))
    else:
        print(token)
        print(
            f"token {info.id} ({info.name}): {' '.join(info.scopes)}. It is shown only now.",
            file=sys.stderr,
        )
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    from api.auth import list_tokens

    with _connect(args) as conn:
        for info in list_tokens(conn):
            state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
            print(f"{info.id}\t{info.name}\t{' '.join(info.scopes)}\t{state}")
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from api.auth import revoke_token

    with _connect(args) as conn:
        if not revoke_token(conn, args.id):
            print(f"metergate api token revoke: no active token {args.id}", file=sys.stderr)
            return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.settings import Settings
    from ingest.migrate import migrate

    environ = dict(os.environ)
    if args.database_url:
        environ["DATABASE_URL"] = args.database_url
    settings = Settings.from_env(environ)
    if not (1 <= args.port <= 65535):
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    if not args.no_migrate:
        try:
            migrate(settings.database_url)
        except StorageError as exc:
            raise ConfigError(f"cannot migrate the database: {exc}") from None
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0
