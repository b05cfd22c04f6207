"""`metergate gateway run|check --config FILE`: the edge collector (issue 4).

`check` loads the configuration and the keys file and prints what the gateway would run, or the
first mistake with its file and key; `run` runs the gateway (gateway/daemon.py) until SIGTERM or
Ctrl-C. Both exit 2 on a configuration mistake, before anything is opened.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from metergate.cli import Subparsers, command_group
from metergate.errors import StorageError


def register(subparsers: Subparsers) -> None:
    gateway = command_group(subparsers, "gateway")
    run = gateway.add_parser(
        "run",
        help="read the configured meters and publish their readings until stopped",
        description="Read the receivers, buses and Modbus units of the configuration, spool"
        " every reading on disk and publish it over MQTT (DESIGN.md section 3). Stops on"
        " SIGTERM or Ctrl-C; what the broker has not acknowledged stays in the spool.",
    )
    check = gateway.add_parser(
        "check", help="check a configuration and its keys file, print what would run"
    )
    for parser in (run, check):
        parser.add_argument("--config", required=True, help="the gateway's TOML file")
    run.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    run.set_defaults(handler=_cmd_run)
    check.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from gateway.config import load_config, load_gateway_keys

    config = load_config(args.config)
    keys = load_gateway_keys(config.keys_file)
    print(f"gateway {config.gateway_id}: broker {config.broker.host}:{config.broker.port}")
    print(f"spool {config.spool_path}, time zone {config.timezone.key}, {len(keys)} keys")
    for receiver in config.receivers:
        print(f"receiver {receiver.device} mode {receiver.mode}")
    for bus in config.mbus_buses:
        addresses = bus.addresses if isinstance(bus.addresses, str) else len(bus.addresses)
        print(f"mbus {bus.port} {bus.baud} baud, {addresses} meters, every {bus.interval_s} s")
    for unit in config.modbus_units:
        print(f"modbus {unit.url} unit {unit.unit_id} {unit.profile}, every {unit.interval_s} s")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config, load_gateway_keys
    from gateway.daemon import Gateway

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_config(args.config)
    gateway = Gateway(config, load_gateway_keys(config.keys_file))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: gateway.stop_soon())
    try:
        gateway.start()
    except StorageError as exc:
        print(f"metergate gateway run: {exc}", file=sys.stderr)
        return 1
    gateway.wait()
    gateway.stop()
    return 0
