"""`metergate driveby` and `metergate sim gps` (issue 4, drive-by mode).

`driveby --route route.csv --device im871a:/dev/ttyUSB0 [--gps /dev/ttyACM0] [--keys keys.toml]`
collects the meters of a route from a van or on foot: a live screen of what was collected and
what is missing by street, every reading spooled on disk with the GPS position and published
when a broker answers, and at the end (Ctrl-C, SIGTERM, a closed terminal) a report in CSV and
JSON (gateway/driveby/report.py). Bad input stops it before anything is opened, with one line
and exit status 2. Stopping takes a few seconds: the broker gets a moment to acknowledge what
is in flight; what it did not stays in the spool for the next run.

`sim gps` serves a simulated NMEA receiver of a van driving the example route of a simulated
fleet (firmware_sim/gps.py); with the same --meters and --seed as `sim wmbus` it drives past
those meters, and --write-route writes their route list.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from metergate.cli import Subparsers, command_group, serve_until_stopped
from metergate.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from rich.console import Console

    from gateway.driveby.session import DrivebySession

MODES = ("T1", "C1", "S1", "C1T1")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def register(subparsers: Subparsers) -> None:
    driveby = subparsers.add_parser(
        "driveby",
        help="drive-by collection: a route, a wM-Bus receiver, a GPS, a live screen, a report",
        description="Collect the meters of a route with a wM-Bus receiver: a live screen of"
        " what was collected and what is missing, readings spooled on disk (with the GPS"
        " position) and published over MQTT when a broker answers, and at the end (Ctrl-C) a"
        " report of the values collected and the meters still missing, in CSV and JSON.",
    )
    driveby.add_argument("--route", required=True, type=Path, help="the route list (CSV)")
    driveby.add_argument(
        "--device", required=True, metavar="KIND:PORT", help="e.g. im871a:/dev/ttyUSB0"
    )
    driveby.add_argument("--gps", metavar="PORT", help="an NMEA GPS receiver, e.g. /dev/ttyACM0")
    driveby.add_argument("--keys", type=Path, help='TOML: [keys] "KAM-12345678" = "HEX" (600)')
    driveby.add_argument("--mode", default="C1T1", choices=MODES, help="link mode (C1T1)")
    driveby.add_argument("--gateway-id", help="the topic level of the readings (driveby-HOST)")
    driveby.add_argument(
        "--topic-root", default="metergate", help="the first topic level (as the ingest's)"
    )
    driveby.add_argument(
        "--mqtt-url", help="mqtt[s]://[user[:password]@]host[:port] ($MQTT_URL, else local)"
    )
    driveby.add_argument(
        "--spool",
        type=Path,
        help="the on-disk spool (default ~/.local/share/metergate/spool-GATEWAY_ID.sqlite)",
    )
    driveby.add_argument("--timezone", default="Europe/Riga", help="local time of the screen")
    driveby.add_argument(
        "--report-dir", type=Path, default=Path("."), help="where the report goes (here)"
    )
    driveby.add_argument(
        "--no-view",
        action="store_true",
        help="plain lines instead of the live screen (also when stdout is not a terminal)",
    )
    driveby.set_defaults(handler=_cmd_driveby)

    sim = command_group(subparsers, "sim")
    gps = sim.add_parser(
        "gps",
        help="an NMEA GPS receiver of a van driving a simulated route, on a pty",
        description="Print {'port': ..., 'tty': ..., 'route': ...} as one JSON line, then serve"
        " until stopped (SIGTERM or Ctrl-C).",
    )
    gps.add_argument("--meters", type=int, default=50, help="the fleet of `sim wmbus --meters`")
    gps.add_argument("--seed", type=int, default=0, help="the fleet of `sim wmbus --seed`")
    gps.add_argument("--link", help="path of the pty's symlink")
    gps.add_argument("--write-route", type=Path, metavar="FILE", help="write the route list")
    gps.add_argument("--start", help="simulated time at start (ISO 8601; default now)")
    gps.add_argument("--speed", type=float, default=1.0, help="simulated s per real s")
    gps.add_argument("--van-speed", type=float, default=8.0, help="m/s")
    gps.add_argument("--period", type=float, default=1.0, help="s between fixes")
    gps.add_argument("--garbage", type=float, default=0.0, help="share of spoilt epochs")
    gps.set_defaults(handler=_cmd_sim_gps)


def _cmd_driveby(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.logging import RichHandler

    from gateway.config import load_gateway_keys
    from gateway.driveby.route import load_route
    from gateway.driveby.session import (
        DEFAULT_MQTT_URL,
        DrivebySession,
        default_gateway_id,
        default_spool_path,
        driveby_config,
        writable_folder,
    )

    route = load_route(args.route)
    keys = load_gateway_keys(args.keys)
    gateway_id = args.gateway_id if args.gateway_id is not None else default_gateway_id()
    config = driveby_config(
        device=args.device,
        gateway_id=gateway_id,
        mqtt_url=args.mqtt_url or os.environ.get("MQTT_URL") or DEFAULT_MQTT_URL,
        spool_path=args.spool or default_spool_path(gateway_id),
        mode=args.mode,
        timezone=args.timezone,
        topic_root=args.topic_root,
    )
    writable_folder(args.report_dir, "--report-dir")
    if route.ignored_columns:
        ignored = ", ".join(route.ignored_columns)
        print(f"metergate driveby: {args.route}: columns ignored: {ignored}", file=sys.stderr)

    console = Console()
    plain = args.no_view or not console.is_terminal
    if plain:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    else:
        logging.basicConfig(
            level=logging.WARNING,
            format="%(name)s: %(message)s",
            handlers=[RichHandler(console=console, show_path=False)],
        )
    session = DrivebySession(
        config, route, keys, report_dir=args.report_dir, gps_url=args.gps, plain=plain
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        session.stop_soon()

    previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    try:
        return _drive(session, console, plain)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _drive(session: DrivebySession, console: Console, plain: bool) -> int:
    try:
        session.start()
    except StorageError as error:
        print(f"metergate driveby: {error}", file=sys.stderr)
        return 1
    try:
        if plain:
            session.watch_plain(sys.stdout)
        else:
            session.watch_live(console)
            console.print("Stopping: the broker gets a moment for what is in flight ...")
    finally:
        try:
            ending = session.finish()
        except StorageError as error:
            print(f"metergate driveby: no report written: {error}", file=sys.stderr)
            return 1
    snap = session.progress.snapshot()
    report = ending.report
    waiting = "?" if ending.spool_waiting is None else ending.spool_waiting
    print(
        f"Drive-by ended: collected {snap.collected} of {snap.expected} meters,"
        f" {snap.expected - snap.collected} missing ({len(snap.failed())} not decoded),"
        f" {len(snap.unknown())} heard not on the route."
    )
    print(f"Report: {report.collected_csv}")
    print(f"        {report.missing_csv}")
    print(f"        {report.json}")
    print(
        f"Spool: {waiting} messages waiting for the broker in {session.config.spool_path}",
        flush=True,
    )
    return 1 if ending.report_fallback else 0


def _cmd_sim_gps(args: argparse.Namespace) -> int:
    from firmware_sim.fleet import Fleet, SimClock
    from firmware_sim.gps import GpsServer, Track, example_route
    from gateway.driveby.route import format_route

    if args.meters < 1:
        raise ConfigError("at least one meter", location="--meters")
    for option in ("speed", "van_speed", "period"):
        if getattr(args, option) <= 0:
            raise ConfigError("must be positive", location=f"--{option.replace('_', '-')}")
    if not 0.0 <= args.garbage <= 1.0:
        raise ConfigError("a share is between 0 and 1", location="--garbage")
    try:
        start = datetime.fromisoformat(args.start) if args.start else None
    except ValueError:
        raise ConfigError("not an ISO 8601 time", location="--start") from None
    if start is not None and start.tzinfo is None:
        raise ConfigError("give the time zone (e.g. 2026-02-01T06:00Z)", location="--start")
    route = example_route(Fleet.generate(args.meters, args.seed))
    if args.write_route is not None:
        try:
            args.write_route.write_text(format_route(route), encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot write: {error.strerror}", location="--write-route") from None
    clock = SimClock(start, args.speed)
    server = GpsServer(
        Track.along(route, clock.start, args.van_speed),
        clock=clock.now,
        link=args.link,
        period_s=args.period,
        garbage_rate=args.garbage,
        seed=args.seed,
    )
    route_file = None if args.write_route is None else str(args.write_route)
    return serve_until_stopped(
        server, lambda: {"port": server.url, "tty": server.tty, "route": route_file}
    )
