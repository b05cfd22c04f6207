"""`metergate keys add|list|remove` and `metergate meters import`: the registry and its keys.

`keys add` stores a meter's AES-128 key and decodes the meter's frames that were stored before
the key was known (ingest/recover.py). The key is never printed, logged or repeated in an error;
give it as `-` to read it from stdin and keep it out of the shell history and the process list.

`meters import` loads a meters CSV file (api/meter_import.py lists the columns): the good rows
are upserted, the bad ones listed with their line numbers. Exit status 0 when rows were loaded
(or the file held none), 1 when every row was bad or the database failed, 2 for bad arguments
or a file that cannot be read as a whole.
"""

from __future__ import annotations

import argparse
import os
import string
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from metergate.cli import Subparsers, command_group
from metergate.errors import StorageError
from metergate.keys import KEY_SIZE, canonical_meter_id

_MAX_REASONS = 5


class _UsageError(Exception):
    """Bad arguments: the message is printed and the command exits 2."""


def register(subparsers: Subparsers) -> None:
    keys = command_group(subparsers, "keys")
    add = keys.add_parser(
        "add",
        help="store a meter's AES-128 key and decode its stored frames again",
        description="Store (or replace) the key and decode the meter's frames that arrived"
        " before it; prints how many now decode. The key is never shown again.",
    )
    add.add_argument("meter_id", metavar="METER_ID", help="e.g. KAM-12345678")
    add.add_argument("key", metavar="KEY", help="32 hex digits, or - to read them from stdin")
    _database_url(add)
    add.add_argument(
        "--timezone",
        default=os.environ.get("METERGATE_TZ", "Europe/Riga"),
        help="the zone of the meters' clocks, as the gateway's (default: $METERGATE_TZ, else"
        " Europe/Riga)",
    )
    add.set_defaults(handler=_run(_cmd_keys_add))
    listing = keys.add_parser("list", help="meters with a stored key and when it was added")
    _database_url(listing)
    listing.set_defaults(handler=_run(_cmd_keys_list))
    remove = keys.add_parser("remove", help="forget a meter's key")
    remove.add_argument("meter_id", metavar="METER_ID")
    _database_url(remove)
    remove.set_defaults(handler=_run(_cmd_keys_remove))

    meters = command_group(subparsers, "meters")
    load = meters.add_parser(
        "import",
        help="load meters from a CSV file into the registry",
        description="Upsert the good rows of a meters CSV file and list the bad ones by line."
        " Columns: meter_id (or serial and manufacturer), premise and/or address,"
        " customer_ref, contract_ref, medium, kind, model, meter_class, q3_m3h, country,"
        " installed_on, removed_on, verified_on or marking_year, verification_interval_years.",
    )
    load.add_argument("file", metavar="FILE", help="the CSV file (UTF-8, , or ; separated)")
    _database_url(load)
    load.add_argument(
        "--dry-run",
        action="store_true",
        help="check the file (against the database when one is given) and change nothing",
    )
    load.set_defaults(handler=_run(_cmd_meters_import))


def _database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="postgresql://... (default: $DATABASE_URL)")


def _run(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The handler: `command(args)`, with bad arguments and database failures as messages."""

    def handler(args: argparse.Namespace) -> int:
        import psycopg

        name = f"metergate {args.command} {getattr(args, f'{args.command}_command')}"
        try:
            return int(command(args))
        except _UsageError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        except StorageError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        except psycopg.Error as exc:
            # The first line only: DETAIL may quote a row's values.
            print(f"{name}: database error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1

    return handler


def _url(args: argparse.Namespace) -> str:
    url = args.database_url or os.environ.get("DATABASE_URL", "")
    if not url.strip():
        raise _UsageError("no database: give --database-url or set DATABASE_URL")
    return str(url)


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _meter(text: str) -> str:
    meter = canonical_meter_id(text)
    if meter is None:
        raise _UsageError(f"{text[:40]!r} is not a meter id of the form MFR-12345678")
    return meter


def _key(text: str) -> bytes:
    if text == "-":
        text = sys.stdin.readline().strip()
    # The message must not repeat the text: it may be most of a real key.
    if len(text) != 2 * KEY_SIZE or not set(text) <= set(string.hexdigits):
        raise _UsageError("KEY: an AES-128 key is 32 hex digits")
    return bytes.fromhex(text)


def _cmd_keys_add(args: argparse.Namespace) -> int:
    from ingest.recover import add_key

    meter = _meter(args.meter_id)
    key = _key(args.key)
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _UsageError(f"--timezone: unknown time zone {args.timezone[:60]!r}") from None
    url = _url(args)
    recovery = add_key(url, meter, key, zone=zone)
    if recovery.stored == 0:
        print(f"{meter}: key stored; no stored frames were waiting for it")
        with _connect(url) as conn:
            if conn.execute("SELECT 1 FROM meters WHERE meter_id = %s", (meter,)).fetchone():
                return 0
        print(f"note: {meter} is not in the meter registry (yet)", file=sys.stderr)
        return 0
    failed = len(recovery.failures)
    print(
        f"{meter}: key stored; {recovery.decoded} of {recovery.stored} stored frames decoded"
        f" again, {failed} still fail"
    )
    if recovery.decoded:
        print(f"  {recovery.readings} new readings")
    reasons = Counter(f"{f.error_type}: {f.message}" for f in recovery.failures)
    for reason, count in reasons.most_common(_MAX_REASONS):
        print(f"  {count} x {reason}")
    if len(reasons) > _MAX_REASONS:
        print(f"  ... and {len(reasons) - _MAX_REASONS} other reasons")
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from ingest.recover import list_keys

    with _connect(_url(args)) as conn:
        stored = list_keys(conn)
    for entry in stored:
        print(f"{entry.meter_id}\tadded {entry.added_at.isoformat(timespec='seconds')}")
    return 0


def _cmd_keys_remove(args: argparse.Namespace) -> int:
    from ingest.recover import remove_key

    meter = _meter(args.meter_id)
    with _connect(_url(args)) as conn:
        if not remove_key(conn, meter):
            print(f"metergate keys remove: {meter} has no stored key", file=sys.stderr)
            return 1
    print(f"{meter}: key removed")
    return 0


def _cmd_meters_import(args: argparse.Namespace) -> int:
    import psycopg

    from api.meter_import import MeterFileError, parse_meters_csv, upsert_meters

    try:
        with open(args.file, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise _UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _UsageError(
            f"{args.file} is not UTF-8 text (line {line}, byte {exc.start})"
        ) from None
    try:
        parsed = parse_meters_csv(text)
    except MeterFileError as exc:
        raise _UsageError(f"{args.file}: {exc}") from None
    counts = ""
    # A dry run without a database checks the file alone.
    if not args.dry_run or args.database_url or os.environ.get("DATABASE_URL"):
        with _connect(_url(args)) as conn:
            try:
                with conn.transaction(force_rollback=args.dry_run):
                    inserted, updated = upsert_meters(conn, parsed)
            except psycopg.Error as exc:
                raise StorageError(f"nothing loaded: {str(exc).splitlines()[0]}") from None
        counts = f" ({inserted} new, {updated} updated)"
    verb = "would load" if args.dry_run else "loaded"
    bad = len(parsed.errors)
    print(
        f"{verb} {_count(len(parsed.rows), 'meter')}{counts}; {_count(bad, 'bad row')}"
        + (":" if bad else "")
    )
    for error in parsed.errors:
        print(f"line {error.line}: {error.message}")
    return 1 if bad and not parsed.rows else 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
