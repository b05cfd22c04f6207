"""`metergate db migrate`, `metergate ingest run` and `metergate monthly fill`.

`db migrate` applies the pending migrations and prints their names, one per line. `ingest run`
is the worker (ingest/worker.py): it applies the migrations itself, then stores what arrives
over MQTT until SIGTERM or Ctrl-C, after which it commits the batch in hand and disconnects; it
runs the engines for the meters it stored readings of (ingest/engine_loop.py). `monthly fill`
runs the engines on demand (ingest/engine_run.py) and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


def _period(text: str) -> date:
    from ingest.boundaries import parse_period

    try:
        return parse_period(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text[:60]!r} (an IANA name, e.g. Europe/Riga)"
        ) from None


def _delay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError("0 to 86400 seconds")
    return value


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("1 to 256 processes")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("0 to 3600 seconds (0: no engines in this worker)")
    return value


def _add_timezone(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timezone",
        type=_zone,
        default=ZoneInfo("Europe/Riga"),
        help="the utility's time zone: month boundaries and night windows (default: Europe/Riga)",
    )


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
    run.add_argument(
        "--topic-root",
        default="metergate",
        help="first topic level, the gateways' [mqtt] topic_root (default: metergate)",
    )
    run.add_argument(
        "--session-expiry",
        type=_positive,
        default=7 * 24 * 3600,
        help="seconds the broker keeps the session and its messages while the worker is down",
    )
    run.add_argument(
        "--engine-interval",
        type=_seconds,
        default=5.0,
        help="seconds between engine runs for the meters just stored, which also decode raw"
        " frames whose key the database holds (default: 5; 0: neither in this worker)",
    )
    run.add_argument(
        "--engine-delay",
        type=_delay,
        help="seconds a meter's new data waits for more before the engines run it, so that"
        " frequent telegrams make one run (default: 300; alerts come that much later)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on 127.0.0.1 at this port (0: any free one; default: none)",
    )
    _add_timezone(run)
    run.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    run.set_defaults(handler=_cmd_run)

    monthly = command_group(subparsers, "monthly")
    fill = monthly.add_parser(
        "fill",
        help="compute the monthly readings (and alerts) from the stored readings now",
        description="Run the engines (DESIGN.md sections 5-7) for every registered meter:"
        " monthly readings of every closed period that is missing or out of date (only the"
        " given one with --period), alerts and verification due dates. Idempotent: a second"
        " run changes nothing.",
    )
    _add_database_url(fill)
    fill.add_argument(
        "--period", type=_period, help="YYYY-MM: this month only (it must have ended)"
    )
    fill.add_argument(
        "--jobs",
        type=_jobs,
        default=1,
        help="processes sharing the meters (default: 1; up to the cores the database can spare)",
    )
    _add_timezone(fill)
    fill.set_defaults(handler=_cmd_fill)


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
            engine_interval_s=args.engine_interval or None,
            **({} if args.engine_delay is None else {"engine_delay_s": args.engine_delay}),
            zone=args.timezone,
            metrics_port=args.metrics_port,
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


def _cmd_fill(args: argparse.Namespace) -> int:
    import time
    from datetime import UTC, datetime

    import psycopg

    from ingest.boundaries import month_boundary
    from ingest.engine_pool import run_engines_parallel
    from ingest.migrate import migrate

    if not args.database_url:
        raise ConfigError("no database URL (--database-url or DATABASE_URL)")
    now = datetime.now(UTC)
    label = "" if args.period is None else f" {args.period:%Y-%m}"
    if args.period is not None and month_boundary(args.period, args.timezone) > now:
        print(
            f"metergate monthly fill: period{label} has not ended yet (its boundary is"
            f" {month_boundary(args.period, args.timezone).isoformat()})",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    try:
        migrate(args.database_url)
        report = run_engines_parallel(
            args.database_url,
            jobs=args.jobs,
            periods=None if args.period is None else [args.period],
            now=now,
            zone=args.timezone,
        )
    except (StorageError, psycopg.Error) as exc:
        print(f"metergate monthly fill: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"monthly fill{label}: {report.summary()} in {elapsed:.1f} s")
    if report.failed:
        shown = ", ".join(report.failed[:10])
        print(f"metergate monthly fill: failed for {shown}; see the log", file=sys.stderr)
        return 1
    return 0
