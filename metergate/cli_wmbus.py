"""`metergate sim wmbus` and `metergate wmbus listen`.

`sim wmbus` puts a seeded fleet of radio meters behind a simulated USB receiver on a pty,
prints one JSON line `{"port": ..., "meters": [...]}` (identities, keys, security mode,
interval, radio habits) and serves until it gets SIGTERM or SIGINT. `wmbus listen` is the
collector: one line per telegram, or with --json one object per telegram, the telegram_json of
DESIGN.md §2, or the error object when the telegram does not decode.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from metergate.cli import Subparsers, command_group, serve_until_stopped
from metergate.errors import ConfigError, DecodeError, MetergateError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from decoders.decode import Decoder
    from decoders.telegram import Telegram
    from drivers.received import ReceivedFrame


RECEIVERS = ("im871a", "amb8465", "rtlwmbus", "hex")
LISTEN_MODES = ("T1", "C1", "S1", "C1T1")


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a rate is between 0 and 1")
    return value


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or any(m not in ("T1", "C1", "S1") for m in modes):
        raise argparse.ArgumentTypeError("link modes are a comma-separated list of T1, C1, S1")
    return modes


def register(subparsers: Subparsers) -> None:
    sim = command_group(subparsers, "sim")
    simulate = sim.add_parser(
        "wmbus",
        help="wireless M-Bus meters behind a simulated USB receiver on a pty",
        description="Print {'port': ..., 'meters': [...]} as one JSON line, then serve until"
        " stopped (SIGTERM or Ctrl-C).",
    )
    simulate.add_argument("--receiver", required=True, choices=RECEIVERS)
    simulate.add_argument("--meters", type=int, required=True)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--link", help="path of the pty's symlink")
    simulate.add_argument("--start", help="simulated time at start (ISO 8601; default now)")
    simulate.add_argument("--speed", type=float, default=1.0, help="simulated s per real s")
    simulate.add_argument(
        "--modes", type=_modes, default=("T1", "C1"), help="link modes of the meters (T1,C1)"
    )
    simulate.add_argument(
        "--corrupt", type=_rate, default=0.02, help="share of telegrams damaged on air"
    )
    simulate.add_argument(
        "--faults", type=_rate, default=0.01, help="share of messages spoiled on the serial line"
    )
    simulate.set_defaults(handler=_cmd_sim_wmbus)

    wmbus = command_group(subparsers, "wmbus")
    listen = wmbus.add_parser(
        "listen",
        help="decode the telegrams a wM-Bus receiver hears",
        description="KIND:PORT is im871a:PORT, amb8465:PORT, rtlwmbus:PORT|FILE|-|cmd:COMMAND"
        " or hex:PORT|FILE|-. Prints one line per telegram, or with --json one object.",
    )
    listen.add_argument("--device", required=True, metavar="KIND:PORT")
    listen.add_argument("--mode", default="T1", choices=LISTEN_MODES, help="link mode")
    listen.add_argument("--keys", metavar="FILE", help='TOML: [keys] "KAM-12345678" = "HEX"')
    listen.add_argument("--count", type=int, help="stop after this many telegrams")
    listen.add_argument("--json", action="store_true", help="one JSON object per telegram")
    listen.add_argument("--timeout", type=float, help="give up after this many s without one")
    listen.add_argument(
        "--reconnect", type=float, default=60.0, help="s to wait for a vanished device"
    )
    listen.set_defaults(handler=_cmd_listen)


def _cmd_sim_wmbus(args: argparse.Namespace) -> int:
    from firmware_sim.fleet import Fleet, SimClock
    from firmware_sim.receivers import DEVICES
    from firmware_sim.serve_wmbus import ReceiverServer
    from firmware_sim.wmbus_meters import WmbusFleet

    if args.meters < 1:
        raise ConfigError("at least one meter", location="--meters")
    try:
        start = datetime.fromisoformat(args.start) if args.start else None
    except ValueError:
        raise ConfigError("not an ISO 8601 time", location="--start") from None
    if start is not None and start.tzinfo is None:
        raise ConfigError("give the time zone (e.g. 2026-02-01T00:00Z)", location="--start")
    clock = SimClock(start, args.speed)
    fleet = Fleet.generate(args.meters, args.seed)
    air = WmbusFleet(fleet, modes=args.modes, corruption_rate=args.corrupt)
    server = ReceiverServer(
        DEVICES[args.receiver](),
        air,
        clock=clock.now,
        link=args.link,
        fault_rate=args.faults,
        seed=args.seed,
    )
    return serve_until_stopped(
        server,
        lambda: {
            "port": server.url,
            "tty": server.tty,
            "receiver": args.receiver,
            "start": clock.start.isoformat(),
            "speed": args.speed,
            "meters": air.describe(),
        },
    )


def _text_line(received: ReceivedFrame, result: Telegram | DecodeError) -> str:
    from decoders.wmbus_link import parse_dll

    rssi = "" if received.rssi_dbm is None else f" {received.rssi_dbm} dBm"
    mode = f" {received.link_mode}" if received.link_mode else ""
    if isinstance(result, DecodeError):
        try:
            meter = parse_dll(received.frame)[1].meter_id
        except DecodeError:
            meter = received.frame[:10].hex()
        return f"{meter}{mode}{rssi}: {type(result).__name__}: {result.message}"
    values = " ".join(
        f"{r.spec.quantity}={r.value}"
        + (f" {r.spec.unit}" if r.spec.unit not in ("", "date", "datetime") else "")
        for r in result.records
        if r.spec.storage == 0 and r.value is not None
    )
    meter = result.address.meter_id if result.address else "?"
    return f"{meter}{mode}{rssi}: {values}"


@dataclass(slots=True)
class Tally:
    telegrams: int = 0
    failed: int = 0


def listen(
    frames: Iterable[ReceivedFrame],
    decoder: Decoder,
    keys: Mapping[str, bytes],
    out: TextIO,
    *,
    as_json: bool,
    tally: Tally | None = None,
) -> Tally:
    """Decode and print each frame, counting telegrams and those that failed."""
    from decoders.render import error_json, telegram_json
    from gateway.pipeline import decode_with_keys

    tally = tally or Tally()
    for received in frames:
        result: Telegram | DecodeError
        try:
            result = decode_with_keys(decoder, received.frame, keys, protocol="wmbus")
        except DecodeError as error:
            result = error
            tally.failed += 1
        tally.telegrams += 1
        if not as_json:
            out.write(_text_line(received, result))
        elif isinstance(result, DecodeError):
            out.write(json.dumps(error_json(result)))
        else:
            out.write(json.dumps(telegram_json(result)))
        out.write("\n")
        out.flush()
    return tally


def _terminate(signum: int, frame: object) -> None:
    # A second SIGTERM kills at once, should the way out hang (a stdout nobody reads).
    signal.signal(signum, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def _cmd_listen(args: argparse.Namespace) -> int:
    from itertools import islice

    from decoders.decode import Decoder
    from drivers.wmbus_receiver import open_receiver
    from metergate.keys import KeyRing, load_keys
    from metergate.profiles import load_profiles

    if args.count is not None and args.count < 1:
        raise ConfigError("at least one telegram", location="--count")
    keys = load_keys(args.keys) if args.keys else KeyRing()
    receiver = open_receiver(
        args.device, mode=args.mode, reconnect_budget_s=args.reconnect, connect=False
    )
    decoder = Decoder(load_profiles())
    # SIGTERM unwinds like Ctrl-C, so that close() stops an rtl_wmbus pipeline with us.
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    tally = Tally()
    code = 0
    try:
        frames = islice(receiver.frames(idle_timeout_s=args.timeout), args.count)
        listen(frames, decoder, keys, sys.stdout, as_json=args.json, tally=tally)
    except MetergateError as error:
        # TransportError (gone for longer than --reconnect), DeviceTimeout, DeviceError.
        print(f"metergate wmbus listen: {error}", file=sys.stderr)
        code = 1
    finally:
        receiver.close()
        stats = receiver.stats
        print(
            f"metergate wmbus listen: {tally.telegrams} telegrams ({tally.failed} not decoded)"
            f" in {time.monotonic() - started:.1f} s; {stats.discarded_bytes} bytes discarded,"
            f" {stats.bad_checksums} bad checksums, {stats.reconnects} reconnects",
            file=sys.stderr,
        )
    return code
