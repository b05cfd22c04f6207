"""`metergate sim modbus` and `metergate modbus read`: simulated flow meters and a reader.

`register(subparsers)` adds both to the `metergate` command. Bad input (an unknown profile, a
bad URL, a unit id outside 1..247) exits with status 2 and a message on stderr; a unit that
cannot be read exits with 1 after the others were read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from typing import Any

from metergate.cli import Subparsers, command_group, serve_until_stopped
from metergate.errors import ConfigError, MetergateError

MAX_UNIT = 247  # MODBUS over Serial Line V1.02 §2.2


def _unit_id(text: str) -> int:
    try:
        unit = int(text, 0)
    except ValueError:
        unit = -1
    if not 1 <= unit <= MAX_UNIT:
        raise argparse.ArgumentTypeError(f"unit id {text!r} is not in 1..{MAX_UNIT}")
    return unit


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 instant") from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset")
    return instant


def register(subparsers: Subparsers) -> None:
    """Add `sim modbus` and `modbus read` to the `metergate` command's subparsers."""
    sim = command_group(subparsers, "sim").add_parser(
        "modbus",
        help="serve simulated Modbus water flow meters (TCP, or RTU on a pty)",
        description='Print one JSON line, {"port": URL, "meters": [...]}, then serve until'
        " stopped (SIGINT or SIGTERM). The port is the URL to give `metergate modbus read`.",
    )
    sim.add_argument("--rtu", action="store_true", help="serve RTU on a pseudo-terminal")
    sim.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    sim.add_argument("--link", help="RTU: the path of the pty's symlink (default: a temp dir)")
    sim.add_argument("--profile", default="generic-magmeter", help="register map name or file")
    sim.add_argument("--meters", type=int, default=3, help="how many meters (default 3)")
    sim.add_argument("--first-unit", type=_unit_id, default=1, help="unit id of the first")
    sim.add_argument("--seed", type=int, default=0, help="fleet seed (default 0)")
    sim.add_argument("--start", type=_instant, help="simulated start, ISO 8601 (default now)")
    sim.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per second; 0 stands still"
    )
    sim.set_defaults(handler=_cmd_sim_modbus)

    commands = command_group(subparsers, "modbus")
    read = commands.add_parser(
        "read",
        help="read a register map from Modbus units",
        description="Read every field of a register map from each unit: tcp://host[:port], or"
        " a serial device for RTU (9600 8N1 unless --baudrate/--parity/--stopbits or"
        " rtu://DEVICE?baudrate=...&parity=... say otherwise).",
    )
    read.add_argument("--url", required=True, help="tcp://host[:port], a device, or rtu://...")
    read.add_argument("--profile", required=True, help="register map name or file")
    read.add_argument(
        "--unit",
        type=_unit_id,
        action="append",
        help="unit id 1-247, repeatable (default: the profile's)",
    )
    read.add_argument("--json", action="store_true", help="one JSON object per unit")
    read.add_argument("--timeout", type=float, default=1.0, help="seconds per answer")
    read.add_argument("--retries", type=int, default=1, help="retries per request")
    read.add_argument("--baudrate", type=int, default=9600)
    read.add_argument("--parity", default="N", choices=("N", "E", "O"))
    read.add_argument("--stopbits", type=int, default=1, choices=(1, 2))
    read.set_defaults(handler=_cmd_modbus_read)


def _fail(command: str, error: ConfigError) -> int:
    print(f"metergate {command}: {error}", file=sys.stderr)
    return 2


def _cmd_modbus_read(args: argparse.Namespace) -> int:
    from decoders.render import record_json, value_text
    from drivers.modbus import ModbusReader
    from metergate.profiles import load_register_map

    if args.timeout <= 0 or args.retries < 0:
        return _fail("modbus read", ConfigError("--timeout must be > 0, --retries >= 0"))
    try:
        register_map = load_register_map(args.profile)
        units = args.unit or [register_map.unit_id]
        reader = ModbusReader(
            args.url,
            units[0],
            register_map,
            timeout_s=args.timeout,
            retries=args.retries,
            baudrate=args.baudrate,
            parity=args.parity,
            stopbits=args.stopbits,
            connect_budget_s=args.timeout,
        )
    except ConfigError as error:
        return _fail("modbus read", error)
    # The reader raises typed errors with the reason; pymodbus's own log lines repeat them.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    failed = 0
    with reader:
        for unit in units:
            out: dict[str, Any] = {"url": args.url, "unit_id": unit, "model": register_map.model}
            try:
                reading = reader.read(unit)
            except MetergateError as error:
                failed += 1
                out["error"] = {"type": type(error).__name__, "message": str(error)}
                if not args.json:
                    print(f"unit {unit}: {out['error']['type']}: {error}", file=sys.stderr)
            else:
                out["status"] = {"flags": list(reading.flags)}
                out["records"] = [record_json(record) for record in reading.records]
                if not args.json:
                    print(f"unit {unit} ({register_map.model}):")
                    for record in reading.records:
                        text = value_text(record.value)
                        print(f"  {record.spec.name:<24} {text} {record.spec.unit}".rstrip())
                    print(f"  flags: {', '.join(reading.flags) or '-'}")
            if args.json:
                print(json.dumps(out), flush=True)
    return 1 if failed else 0


def _cmd_sim_modbus(args: argparse.Namespace) -> int:
    from firmware_sim.fleet import SimClock
    from firmware_sim.modbus_meters import FlowMeterBank
    from firmware_sim.modbus_server import ModbusRtuSimulator, ModbusTcpSimulator
    from metergate.profiles import load_register_map

    last = args.first_unit + args.meters - 1
    if args.meters < 1 or last > MAX_UNIT:
        message = f"--meters {args.meters} from unit {args.first_unit} leaves units 1..{MAX_UNIT}"
        return _fail("sim modbus", ConfigError(message))
    if not 0 <= args.port <= 0xFFFF or args.speed < 0:
        return _fail("sim modbus", ConfigError("--port is 0..65535 and --speed >= 0"))
    try:
        register_map = load_register_map(args.profile)
    except ConfigError as error:
        return _fail("sim modbus", error)
    clock = SimClock(args.start, args.speed).now
    bank = FlowMeterBank.generate(
        register_map, args.meters, args.seed, first_unit=args.first_unit, clock=clock
    )
    server: ModbusRtuSimulator | ModbusTcpSimulator
    if args.rtu:
        server = ModbusRtuSimulator(bank, link=args.link)
    else:
        server = ModbusTcpSimulator(bank, host=args.host, port=args.port)
    try:
        return serve_until_stopped(
            server,
            lambda: {
                "port": server.url,
                "protocol": "rtu" if args.rtu else "tcp",
                "profile": register_map.model,
                "meters": bank.describe(),
            },
        )
    except (OSError, RuntimeError) as error:  # pymodbus: RuntimeError when it cannot bind
        return _fail("sim modbus", ConfigError(f"cannot serve: {error}"))
