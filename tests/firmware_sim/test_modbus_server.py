"""Simulated Modbus flow meters: the values the model serves, the exception rules, raw RTU
exchanges on a real pty, a real TCP port on 127.0.0.1, faults, unplugging, clean stops."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import serial  # type: ignore[import-untyped]

from decoders.modbus_map import RegisterMap, decode_registers, parse_register_map, status_flags
from drivers.modbus_rtu_framing import (
    RtuFrame,
    RtuFramer,
    encode_rtu_frame,
    read_request,
    register_values,
)
from firmware_sim.modbus_meters import FlowMeterBank, frozen_clock
from firmware_sim.modbus_server import Faults, ModbusRtuSimulator, ModbusTcpSimulator
from metergate.profiles import load_register_map

MAGMETER = load_register_map("generic-magmeter")
LOW_WORD_FIRST = load_register_map("generic-magmeter-low-word-first")
T0 = datetime(2026, 2, 2, 7, 30, tzinfo=UTC)


class Clock:
    """A simulated clock that moves only when a test moves it."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def small_map(fields: str) -> RegisterMap:
    return parse_register_map(f'model = "t"\nmanufacturer = "t"\n{fields}', "test")


@pytest.fixture
def bank() -> FlowMeterBank:
    return FlowMeterBank.generate(MAGMETER, 3, seed=5, clock=frozen_clock(T0))


def simulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("Modbus")]


@pytest.fixture
def rtu(bank: FlowMeterBank, tmp_path: Path) -> Iterator[ModbusRtuSimulator]:
    with ModbusRtuSimulator(bank, link=tmp_path / "ttyMODBUS0") as simulator:
        yield simulator
    assert not simulator.errors
    assert not simulator_threads()


@pytest.fixture
def line(rtu: ModbusRtuSimulator) -> Iterator[serial.Serial]:
    port = serial.Serial(rtu.url, 9600, timeout=0.02)
    yield port
    port.close()


def exchange(port: serial.Serial, request: bytes, wait: float = 0.3) -> list[RtuFrame]:
    """Send a request, collect the answers that arrive within `wait` seconds."""
    port.reset_input_buffer()
    port.write(request)
    framer = RtuFramer("response")
    frames: list[RtuFrame] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not frames:
        frames += framer.feed(port.read(256))
    return frames


# --- the model --------------------------------------------------------------------------


@pytest.mark.parametrize("register_map", [MAGMETER, LOW_WORD_FIRST], ids=lambda m: m.model)
def test_served_registers_decode_to_the_fleet_model(register_map: RegisterMap) -> None:
    bank = FlowMeterBank.generate(register_map, 3, seed=5, clock=frozen_clock(T0))
    for unit_id, unit in bank.units.items():
        meter = unit.meter
        index, backward = meter.index_at(T0), meter.backward_at(T0)
        records = decode_registers(register_map, bank.registers(unit_id))
        got = {record.spec.quantity: record.value for record in records}
        assert got["volume_forward"] == index + backward
        assert got["volume_backward"] == backward
        if "volume" in got:
            assert got["volume"] == index
            assert got["flow_temperature"] == unit.temperature
            assert Decimal(6) <= unit.temperature < Decimal(12)
        flow = got["volume_flow"]
        assert isinstance(flow, Decimal)
        assert math.isclose(flow, meter.flow_at(T0), rel_tol=1e-6, abs_tol=1e-9)  # binary32


def test_totals_advance_with_the_flow() -> None:
    clock = Clock(T0)
    bank = FlowMeterBank.generate(MAGMETER, 1, seed=5, clock=clock)
    meter = bank.units[1].meter
    before = bank.values(1)
    clock.t = T0 + timedelta(hours=6)
    after = bank.values(1)
    assert after["forward_total"] > before["forward_total"]
    assert after["net_total"] == meter.index_at(clock.t)
    assert after["forward_total"] - before["forward_total"] == (
        meter.index_at(clock.t) - meter.index_at(T0)
    ) + (meter.backward_at(clock.t) - meter.backward_at(T0))


def test_alarm_bits_follow_the_flags_set(bank: FlowMeterBank) -> None:
    bank.set_flags(2, "backflow", "permanent_error")
    records = decode_registers(MAGMETER, bank.registers(2))
    assert bank.values(2)["alarms"] == 0b1010  # bits 1 and 3 of generic_magmeter.toml
    assert status_flags(MAGMETER, records) == ("backflow", "permanent_error")
    assert bank.values(1)["alarms"] == 0
    bank.set_flags(2, "dry")  # an empty pipe: the flow is NaN, decoded as no value
    records = decode_registers(MAGMETER, bank.registers(2))
    assert next(r.value for r in records if r.spec.name == "flow_rate") is None
    bank.clear_flags(2)
    assert bank.values(2)["alarms"] == 0
    with pytest.raises(ValueError, match="unknown flags"):
        bank.set_flags(1, "on_fire")


def test_integer_fields_roll_over_and_clamp() -> None:
    register_map = small_map(
        '[[fields]]\nname = "litres"\naddress = 0\ntype = "u16"\nscale = "0.001"\n'
        'quantity = "volume"\nunit = "m3"\n'
        '[[fields]]\nname = "t"\naddress = 1\ntype = "i16"\nscale = "0.001"\n'
        'quantity = "flow_temperature"\nunit = "C"\n'
    )
    bank = FlowMeterBank.generate(register_map, 1, seed=5, clock=frozen_clock(T0))
    index = bank.units[1].meter.index_at(T0)
    values = bank.values(1)
    assert values["litres"] == Decimal(int(index * 1000) % 65536).scaleb(-3)
    assert values["t"] == bank.units[1].temperature  # within i16 at 0.001 C
    bank.units[1].temperature = Decimal(40)
    assert bank.values(1)["t"] == Decimal("32.767")


def test_read_follows_the_exception_rules(bank: FlowMeterBank) -> None:
    assert bank.read(1, 3, 3002, 2) == [bank.registers(1)[("holding", a)] for a in (3002, 3003)]
    assert bank.read(1, 6, 3002, 1) == 0x01  # only 03 and 04
    assert bank.read(1, 3, 3002, 0) == 0x03
    assert bank.read(1, 3, 3002, 126) == 0x03
    assert bank.read(1, 3, 3002, 3) == 0x02  # 3004 is a gap
    assert bank.read(1, 4, 3002, 2) == 0x02  # nothing in the input table
    assert bank.read(9, 3, 3002, 2) is None  # not on the bus


def test_describe_names_each_unit(bank: FlowMeterBank) -> None:
    described = bank.describe()
    assert [m["unit_id"] for m in described] == [1, 2, 3]
    assert described[0]["meter_id"] == bank.units[1].meter.identity_at(T0).meter_id
    assert described[0]["medium"] == "water"


# --- RTU on a pty -----------------------------------------------------------------------


def test_rtu_answers_a_read_with_the_served_registers(
    rtu: ModbusRtuSimulator, bank: FlowMeterBank, line: serial.Serial
) -> None:
    (frame,) = exchange(line, read_request(2, 3, 3014, 8))
    expected = [bank.registers(2)[("holding", a)] for a in range(3014, 3022)]
    assert (frame.unit_id, frame.function, register_values(frame)) == (2, 3, expected)
    assert (rtu.answers, bank.requests) == (1, 1)


def test_rtu_exceptions_and_silences(line: serial.Serial) -> None:
    assert exchange(line, read_request(1, 3, 3004, 1)) == [RtuFrame(1, 0x83, b"\x02")]
    assert exchange(line, read_request(1, 4, 0, 1)) == [RtuFrame(1, 0x84, b"\x02")]
    # Diagnostics (08) is framed by the line's silence and answered "illegal function".
    assert exchange(line, encode_rtu_frame(1, 8, bytes(4))) == [RtuFrame(1, 0x88, b"\x01")]
    assert exchange(line, read_request(9, 3, 3002, 2), wait=0.15) == []  # not on the bus
    assert exchange(line, read_request(0, 3, 3002, 2), wait=0.15) == []  # broadcast


def test_rtu_finds_a_request_behind_noise(line: serial.Serial) -> None:
    (frame,) = exchange(line, b"\x01\x10\x00\x00\x00\x7b\xf6\x00" + read_request(1, 3, 3200, 4))
    assert (frame.unit_id, len(register_values(frame))) == (1, 4)


def test_rtu_faults_spoil_the_next_answers(rtu: ModbusRtuSimulator, line: serial.Serial) -> None:
    request = read_request(1, 3, 3002, 2)
    good = exchange(line, request)
    rtu.faults.inject("silent")
    assert exchange(line, request, wait=0.15) == []
    rtu.faults.inject("bad_crc")
    assert exchange(line, request, wait=0.15) == []
    rtu.faults.inject("truncate")
    assert exchange(line, request, wait=0.15) == []
    rtu.faults.inject("noise")
    assert exchange(line, request) == good
    assert rtu.faults.pending == 0
    rtu.write_noise(b"\xfe\xff")
    assert line.read(2) == b"\xfe\xff"
    with pytest.raises(ValueError, match="unknown fault"):
        rtu.faults.inject("fire")


def test_faults_garbage_is_as_long_as_the_answer() -> None:
    faults = Faults(seed=1)
    faults.inject("garbage", 2)
    assert len(faults.apply(bytes(9))) == 9
    assert faults.apply(b"ab") != b"ab"
    assert faults.apply(b"ab") == b"ab"


def test_rtu_unplug_and_replug(rtu: ModbusRtuSimulator, bank: FlowMeterBank) -> None:
    link = Path(rtu.url)
    first = os.path.realpath(link)
    port = serial.Serial(rtu.url, 9600, timeout=0.02)
    rtu.unplug()
    assert not link.exists()
    with pytest.raises(serial.SerialException):  # the device is gone under the open port
        port.write(read_request(1, 3, 3002, 2))
        port.read(16)
    port.close()
    rtu.replug()
    assert link.exists()
    assert os.path.realpath(link).startswith("/dev/pts/")
    with serial.Serial(rtu.url, 9600, timeout=0.02) as again:
        assert len(exchange(again, read_request(1, 3, 3002, 2))) == 1
    assert first.startswith("/dev/pts/")


def test_rtu_stop_removes_its_temporary_link(bank: FlowMeterBank) -> None:
    simulator = ModbusRtuSimulator(bank)
    with simulator:
        link = Path(simulator.url)
        assert link.is_symlink()
    assert not link.parent.exists()
    assert not simulator_threads()
    with pytest.raises(RuntimeError):
        simulator.start()


# --- TCP on 127.0.0.1 -------------------------------------------------------------------


def mbap_read(port: int, unit_id: int, function: int, start: int, count: int) -> bytes:
    """One raw Modbus TCP exchange: MBAP header (transaction 7, protocol 0, length), PDU."""
    pdu = bytes((function,)) + start.to_bytes(2, "big") + count.to_bytes(2, "big")
    request = (7).to_bytes(2, "big") + bytes(2) + (len(pdu) + 1).to_bytes(2, "big")
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(request + bytes((unit_id,)) + pdu)
        head = conn.recv(7)
        body = b""
        while len(body) < int.from_bytes(head[4:6], "big") - 1:
            body += conn.recv(260)
    return head[6:7] + body


def test_tcp_serves_registers_exceptions_and_unknown_units(bank: FlowMeterBank) -> None:
    with ModbusTcpSimulator(bank) as simulator:
        assert simulator.url == f"tcp://127.0.0.1:{simulator.port}"
        answer = mbap_read(simulator.port, 3, 3, 3200, 4)
        words = [bank.registers(3)[("holding", a)] for a in range(3200, 3204)]
        assert answer == b"\x03\x03\x08" + b"".join(w.to_bytes(2, "big") for w in words)
        assert mbap_read(simulator.port, 3, 3, 3004, 1) == b"\x03\x83\x02"
        assert mbap_read(simulator.port, 3, 4, 3002, 1) == b"\x03\x84\x02"
        assert mbap_read(simulator.port, 3, 1, 0, 1) == b"\x03\x81\x01"  # no coils
        # Too many registers: pymodbus refuses the request while decoding it, with 80 01, where
        # V1.1b3 §6.3 says 83 03. The reader never asks for more than 125.
        assert mbap_read(simulator.port, 3, 3, 3002, 126) == b"\x03\x80\x01"
        assert mbap_read(simulator.port, 42, 3, 3002, 2) == b"\x2a\x83\x0b"  # gateway: no answer
    assert not simulator.errors
    assert not simulator_threads()


def test_tcp_unplug_closes_the_port_and_replug_reopens_it(bank: FlowMeterBank) -> None:
    with ModbusTcpSimulator(bank) as simulator:
        port = simulator.port
        simulator.unplug()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        simulator.replug()
        assert simulator.port == port
        assert mbap_read(port, 1, 3, 3002, 2)[:3] == b"\x01\x03\x04"
    assert not simulator_threads()
