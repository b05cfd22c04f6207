"""The `metergate` command: one entry point, a subcommand per part."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TextIO, TypeAlias

from metergate.errors import ConfigError, DecodeError

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


GROUPS = {
    "sim": "simulated meters and receivers that speak the real protocols",
    "mbus": "read wired M-Bus meters",
    "wmbus": "wireless M-Bus receivers",
    "modbus": "read Modbus meters",
    "gateway": "the edge collector: meters to MQTT",
    "db": "the metergate database",
    "ingest": "store readings from MQTT in the database",
    "monthly": "monthly billing readings: fill them from the readings",
    "api": "the HTTP API: serve it, manage its tokens",
    "keys": "meters' AES keys: store them and decode the frames that waited for them",
    "meters": "the meter registry",
}


def command_group(subparsers: Subparsers, name: str) -> Subparsers:
    """The subcommands of `name` (one of GROUPS), made by whichever part comes first.

    Several parts add to one group: `sim mbus`, `sim wmbus` and `sim modbus` live in their own
    modules.
    """
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=GROUPS[name], description=GROUPS[name])
        return parser.add_subparsers(dest=f"{name}_command", required=True)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=f"{name}_command", required=True)


class Served(Protocol):
    def start(self) -> object: ...
    def stop(self) -> None: ...


def serve_until_stopped(server: Served, head: Callable[[], dict[str, object]]) -> int:
    """The `sim` commands' way: start `server`, print `head()` as one JSON line (the port it
    names exists only once started), serve until SIGTERM or Ctrl-C, stop the server."""
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.start()
        try:
            print(json.dumps(head()), flush=True)
            stop.wait()
        finally:
            server.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _parse_key(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        # The message must not repeat the text: it may be most of a real key.
        raise DecodeError("an AES-128 key must be 32 hex digits")
    return key


def decode_lines(lines: Iterable[str], default_key: str | None, out: TextIO) -> int:
    """Decode `HEX [KEYHEX]` lines; one JSON object per line, in order.

    Blank lines and lines starting with # (comments in a file of frames) are skipped.
    """
    from decoders.decode import Decoder
    from decoders.render import error_json, telegram_json
    from metergate.profiles import load_profiles

    decoder = Decoder(load_profiles())
    write = out.write
    dumps = json.dumps
    count = 0
    for line in lines:
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        count += 1
        try:
            if len(parts) > 2:
                raise DecodeError("a line holds a frame in hex and at most one key")
            try:
                frame = bytes.fromhex(parts[0])
            except ValueError:
                raise DecodeError("the frame is not an even number of hex digits") from None
            key = _parse_key(parts[1] if len(parts) == 2 else default_key)
            result = telegram_json(decoder.decode(frame, key))
        except DecodeError as exc:
            result = error_json(exc)
        write(dumps(result))
        write("\n")
    out.flush()
    return count


def _cmd_decode(args: argparse.Namespace) -> int:
    if args.stdin and args.frames:
        raise SystemExit("metergate decode: give frames as arguments or --stdin, not both")
    if not args.stdin and not args.frames:
        raise SystemExit("metergate decode: no frames given (HEX... or --stdin)")
    try:
        _parse_key(args.key)
    except DecodeError as exc:
        print(f"metergate decode: --key: {exc.message}", file=sys.stderr)
        return 2
    lines = sys.stdin if args.stdin else args.frames
    decode_lines(lines, args.key, sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metergate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    decode = commands.add_parser(
        "decode",
        help="decode M-Bus and wireless M-Bus frames to JSON",
        description="Print one JSON object per frame (DESIGN.md section 2). Input lines are"
        " 'HEX [KEYHEX]'; a bad line prints an error object and decoding goes on.",
    )
    decode.add_argument("frames", nargs="*", metavar="HEX", help="frames in hex")
    decode.add_argument("--key", help="AES-128 key (32 hex digits) for frames without their own")
    decode.add_argument("--stdin", action="store_true", help="read 'HEX [KEYHEX]' lines")
    decode.set_defaults(handler=_cmd_decode)
    from metergate import (
        cli_api,
        cli_driveby,
        cli_gateway,
        cli_ingest,
        cli_mbus,
        cli_modbus,
        cli_registry,
        cli_wmbus,
        demo,
    )

    for part in (
        cli_mbus,
        cli_wmbus,
        cli_modbus,
        cli_gateway,
        cli_ingest,
        cli_api,
        cli_driveby,
        cli_registry,
        demo,
    ):
        part.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"metergate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
