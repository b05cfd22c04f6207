"""Finding meters: the primary scan and the secondary search, over a real pty."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.decode import Decoder
from decoders.mbus_link import SecondaryAddress, secondary_matches
from drivers.mbus_master import GarbledReplyError
from drivers.mbus_search import (
    HEX_DIGITS,
    SEARCH_ORDER,
    parse_secondary,
    secondary_of,
    secondary_text,
)
from drivers.serial_port import SerialPort
from firmware_sim.fleet import BUILDING_MEDIA, DEFAULT_EPOCH, Fleet
from firmware_sim.mbus_slave import MbusSlave, SlaveBus
from firmware_sim.meter import Identity
from firmware_sim.serve_mbus import PtyMbusServer
from metergate.errors import DecodeError, DeviceTimeout
from tests.drivers.test_mbus_master import master_for
from tests.firmware_sim.meters import bus_of, make_meter

NOW = DEFAULT_EPOCH + timedelta(days=10)


def serve(bus: SlaveBus, tmp_path: Path) -> PtyMbusServer:
    return PtyMbusServer(bus, link=tmp_path / "ttyMBUS0", clock=lambda: NOW)


@pytest.fixture
def forty(tmp_path: Path) -> Iterator[PtyMbusServer]:
    """A bus of 40: 36 generated meters (batches of consecutive serials, serials shared by
    two makers) and 4 that share one serial and differ only in hex digits: KAM (M-field 2C2D)
    and KAN (2C2E), versions 1A and 1B, media 0C (heat, inlet) and 0D (heat/cooling)."""
    fleet = Fleet.generate(36, seed=21, media=BUILDING_MEDIA, events=False)
    assert len({m.identity.id for m in fleet}) < 36  # the fleet has shared serials
    twins = [
        make_meter("31415926", 37, "KAM", version=0x1A, medium=0x0C),
        make_meter("31415926", 38, "KAN", version=0x1A, medium=0x0C),
        make_meter("31415926", 39, "KAM", version=0x1B, medium=0x0C),
        make_meter("31415926", 40, "KAM", version=0x1A, medium=0x0D),
    ]
    bus = SlaveBus([MbusSlave(m) for m in (*fleet.meters, *twins)])
    with serve(bus, tmp_path) as server:
        yield server
    assert not server.errors


def expected(server: PtyMbusServer) -> set[bytes]:
    return {slave.secondary(NOW) for slave in server.bus.slaves}


def test_a_secondary_search_finds_exactly_the_meters_on_a_bus_of_40(
    forty: PtyMbusServer,
) -> None:
    with master_for(forty) as master:
        scan = master.scan_secondary()
    found = [r.secondary.to_bytes() for r in scan.found if r.secondary]
    assert len(found) == len(scan.found) == 40
    assert set(found) == expected(forty)
    assert scan.unresolved == []
    # Each meter was read once for its address, by the one telegram it had just sent.
    for readout in scan.found:
        assert len(readout.frames) == 1
        assert secondary_of(readout.frames[0]) == readout.secondary
    assert {s.selected for s in forty.bus.slaves} == {False}  # deselected at the end
    # The twins need every digit of the ID, then the M-field, version and medium nibbles.
    assert scan.probes > 8 * 10 + 3 * 15


def test_a_full_readout_while_searching(tmp_path: Path) -> None:
    bus = bus_of(make_meter("11111111", 1), make_meter("11111112", 2), history_months=24)
    with serve(bus, tmp_path) as server, master_for(server) as master:
        scan = master.scan_secondary(readout=True)
    assert len(scan.found) == 2
    for readout in scan.found:
        assert len(readout.frames) >= 3
        assert not Decoder().decode(readout.frames[-1]).more_records_follow


def test_meters_that_differ_only_where_both_have_an_f(tmp_path: Path) -> None:
    # F is the wildcard: no digit selects an F, so the search keeps that place open and
    # narrows down on the next one (versions 1F and 2F differ in their first digit).
    bus = bus_of(
        make_meter("55555555", 1, "KAM", version=0x1F),
        make_meter("55555555", 2, "KAM", version=0x2F),
    )
    with serve(bus, tmp_path) as server, master_for(server) as master:
        scan = master.scan_secondary()
    assert {r.secondary.version for r in scan.found if r.secondary} == {0x1F, 0x2F}
    assert scan.unresolved == []


def test_a_primary_scan_finds_meters_and_collisions(tmp_path: Path) -> None:
    bus = bus_of(
        make_meter("11111111", 1),
        make_meter("22222222", 2),
        make_meter("33333333", 5),
        make_meter("44444444", 7),
        make_meter("55555555", 7),
    )
    with serve(bus, tmp_path) as server, master_for(server) as master:
        scan = master.scan_primary(range(0, 10))
    assert scan.found == (1, 2, 5)
    assert scan.collisions == (7,)


def test_reading_by_secondary_address(tmp_path: Path) -> None:
    bus = bus_of(
        make_meter("12345678", 1, "KAM"),
        make_meter("12345678", 2, "KAN"),
        make_meter("87654321", 3, "GWF", version=0x3C, medium=0x07),
    )
    with serve(bus, tmp_path) as server, master_for(server) as master:
        readout = master.read(parse_secondary("876543211EE63C07"))
        assert readout.primary_address == 3
        assert Decoder().decode(readout.frames[0]).meter_id == "GWF-87654321"
        kan = master.read(SecondaryAddress("12345678", 0x2C2E))
        assert kan.primary_address == 2
        with pytest.raises(GarbledReplyError, match="several meters"):
            master.read(parse_secondary("12345678"))
        with pytest.raises(DeviceTimeout):
            master.read(parse_secondary("99999999"))


def test_the_search_order_covers_every_digit_once() -> None:
    assert sorted(SEARCH_ORDER) == list(range(16))
    assert SEARCH_ORDER[0] == 7  # the ID's last digit first
    assert "F" not in HEX_DIGITS and len(HEX_DIGITS) == 15


@given(
    st.text("0123456789ABCDEF", min_size=8, max_size=8),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
)
def test_secondary_text_round_trips(ident: str, m_field: int, version: int, medium: int) -> None:
    address = SecondaryAddress(ident, m_field, version, medium)
    text = secondary_text(address)
    assert len(text) == 16
    assert parse_secondary(text) == address
    assert parse_secondary(text.lower().replace("F", "?")) == address


def test_secondary_text_of_a_fleet_meter_matches_its_select_bytes() -> None:
    identity = Identity("GWF", "00182007", 0x35, 0x07)  # PROTOCOL_NOTES §8.1, the GWF frame
    assert identity.secondary_text == "001820071EE63507"
    parsed = parse_secondary(identity.secondary_text)
    assert parsed.to_bytes() == identity.secondary
    assert secondary_matches(parse_secondary("00182007").to_bytes(), identity.secondary)


@pytest.mark.parametrize("text", ["1234567", "12345678G", "", "123456781EE635"])
def test_bad_secondary_addresses(text: str) -> None:
    with pytest.raises(DecodeError):
        parse_secondary(text)


def test_ports_default_to_2400_baud_8e1() -> None:
    port = SerialPort("/dev/ttyUSB0")
    assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (2400, 8, "E", 1)
