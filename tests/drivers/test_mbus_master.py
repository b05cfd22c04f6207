"""The M-Bus master against simulated slaves on a real pty and a real TCP socket: reads, the
FCB after lost and spoiled answers, typed errors, and surviving an unplugged adapter."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from decoders.decode import Decoder
from decoders.mbus_link import LongFrame, parse_frame
from drivers.mbus_master import GarbledReplyError, MbusMaster
from drivers.mbus_timing import BusStats, MbusTiming
from drivers.serial_port import Backoff, SerialPort
from firmware_sim.mbus_slave import SlaveBus
from firmware_sim.serve_mbus import MbusServer, PtyMbusServer, TcpMbusServer
from metergate.errors import DeviceTimeout, TransportError
from tests.firmware_sim.meters import bus_of, make_meter

# The simulator answers within a millisecond (0.3 ms at worst, measured), all at once: the
# standard's 330 bit times + 50 ms at 2400 Bd would only slow the tests down, so the master
# waits 15 ms for silence and times gaps as at 38400 Bd. The pace of a real 2400 Bd bus has
# its own test below.
FAST = MbusTiming(baud=38400, latency_s=0.003, answer_timeout_s=0.015)


def meters_bus(history_months: int = 12) -> SlaveBus:
    return bus_of(
        make_meter("12345678", 1),
        make_meter("23456789", 2, "ELS", version=0x0A, medium=0x07),
        make_meter("34567890", 3, "GWF", version=0x3C, medium=0x0D),
        history_months=history_months,
    )


def master_for(server: MbusServer, **options: object) -> MbusMaster:
    port = SerialPort(server.url, backoff=Backoff(initial_s=0.02, maximum_s=0.2))
    port.open()
    settings: dict[str, object] = {"timing": FAST, "reopen_budget_s": 3.0}
    settings.update(options)
    return MbusMaster(port, **settings)  # type: ignore[arg-type]


@pytest.fixture(params=["pty", "tcp"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MbusServer]:
    bus = meters_bus(history_months=24)
    made: MbusServer
    if request.param == "pty":
        made = PtyMbusServer(bus, link=tmp_path / "ttyMBUS0")
    else:
        made = TcpMbusServer(bus)
    with made:
        yield made
    assert not made.errors


def volumes(frames: tuple[bytes, ...]) -> dict[int, object]:
    """Volume by storage number over all telegrams; a storage seen twice fails."""
    out: dict[int, object] = {}
    for frame in frames:
        for record in Decoder().decode(frame).records:
            if record.quantity == "volume":
                assert record.storage not in out
                out[record.storage] = record.value
    return out


def test_a_primary_read_collects_every_telegram(server: MbusServer) -> None:
    with master_for(server) as master:
        readout = master.read(2)
    slave = server.bus.slaves[1]
    now = server.clock()
    assert readout.primary_address == 2
    assert readout.secondary is not None and readout.secondary.id == "23456789"
    assert len(readout.frames) >= 3
    assert slave.telegrams_sent == len(readout.frames)
    found = volumes(readout.frames)
    assert sorted(found) == list(range(25))
    month_ends = slave.meter.month_end_indexes(now, 24)
    assert [found[n] for n in range(1, 25)] == [index for _, index in month_ends]


@pytest.mark.parametrize("fault", ["silent", "truncate", "garbage", "corrupt"])
def test_a_spoiled_telegram_is_asked_for_again_with_the_same_fcb(
    server: MbusServer, fault: str
) -> None:
    slave = server.bus.slaves[0]
    with server.lock:
        # SND_NKE and the first telegram arrive; the second is spoiled once.
        slave.faults.extend([None, None, fault])  # type: ignore[list-item]
    with master_for(server) as master:
        readout = master.read(1)
        assert master.stats.retries == 1
    # Nothing skipped, nothing twice: the slave repeated its second telegram.
    assert sorted(volumes(readout.frames)) == list(range(25))
    assert slave.telegrams_sent == len(readout.frames)


def test_garbage_every_time_is_a_garbled_reply(server: MbusServer) -> None:
    with server.lock:
        server.bus.slaves[0].faults.extend([None, "garbage", "garbage", "garbage"])
    with master_for(server) as master, pytest.raises(GarbledReplyError) as caught:
        master.read(1)
    assert caught.value.data
    assert isinstance(caught.value, TransportError)


def test_a_truncated_answer_every_time_is_a_garbled_reply(server: MbusServer) -> None:
    with server.lock:
        server.bus.slaves[2].faults.extend([None, "truncate", "truncate", "truncate"])
    with master_for(server, retries=2) as master, pytest.raises(GarbledReplyError):
        master.read(3)


def test_silence_is_a_device_timeout(server: MbusServer) -> None:
    with master_for(server, retries=1) as master:
        started = time.monotonic()
        with pytest.raises(DeviceTimeout):
            master.read(77)
        assert time.monotonic() - started >= 2 * FAST.answer_timeout(5)
        assert master.stats.silent == 2


def test_an_echoing_level_converter_is_heard_through(tmp_path: Path) -> None:
    server = PtyMbusServer(meters_bus(), link=tmp_path / "tty", echo=True)
    with server, master_for(server) as master:
        readout = master.read(3)
        assert master.stats.echoes == 1 + len(readout.frames)
    assert Decoder().decode(readout.frames[0]).meter_id == "GWF-34567890"


def test_a_replugged_adapter_is_survived(tmp_path: Path) -> None:
    server = PtyMbusServer(meters_bus(history_months=1), link=tmp_path / "ttyUSB0")

    def unplug_and_replug() -> None:
        time.sleep(0.15)
        server.unplug()
        time.sleep(0.4)
        server.replug()

    with server, master_for(server) as master:
        thread = threading.Thread(target=unplug_and_replug)
        thread.start()
        reads = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline or thread.is_alive():
            readout = master.read(1 + reads % 3)
            assert isinstance(parse_frame(readout.frames[0]), LongFrame)
            reads += 1
        thread.join()
        assert master.stats.reopens >= 1
        assert master.port.reopens >= 1
    assert reads > 10


def test_a_tcp_gateway_that_restarts_is_survived() -> None:
    with TcpMbusServer(meters_bus(history_months=1)) as server, master_for(server) as master:
        master.read(1)
        server.unplug()
        timer = threading.Timer(0.3, server.replug)
        timer.start()
        readout = master.read(2)
        timer.join()
        assert readout.primary_address == 2
        assert master.stats.reopens >= 1


def test_a_vanished_device_is_a_transport_error(tmp_path: Path) -> None:
    with PtyMbusServer(meters_bus(), link=tmp_path / "ttyUSB0") as server:
        master = master_for(server, reopen_budget_s=0.3)
        master.read(1)
        server.unplug()
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            master.read(1)
        assert not isinstance(caught.value, (DeviceTimeout, GarbledReplyError))
        assert time.monotonic() - started < 3
        master.close()


@pytest.mark.parametrize(
    "url", ["/nonexistent/ttyUSB9", "socket://127.0.0.1:1", "nonsense://x", "socket://nohost"]
)
def test_ports_that_cannot_open_are_transport_errors(url: str) -> None:
    with pytest.raises(TransportError):
        MbusMaster.open(url)


def test_the_pace_of_a_2400_baud_bus(tmp_path: Path) -> None:
    """The one test with the byte-time emulation: the read cannot beat the wire, and the
    master's standard timeouts waste little beyond it."""
    bus = bus_of(make_meter("12345678", 1), history_months=1)
    server = PtyMbusServer(bus, link=tmp_path / "tty", baud=2400)
    timing = MbusTiming(baud=2400, latency_s=0.02)
    with server, master_for(server, timing=timing) as master:
        started = time.monotonic()
        readout = master.read(1)
        found = master.scan_primary(range(1, 3))
        elapsed = time.monotonic() - started
        limit = master.stats.physical_limit_s(timing)
    assert found.found == (1,)
    assert master.stats.silent == 1
    # SND_NKE + E5, REQ_UD2 + RSP_UD, then two SND_NKE probes (one answered, one silent).
    wire_bytes = 5 + 1 + 5 + len(readout.frames[0]) + 5 + 1 + 5
    assert limit == pytest.approx(wire_bytes * 11 / 2400 + 3 * 11 / 2400 + 330 / 2400 + 0.05)
    assert limit <= elapsed < limit * 1.5 + 0.3


def test_the_standards_times() -> None:
    # PROTOCOL_NOTES §8.5: 8E1 is 11 bit times a character; a slave answers between 11 bit
    # times and 330 bit times + 50 ms after the request's last bit.
    timing = MbusTiming(baud=2400, latency_s=0.0)
    assert timing.byte_s == pytest.approx(11 / 2400)
    assert timing.turnaround_min_s == pytest.approx(11 / 2400)
    assert timing.turnaround_max_s == pytest.approx(330 / 2400 + 0.05)
    assert timing.answer_timeout(5) == pytest.approx(5 * 11 / 2400 + 330 / 2400 + 0.05)
    assert MbusTiming(baud=300).answer_timeout(17) > 1.5
    stats = BusStats(answered=1, silent=1, request_bytes=10, reply_bytes=1)
    assert stats.physical_limit_s(timing) == pytest.approx(
        11 * 11 / 2400 + 11 / 2400 + 330 / 2400 + 0.05
    )
