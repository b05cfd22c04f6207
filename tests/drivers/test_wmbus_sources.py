"""The wM-Bus receiver drivers on their other sources: device strings, replay files, stdin
and commands (rtl_wmbus pipelines), with their errors and their cleanup."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path

import pytest

from decoders.decode import Decoder
from decoders.wmbus_link import strip_crcs
from drivers.byte_sources import FileSource
from drivers.rtlwmbus_framing import encode_hex_line, encode_rtlwmbus_line
from drivers.wmbus_receiver import open_receiver, parse_device
from firmware_sim.wmbus_meters import Transmission
from metergate.errors import (
    ConfigError,
    DecodeError,
    TransportError,
)
from tests.drivers.processes import live_members
from tests.drivers.wmbus_sim import FAST, START, air, clean_transmissions

# --- device strings ------------------------------------------------------------------------


def test_device_strings(tmp_path: Path) -> None:
    capture = tmp_path / "capture.txt"
    capture.write_text("")
    assert parse_device("im871a:/dev/ttyUSB0").source == "serial"
    assert parse_device("amb8465:socket://127.0.0.1:5000").target == "socket://127.0.0.1:5000"
    assert parse_device(f"hex:{capture}").source == "file"
    assert parse_device(f"rtlwmbus:{capture}").source == "file"
    assert parse_device(f"im871a:{capture}").source == "serial"  # sticks are never files
    assert parse_device("hex:-").source == "stdin"
    assert parse_device("rtlwmbus:cmd:rtl_wmbus -s").target == "rtl_wmbus -s"
    assert parse_device("rtlwmbus").source == "command"
    assert parse_device("hex:/dev/ttyACM0").source == "serial"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "im871a",
        "im871a:",
        "imst:/dev/ttyUSB0",
        "/dev/ttyUSB0",
        "hex",
        "rtlwmbus:cmd:  ",
        "x" * 500,
    ],
)
def test_bad_device_strings_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_receiver(text, connect=False)
    assert caught.value.location == "--device"
    assert len(str(caught.value)) < 200


def test_an_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="link mode"):
        open_receiver("im871a:/dev/null", mode="T2", connect=False)


def test_a_port_that_does_not_exist_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError):
        open_receiver(f"im871a:{tmp_path / 'nothing'}")


# --- files, stdin and commands ---------------------------------------------------------------


def test_a_hex_replay_file_plays_to_its_end(tmp_path: Path) -> None:
    """Lines with format A and B CRCs, some damaged on air, comments, a bad line and one
    stripped frame. What comes through is what strip_crcs makes of each line: a damaged
    format A frame is refused, a damaged format B frame that keeps its length passes as a
    stripped frame (a known limit of telling the formats apart by length)."""
    txs = air().transmissions(START, START + timedelta(minutes=3))
    assert any(not tx.crc_ok for tx in txs)
    path = tmp_path / "capture.hex"
    lines = ["# a capture", ""] + [tx.on_air.hex() for tx in txs]
    path.write_text("\n".join([*lines, "not hex", "0x" + txs[0].frame.hex()]) + "\n")
    kept = []
    for tx in txs:
        try:
            kept.append((tx, strip_crcs(tx.on_air)[0]))
        except DecodeError:
            assert not tx.crc_ok
    with open_receiver(f"hex:{path}") as receiver:
        frames = [f.frame for f in receiver.frames(idle_timeout_s=1)]
    assert frames == [frame for _, frame in kept] + [txs[0].frame]
    assert receiver.stats.bad_checksums == len(txs) - len(kept)
    for tx, frame in kept:
        assert frame == tx.frame or not tx.crc_ok


def test_a_file_that_vanishes_is_no_reconnect(tmp_path: Path) -> None:
    source = FileSource(str(tmp_path / "missing.hex"))
    with pytest.raises(TransportError, match="cannot open"):
        source.open()


def _line_command(txs: list[Transmission], tmp_path: Path) -> str:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"".join(encode_rtlwmbus_line(tx.frame, mode=tx.link_mode) for tx in txs))
    return f"cat {path}"


def test_rtlwmbus_from_a_command_restarts_it_when_it_exits(tmp_path: Path) -> None:
    txs = [tx for tx in clean_transmissions(4) if tx.link_mode in ("T1", "C1")][:3]
    command = _line_command(txs, tmp_path)
    receiver = open_receiver(
        f"rtlwmbus:cmd:{command}", mode="C1T1", backoff=FAST, reconnect_budget_s=2
    )
    frames = [f.frame for f in islice(receiver.frames(idle_timeout_s=2), 2 * len(txs))]
    receiver.close()
    assert frames == [tx.frame for tx in txs] * 2
    assert receiver.stats.reconnects == 1


def test_a_command_that_cannot_run_is_a_transport_error(tmp_path: Path) -> None:
    receiver = open_receiver(
        f"rtlwmbus:cmd:{tmp_path}/no-such-rtl_wmbus", backoff=FAST, reconnect_budget_s=0.5
    )
    started = time.monotonic()
    with pytest.raises(TransportError, match="exited with status 127"):
        list(receiver.frames())
    assert time.monotonic() - started < 3
    receiver.close()


def test_closing_stops_the_whole_pipeline(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    receiver = open_receiver(f"rtlwmbus:cmd:echo $$ > {marker}; sleep 30 | cat")
    deadline = time.monotonic() + 2
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    group = int(marker.read_text())
    # The shell writes the marker before it starts the pipeline's two processes.
    while len(live_members(group)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    receiver.close()
    deadline = time.monotonic() + 2
    while live_members(group):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_stdin_is_read_to_its_end(tmp_path: Path) -> None:
    txs = clean_transmissions(3)
    script = (
        "from drivers.wmbus_receiver import open_receiver\n"
        "for f in open_receiver('hex:-').frames():\n"
        "    print(f.frame.hex())\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", script],
        input=b"".join(encode_hex_line(tx.on_air) for tx in txs) + b"garbage\n",
        capture_output=True,
        timeout=20,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert done.stdout.decode().split() == [tx.frame.hex() for tx in txs]


# PROTOCOL_NOTES §9.3, from wmbusmeters tests/test_nc1.sh: SEN water meter 33225544, 123 529 l.
RTL_WMBUS_LINE = (
    "T1;1;1;2019-04-03 19:00:42.000;97;148;33225544;"
    "0x1844AE4C4455223368077A55000000041389E20100023B0000"
)
# PROTOCOL_NOTES §1.6 (verified), from wmbusmeters simulations/simulation_dll_crcs.txt: a Sontex
# HCA telegram in format A, CRCs included.
SONTEX_FORMAT_A = "".join(
    (
        "3444EE4D813929271608", "811D",
        "7A51000000046D1912A62B036E000000", "5170",
        "426CE1F1436E00000002FF2C00000259", "D6D0",
        "D4090265FC0902FD66A000", "44C4",
    )
)  # fmt: skip


def test_the_worked_examples_come_through_the_line_sources(tmp_path: Path) -> None:
    rtl = tmp_path / "rtl.txt"
    rtl.write_text(RTL_WMBUS_LINE + "\n")
    with open_receiver(f"rtlwmbus:{rtl}") as receiver:
        (frame,) = list(receiver.frames())
    assert frame.link_mode == "T1"
    assert frame.device_time == datetime(2019, 4, 3, 19, 0, 42, tzinfo=UTC).timestamp()
    telegram = Decoder().decode(frame.frame, link_format="none")
    assert telegram.address is not None and telegram.address.meter_id == "SEN-33225544"
    assert [r.value for r in telegram.records if r.spec.quantity == "volume"] == [
        Decimal("123.529")
    ]
    capture = tmp_path / "sontex.hex"
    capture.write_text(SONTEX_FORMAT_A)  # no line end after the last line
    with open_receiver(f"hex:{capture}") as receiver:
        (frame,) = list(receiver.frames())
    assert frame.frame[0] == 0x34 and len(frame.frame) == 0x35
    telegram = Decoder().decode(frame.frame, link_format="none")
    assert telegram.address is not None and telegram.address.meter_id == "SON-27293981"
