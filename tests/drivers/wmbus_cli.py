"""`metergate` with the wM-Bus commands, for subprocess tests, whether metergate/cli.py
registers them yet or not: `python -m tests.drivers.wmbus_cli sim wmbus ...`."""

from __future__ import annotations

import argparse
import sys

from metergate import cli, cli_wmbus

_build_parser = cli.build_parser


def build_parser() -> argparse.ArgumentParser:
    parser = _build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and "wmbus" not in action.choices:
            cli_wmbus.register(action)
    return parser


if __name__ == "__main__":
    cli.build_parser = build_parser
    sys.exit(cli.main(sys.argv[1:]))
