"""The Modbus reader against the simulated flow meters over real TCP on 127.0.0.1 and RTU on a
real pty: values, exception responses, timeouts, garbage, a vanished device and its return."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from decoders.modbus_map import RegisterMap, decode_registers, parse_register_map, status_flags
from drivers.modbus import (
    ModbusEndpoint,
    ModbusExceptionError,
    ModbusReader,
    parse_modbus_url,
)
from firmware_sim.modbus_meters import FlowMeterBank, frozen_clock
from firmware_sim.modbus_server import ModbusRtuSimulator, ModbusTcpSimulator
from metergate.errors import ConfigError, DeviceError, DeviceTimeout, TransportError
from metergate.profiles import load_register_map

MAGMETER = load_register_map("generic-magmeter")
LOW_WORD_FIRST = load_register_map("generic-magmeter-low-word-first")
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
TIMEOUT = 0.2

Simulator = ModbusTcpSimulator | ModbusRtuSimulator


class FakeTime:
    """The reader's clock and sleep: sleeping moves the clock, and may run a hook."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: dict[int, object] = {}

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        hook = self.on_sleep.get(len(self.sleeps))
        if callable(hook):
            hook()


def make_simulator(kind: str, bank: FlowMeterBank, tmp_path: Path) -> Simulator:
    if kind == "tcp":
        return ModbusTcpSimulator(bank)
    return ModbusRtuSimulator(bank, link=tmp_path / "ttyMODBUS0")


@pytest.fixture(params=["tcp", "rtu"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Simulator]:
    bank = FlowMeterBank.generate(MAGMETER, 3, seed=11, clock=frozen_clock(T0))
    with make_simulator(request.param, bank, tmp_path) as simulator:
        yield simulator
    assert not simulator.errors


def reader_for(simulator: Simulator, **options: object) -> ModbusReader:
    settings: dict[str, object] = {"timeout_s": TIMEOUT, "retries": 0} | options
    return ModbusReader(
        simulator.url,
        1,
        simulator.bank.register_map,
        **settings,  # type: ignore[arg-type]
    )


def test_reads_match_the_served_registers(served: Simulator) -> None:
    bank = served.bank
    bank.set_flags(3, "backflow")
    with reader_for(served) as reader:
        for unit_id in bank.units:
            reading = reader.read(unit_id)
            served_registers = bank.registers(unit_id)
            assert reading.unit_id == unit_id
            assert reading.registers == tuple(sorted(served_registers.items()))
            assert reading.records == decode_registers(MAGMETER, served_registers)
            assert reading.flags == status_flags(MAGMETER, reading.records)
    assert reading.flags == ("backflow",)
    assert reader.reads == 3


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_low_word_first_map(kind: str, tmp_path: Path) -> None:
    bank = FlowMeterBank.generate(LOW_WORD_FIRST, 2, seed=4, clock=frozen_clock(T0))
    with make_simulator(kind, bank, tmp_path) as simulator, reader_for(simulator) as reader:
        reading = reader.read(2)
    assert reading.records == decode_registers(LOW_WORD_FIRST, bank.registers(2))
    forward = next(r for r in reading.records if r.spec.name == "forward_total")
    meter = bank.units[2].meter
    assert forward.value == meter.index_at(T0) + meter.backward_at(T0)


def test_rtu_settings_from_the_url(tmp_path: Path) -> None:
    # 19200 8E1, the serial line's default (V1.02 §2.5.1); a pty takes no parity, so the reader
    # leaves it off there and the read still works.
    bank = FlowMeterBank.generate(MAGMETER, 1, seed=4, clock=frozen_clock(T0))
    with ModbusRtuSimulator(bank, link=tmp_path / "tty") as simulator:
        url = f"rtu://{simulator.url}?baudrate=19200&parity=E"
        with ModbusReader(url, 1, MAGMETER, timeout_s=TIMEOUT) as reader:
            assert reader.endpoint.parity == "E"
            assert reader.read().registers == tuple(sorted(bank.registers(1).items()))


def unserved_map(table: str) -> RegisterMap:
    text = (
        'model = "probe"\nmanufacturer = "t"\n[[fields]]\nname = "x"\naddress = 4000\n'
        f'table = "{table}"\ntype = "u16"\nquantity = "volume"\nunit = "m3"\n'
    )
    return parse_register_map(text, "test")


@pytest.mark.parametrize("table", ["holding", "input"])
def test_an_illegal_address_is_a_device_error(served: Simulator, table: str) -> None:
    with ModbusReader(served.url, 1, unserved_map(table), timeout_s=TIMEOUT) as reader:
        with pytest.raises(ModbusExceptionError) as caught:
            reader.read()
        assert isinstance(caught.value, DeviceError)
        assert caught.value.exception_code == 0x02
        assert caught.value.function_code == (3 if table == "holding" else 4)
        assert "illegal data address" in str(caught.value)
        reader.register_map = MAGMETER  # the port is fine after an exception response
        assert reader.read().unit_id == 1


def test_a_unit_that_is_not_there_times_out(served: Simulator) -> None:
    # RTU: nobody answers. TCP: the gateway answers 0B, "target device failed to respond".
    with reader_for(served) as reader:
        with pytest.raises(DeviceTimeout):
            reader.read(99)
        assert reader.read(1).unit_id == 1


@pytest.mark.parametrize("fault", ["silent", "garbage", "truncate", "bad_crc", "noise"])
def test_spoiled_answers_give_typed_errors_and_the_next_read_works(
    served: Simulator, fault: str
) -> None:
    if fault == "bad_crc" and isinstance(served, ModbusTcpSimulator):
        pytest.skip("TCP has no CRC")
    with reader_for(served) as reader:
        expected = reader.read(2)
        served.faults.inject(fault)
        if fault == "silent":
            with pytest.raises(DeviceTimeout):
                reader.read(2)
        elif fault == "noise":  # the answer behind the noise may be found, or the exchange lost
            with contextlib.suppress(TransportError):
                assert reader.read(2) == expected
        else:  # bytes came, but no answer in them: not a timeout
            with pytest.raises(TransportError) as caught:
                reader.read(2)
            assert not isinstance(caught.value, DeviceTimeout)
        assert served.faults.pending == 0
        assert reader.read(2) == expected


def test_a_retry_absorbs_one_spoiled_answer(served: Simulator) -> None:
    with reader_for(served, retries=1) as reader:
        served.faults.inject("silent")
        assert reader.read(1).unit_id == 1


def test_noise_on_the_rtu_line_between_reads(tmp_path: Path) -> None:
    bank = FlowMeterBank.generate(MAGMETER, 1, seed=11, clock=frozen_clock(T0))
    simulator = ModbusRtuSimulator(bank, link=tmp_path / "tty")
    with simulator, reader_for(simulator) as reader:
        expected = reader.read()
        simulator.write_noise(bytes(range(0xF0, 0x100)) + b"\x01\x03\xf0")
        # The kernel hands bytes to the pty's other side a little later; noise that is still on
        # its way when the request goes out spoils that exchange (the "noise" fault).
        time.sleep(0.05)
        assert reader.read() == expected


def test_a_vanished_device_then_recovery(served: Simulator) -> None:
    fake = FakeTime()
    reader = reader_for(served, sleep=fake.sleep, clock=fake.clock, connect_budget_s=1.0)
    with reader:
        expected = reader.read(1)
        served.unplug()
        with pytest.raises(TransportError):
            reader.read(1)
        with pytest.raises(TransportError, match="cannot connect"):
            reader.read(1)
        assert fake.sleeps  # it tried again, waiting by the backoff
        served.replug()
        assert reader.read(1).records == expected.records
        assert reader.reconnects == 1


def test_replugging_during_the_backoff_is_survived(served: Simulator) -> None:
    fake = FakeTime()
    fake.on_sleep[3] = served.replug
    with reader_for(served, sleep=fake.sleep, clock=fake.clock, retries=1) as reader:
        expected = reader.read(1)
        served.unplug()
        assert reader.read(1).records == expected.records
    assert fake.sleeps == [0.05, 0.1, 0.2]
    assert reader.reconnects == 1


def test_the_backoff_doubles_up_to_its_budget() -> None:
    with socket.socket() as probe:  # a port on 127.0.0.1 that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeTime()
    url = f"tcp://127.0.0.1:{port}"
    reader = ModbusReader(
        url, 1, MAGMETER, sleep=fake.sleep, clock=fake.clock, connect_budget_s=5.0
    )
    with reader, pytest.raises(TransportError, match="7 attempts"):
        reader.read()
    # Backoff(): 50 ms, doubling, at most 2 s; the next wait would end past the 5 s budget.
    assert fake.sleeps == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]


def test_a_missing_serial_port_is_a_transport_error(tmp_path: Path) -> None:
    fake = FakeTime()
    reader = ModbusReader(
        str(tmp_path / "ttyUSB9"), 1, MAGMETER, sleep=fake.sleep, clock=fake.clock
    )
    with reader, pytest.raises(TransportError):
        reader.read()


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("tcp://127.0.0.1:5020", ModbusEndpoint("tcp", "127.0.0.1", 5020)),
        ("tcp://meter.local", ModbusEndpoint("tcp", "meter.local", 502)),
        ("tcp://[::1]:1502/", ModbusEndpoint("tcp", "::1", 1502)),
        ("/dev/ttyUSB0", ModbusEndpoint("rtu", "/dev/ttyUSB0", 0)),
        (
            "rtu:///dev/ttyUSB0?baudrate=19200&parity=e&stopbits=2",
            ModbusEndpoint("rtu", "/dev/ttyUSB0", 0, 19200, "E", 2),
        ),
        ("rtu://COM3", ModbusEndpoint("rtu", "COM3", 0)),
    ],
)
def test_urls(url: str, endpoint: ModbusEndpoint) -> None:
    assert parse_modbus_url(url) == endpoint


def test_serial_defaults_come_from_the_arguments_and_the_url_wins() -> None:
    endpoint = parse_modbus_url("rtu:///dev/ttyS1?baudrate=4800", baudrate=19200, parity="O")
    assert (endpoint.baudrate, endpoint.parity) == (4800, "O")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://host",
        "tcp://",
        "tcp://host:0",
        "tcp://host:99999",
        "tcp://host/path",
        "tcp://host?x=1",
        "rtu://",
        "rtu:///dev/ttyS0?baud=9600",
        "rtu:///dev/ttyS0?baudrate=fast",
        "rtu:///dev/ttyS0?parity=X",
        "rtu:///dev/ttyS0?bytesize=7",
        "rtu:///dev/ttyS0?stopbits=3",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="bad Modbus URL"):
        parse_modbus_url(url)


@pytest.mark.parametrize("unit_id", [0, 248, 255, -1, True])
def test_unit_ids_outside_1_to_247_are_config_errors(unit_id: int) -> None:
    with pytest.raises(ConfigError, match=r"1\.\.247"):
        ModbusReader("tcp://127.0.0.1:1", unit_id, MAGMETER)
    reader = ModbusReader("tcp://127.0.0.1:1", 1, MAGMETER)
    with pytest.raises(ConfigError):
        reader.read(unit_id)
