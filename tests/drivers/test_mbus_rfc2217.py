"""The M-Bus master through `rfc2217://`: a real RFC 2217 server (pyserial's PortManager, in
firmware_sim.rfc2217_bridge) on 127.0.0.1 in front of a simulated bus on a pty."""

from __future__ import annotations

import contextlib
import socket
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from decoders.decode import Decoder
from drivers.mbus_master import MbusMaster
from drivers.mbus_timing import MbusTiming
from drivers.serial_port import Backoff, SerialPort
from firmware_sim.rfc2217_bridge import Rfc2217Bridge
from firmware_sim.serve_mbus import PtyMbusServer
from metergate.errors import TransportError
from tests.drivers.test_mbus_master import meters_bus

pytestmark = [
    pytest.mark.timeout(60),
    # pyserial 3.5's client calls Thread.setDaemon and setName, deprecated since Python 3.10.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217"),
]

# Two more hops than a bare pty (the bridge's thread, a TCP connection, pyserial's reader
# thread): the first byte of an answer gets more time than FAST in test_mbus_master.py gives.
TIMING = MbusTiming(baud=2400, latency_s=0.02, answer_timeout_s=0.15)
SPEEDS = {300: termios.B300, 2400: termios.B2400}


@contextlib.contextmanager
def bridged_bus(
    tmp_path: Path, *, echo: bool = False
) -> Iterator[tuple[PtyMbusServer, Rfc2217Bridge]]:
    server = PtyMbusServer(meters_bus(history_months=24), link=tmp_path / "ttyMBUS0", echo=echo)
    with server, Rfc2217Bridge(server.url) as bridge:
        yield server, bridge
    assert not server.errors
    assert not bridge.errors


def open_master(bridge: Rfc2217Bridge, baud: int = 2400, budget_s: float = 5.0) -> MbusMaster:
    return MbusMaster.open(bridge.url, baud=baud, timing=TIMING, reopen_budget_s=budget_s)


@pytest.mark.parametrize("baud", [2400, 300])
def test_meters_are_read_through_rfc2217_with_the_line_set_to_8e1(
    tmp_path: Path, baud: int
) -> None:
    with bridged_bus(tmp_path) as (server, bridge), open_master(bridge, baud) as master:
        readouts = [master.read(address) for address in (1, 2, 3)]
        line = bridge.line
        assert line is not None
        # The client's settings reached the bridge: 8E1 at `baud` (it opened the device at
        # pyserial's 9600 8N1) ...
        assert (line.baudrate, line.bytesize, line.parity, line.stopbits) == (baud, 8, "E", 1)
        # ... and the speed reached the pty itself (parity and data size cannot: see the
        # bridge's docstring).
        attributes = termios.tcgetattr(line.device.fileno())
        assert attributes[4] == attributes[5] == SPEEDS[baud]
        assert bridge.connections == 1
    for readout, slave in zip(readouts, server.bus.slaves, strict=True):
        assert readout.secondary is not None
        assert readout.secondary.id == slave.meter.identity.id
        assert len(readout.frames) == slave.telegrams_sent >= 2  # with DIF 1F in between
        assert Decoder().decode(readout.frames[0]).meter_id == slave.meter.identity.meter_id


def test_a_secondary_search_through_rfc2217_carries_ff_both_ways(tmp_path: Path) -> None:
    """Wildcard masks are FF bytes, Telnet's IAC: the client doubles them and PortManager
    undoes that. An echoing level converter sends them back, which the bridge doubles."""
    with bridged_bus(tmp_path, echo=True) as (server, bridge), open_master(bridge) as master:
        scan = master.scan_secondary()
        assert master.stats.echoes == master.stats.requests
        expected = sorted(slave.secondary(server.clock()) for slave in server.bus.slaves)
    assert sorted(r.secondary.to_bytes() for r in scan.found if r.secondary) == expected
    assert scan.unresolved == []


def test_the_master_reconnects_when_the_bus_behind_the_bridge_comes_back(
    tmp_path: Path,
) -> None:
    with bridged_bus(tmp_path) as (server, bridge), open_master(bridge) as master:
        first = master.read(2)
        server.unplug()
        server.replug()
        again = master.read(2)
        assert master.stats.reopens >= 1
        assert bridge.connections >= 2
    assert first.secondary == again.secondary


def test_while_the_bus_is_away_the_bridge_refuses_connections(tmp_path: Path) -> None:
    with bridged_bus(tmp_path) as (server, bridge):
        with open_master(bridge, budget_s=0.2) as master:
            master.read(1)
            server.unplug()
            with pytest.raises(TransportError):
                master.read(1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", bridge.port), timeout=2).close()
        server.replug()
        # Opened by the first read, with the master's backoff: the bridge listens again once
        # it finds the device, within its retry_s.
        port = SerialPort(bridge.url, backoff=Backoff(initial_s=0.02, maximum_s=0.2))
        with MbusMaster(port, timing=TIMING, reopen_budget_s=5.0) as master:
            assert master.read(3).secondary is not None


def test_a_bridge_to_a_missing_device_does_not_start(tmp_path: Path) -> None:
    bridge = Rfc2217Bridge(str(tmp_path / "ttyUSB9"))
    with pytest.raises(OSError, match="ttyUSB9"):  # pyserial's SerialException is an OSError
        bridge.start()
    assert bridge.line is None
