"""`metergate db migrate` and `metergate ingest run`.

`db migrate` applies the pending migrations and prints their names, one per line. `ingest run`
is the worker (ingest/worker.py): it applies the migrations itself, then stores what arrives
over MQTT until SIGTERM or Ctrl-C, after which it commits the batch in hand and disconnects.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

from metergate.cli import Subparsers, command_group
from metergate.errors import ConfigError, StorageError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="postgresql://... (default: $DATABASE_URL)",
    )


def register(subparsers: Subparsers) -> None:
    db = command_group(subparsers, "db")
    migrate = db.add_parser("migrate", help="apply the pending database migrations")
    _add_database_url(migrate)
    migrate.set_defaults(handler=_cmd_migrate)

    ingest = command_group(subparsers, "ingest")
    run = ingest.add_parser(
        "run",
        help="store readings from MQTT in the database until stopped",
        description="Subscribe to reading and raw messages (DESIGN.md section 3) and store them;"
        " stops on SIGTERM or Ctrl-C after committing the batch in hand.",
    )
    _add_database_url(run)
    run.add_argument(
        "--mqtt-url",
        default=os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883"),
        help="mqtt://[user[:password]@]host[:port] or mqtts://... (default: $MQTT_URL, else"
        " mqtt://127.0.0.1:1883)",
    )
    run.add_argument("--mqtt-protocol", choices=("5", "3.1.1"), default="5")
    run.add_argument(
        "--client-id",
        default=f"metergate-ingest-{socket.gethostname()}",
        help="fixed per worker, so its session survives restarts; give each worker on one"
        " host its own (default: metergate-ingest-HOSTNAME)",
    )
    run.add_argument("--batch-size", type=_positive, default=500, help="messages per batch")
    run.add_argument(
        "--batch-ms", type=_positive, default=200, help="longest wait to fill a batch (ms)"
    )
    run.add_argument(
        "--share-group",
        default="ingest",
        help="shared subscription group (default: ingest); workers of one group split the load",
    )
    run.add_argument(
        "--no-share",
        action="store_true",
        help="a plain subscription, for a single worker on a broker without shared"
        " subscriptions (over MQTT 3.1.1 a broker cannot say so: NATS, for one, accepts"
        " $share/... and delivers nothing)",
    )
    run.add_argument("--topic-root", default="metergate", help="first topic level")
    run.add_argument(
        "--session-expiry",
        type=_positive,
        default=7 * 24 * 3600,
        help="seconds the broker keeps the session and its messages while the worker is down",
    )
    run.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    run.set_defaults(handler=_cmd_run)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from ingest.migrate import migrate

    if not args.database_url:
        raise ConfigError("no database URL (--database-url or DATABASE_URL)")
    try:
        applied = migrate(args.database_url)
    except StorageError as exc:
        print(f"metergate db migrate: {exc}", file=sys.stderr)
        return 1
    print("\n".join(applied) if applied else "the database is up to date")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from gateway.broker import BrokerConfig
    from ingest.worker import Worker, WorkerConfig

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    broker = BrokerConfig.from_url(args.mqtt_url, location="--mqtt-url")
    broker = replace(broker, protocol=5 if args.mqtt_protocol == "5" else 4)
    worker = Worker(
        WorkerConfig(
            database_url=args.database_url or "",
            broker=broker,
            client_id=args.client_id,
            batch_size=args.batch_size,
            batch_ms=args.batch_ms,
            topic_root=args.topic_root,
            share_group=None if args.no_share else args.share_group,
            session_expiry_s=args.session_expiry,
        )
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    try:
        worker.run()
    except StorageError as exc:
        print(f"metergate ingest run: {exc}", file=sys.stderr)
        return 1
    return 0
