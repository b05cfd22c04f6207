"""`metergate sim mbus`, `metergate mbus scan` and `metergate mbus read`.

`sim mbus` puts a seeded fleet of wired meters on a pty (or a TCP port), prints one JSON line
`{"port": ..., "meters": [...]}` and serves until it gets SIGTERM or SIGINT. `mbus scan` and
`mbus read` are the master: one line per meter, or with --json one object per meter, the
telegram_json of DESIGN.md §2 with the records of all its telegrams.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from decoders.mbus_link import BAUD_RATES, SecondaryAddress
from metergate.cli import Subparsers, command_group, serve_until_stopped
from metergate.errors import DecodeError, MetergateError

if TYPE_CHECKING:
    from decoders.decode import Decoder
    from drivers.mbus_master import MbusMaster, Readout


def _add_master_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="/dev/ttyUSB0, socket://HOST:PORT, ...")
    parser.add_argument("--baud", type=int, default=2400, choices=BAUD_RATES)
    parser.add_argument("--json", action="store_true", help="one JSON object per meter")
    parser.add_argument("--key", help="AES-128 key (32 hex digits) for encrypted telegrams")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for an answer (default: what EN 13757-2 allows at --baud)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.05,
        help="seconds allowed on top of the standard's times for the adapter and the OS",
    )
    parser.add_argument("--retries", type=int, default=2)


def register(subparsers: Subparsers) -> None:
    sim = command_group(subparsers, "sim")
    simulate = sim.add_parser(
        "mbus",
        help="wired M-Bus meters on a pty or a TCP port",
        description="Print {'port': ..., 'meters': [...]} as one JSON line, then serve the"
        " bus until stopped (SIGTERM or Ctrl-C).",
    )
    simulate.add_argument("--meters", type=int, required=True)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--baud", type=int, choices=BAUD_RATES, help="keep the pace of this baud rate"
    )
    simulate.add_argument("--tcp", type=int, metavar="PORT", help="TCP on 127.0.0.1 (0: any)")
    simulate.add_argument("--link", help="path of the pty's symlink")
    simulate.add_argument("--start", help="simulated time at start (ISO 8601; default now)")
    simulate.add_argument("--speed", type=float, default=1.0, help="simulated s per real s")
    simulate.add_argument(
        "--encrypted", action="store_true", help="security mode 5 with each meter's key"
    )
    simulate.set_defaults(handler=_cmd_sim_mbus)

    commands = command_group(subparsers, "mbus")
    scan = commands.add_parser("scan", help="find and read every meter on the bus")
    _add_master_options(scan)
    scan.add_argument("--secondary", action="store_true", help="search by secondary address")
    scan.set_defaults(handler=_cmd_scan)
    read = commands.add_parser("read", help="read one meter")
    _add_master_options(read)
    read.add_argument(
        "--address", required=True, help="primary address 0-254, or a secondary address"
    )
    read.set_defaults(handler=_cmd_read)


def _cmd_sim_mbus(args: argparse.Namespace) -> int:
    from firmware_sim.fleet import BUILDING_MEDIA, Fleet, SimClock
    from firmware_sim.mbus_slave import SlaveBus
    from firmware_sim.serve_mbus import MbusServer, PtyMbusServer, TcpMbusServer

    start = datetime.fromisoformat(args.start) if args.start else None
    clock = SimClock(start, args.speed)
    fleet = Fleet.generate(args.meters, args.seed, media=BUILDING_MEDIA)
    bus = SlaveBus.from_fleet(fleet, encrypted=args.encrypted)
    server: MbusServer
    if args.tcp is not None:
        server = TcpMbusServer(bus, port=args.tcp, baud=args.baud, clock=clock.now)
    else:
        server = PtyMbusServer(bus, link=args.link, baud=args.baud, clock=clock.now)
    meters = [meter.describe() for meter in fleet.meters]
    return serve_until_stopped(
        server, lambda: {"port": server.url, "baud": args.baud, "meters": meters}
    )


def _master(args: argparse.Namespace) -> MbusMaster:
    from drivers.mbus_master import MbusMaster
    from drivers.mbus_timing import MbusTiming

    key = _key(args.key)
    timing = MbusTiming(baud=args.baud, latency_s=args.latency, answer_timeout_s=args.timeout)
    return MbusMaster.open(
        args.port,
        baud=args.baud,
        timing=timing,
        retries=args.retries,
        keys=(lambda _address: key) if key else None,
    )


def _key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise DecodeError("an AES-128 key must be 32 hex digits")  # never echo the key text
    return key


def readout_json(readout: Readout, key: bytes | None, decoder: Decoder) -> dict[str, Any]:
    """One meter's telegrams as one telegram_json object (records of all, in order)."""
    from decoders.render import error_json, telegram_json
    from drivers.mbus_search import secondary_text

    try:
        telegrams = [decoder.decode(frame, key) for frame in readout.frames]
    except DecodeError as error:
        out = error_json(error)
    else:
        records = tuple(record for telegram in telegrams for record in telegram.records)
        out = telegram_json(replace(telegrams[0], records=records, more_records_follow=False))
        out["telegrams"] = len(telegrams)
    if readout.secondary is not None:
        out["secondary_address"] = secondary_text(readout.secondary)
    out["primary_address"] = readout.primary_address
    return out


def _line(meter: dict[str, Any]) -> str:
    if "error" in meter:
        error = meter["error"]
        where = meter.get("secondary_address") or meter.get("primary_address")
        return f"{where}: {error['type']}: {error['message']}"
    volume = next(
        (
            f"{r['value']} {r['unit']}"
            for r in meter["records"]
            if r["quantity"] == "volume" and r["storage"] == 0 and r["tariff"] == 0
        ),
        "-",
    )
    return (
        f"address {meter['primary_address']:3d}  {meter.get('secondary_address', '-')}"
        f"  {meter['meter_id']}  {meter['medium']}  volume {volume}"
        f"  telegrams {meter['telegrams']}"
    )


def _emit(meter: dict[str, Any], as_json: bool, out: TextIO) -> None:
    out.write(json.dumps(meter) if as_json else _line(meter))
    out.write("\n")
    out.flush()


def _failure(where: str, error: MetergateError) -> dict[str, Any]:
    return {"error": {"type": type(error).__name__, "message": str(error), "address": where}}


def _cmd_scan(args: argparse.Namespace) -> int:
    from decoders.decode import Decoder
    from metergate.profiles import load_profiles

    decoder = Decoder(load_profiles())
    status = 0
    try:
        key = _key(args.key)
        with _master(args) as master:
            if args.secondary:
                scan = master.scan_secondary(readout=True)
                for readout in scan.found:
                    _emit(readout_json(readout, key, decoder), args.json, sys.stdout)
                for mask in scan.unresolved:
                    print(f"metergate mbus scan: meters at {mask} stay ambiguous", file=sys.stderr)
                    status = 1
                return status
            primary = master.scan_primary()
            for address in primary.collisions:
                print(f"metergate mbus scan: several meters at {address}", file=sys.stderr)
                status = 1
            for address in primary.found:
                try:
                    readout = master.read(address)
                except MetergateError as error:
                    _emit(_failure(str(address), error), args.json, sys.stdout)
                    status = 1
                    continue
                _emit(readout_json(readout, key, decoder), args.json, sys.stdout)
    except MetergateError as error:
        print(f"metergate mbus scan: {error}", file=sys.stderr)
        return 1
    return status


def _address(text: str) -> int | SecondaryAddress:
    from drivers.mbus_search import parse_secondary

    if text.isdigit() and len(text) <= 3:
        return int(text)
    return parse_secondary(text)


def _cmd_read(args: argparse.Namespace) -> int:
    from decoders.decode import Decoder
    from metergate.profiles import load_profiles

    try:
        key = _key(args.key)
        address = _address(args.address)
        with _master(args) as master:
            readout = master.read(address)
    except MetergateError as error:
        print(f"metergate mbus read: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"metergate mbus read: {error}", file=sys.stderr)
        return 2
    _emit(readout_json(readout, key, Decoder(load_profiles())), args.json, sys.stdout)
    return 0
