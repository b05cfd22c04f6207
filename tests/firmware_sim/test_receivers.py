"""The simulated receivers as pure devices: their answers to the host's commands, what they
hear in each mode, and their indications read back by the drivers' framers."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import amb8465_framing as amb
from drivers import im871a_framing as imst
from drivers.rtlwmbus_framing import (
    HexLineFramer,
    RtlWmbusFramer,
    parse_hex_line,
    parse_rtlwmbus_line,
)
from firmware_sim.fleet import Fleet
from firmware_sim.receivers import (
    FAULTS,
    Amb8465Device,
    HexLineDevice,
    Im871aDevice,
    ReceiverDevice,
    RtlWmbusDevice,
    amb8465_rssi,
    im871a_rssi,
    spoil,
)
from firmware_sim.wmbus_meters import Transmission, WmbusFleet
from metergate.errors import ChecksumError

START = datetime(2026, 2, 1, 6, tzinfo=UTC)
# PROTOCOL_NOTES §9.1, from wmbusmeters: DEVMGMT_SET_CONFIG_REQ for T1 with RSSI on.
SET_T1_WITH_RSSI = bytes.fromhex("A5010306000203300100")
# PROTOCOL_NOTES §9.2 [AMB]: SET_MODE_REQ to T2-Other (hears T1), firmware version request.
AMB_SET_T1 = bytes.fromhex("FF 04 01 08 F2")
AMB_FWV = bytes.fromhex("FF0C00F3")


@cache
def air() -> tuple[Transmission, ...]:
    fleet = WmbusFleet(Fleet.generate(30, 4), modes=("T1", "C1", "S1"), corruption_rate=0.1)
    return tuple(fleet.transmissions(START, START + timedelta(minutes=10)))


def of_mode(mode: str, *, crc_ok: bool = True) -> Transmission:
    return next(tx for tx in air() if tx.link_mode == mode and tx.crc_ok == crc_ok)


def hci(data: bytes) -> list[imst.HciMessage]:
    return imst.Im871aFramer().feed(data)


def test_im871a_answers_ping_and_device_info() -> None:
    device = Im871aDevice(uid=0xCAFE)
    (pong,) = hci(device.receive(imst.ping_request()))
    assert (pong.endpoint, pong.msg_id, pong.fcs) == (1, imst.DEVMGMT_PING_RSP, True)
    (info,) = hci(device.receive(imst.device_info_request()))
    assert imst.device_info_of(info).uid == 0xCAFE
    assert imst.device_info_of(info).module_type == imst.MODULE_IM871A


def test_im871a_takes_the_worked_example_link_mode_request() -> None:
    device = Im871aDevice()
    assert not device.hears(of_mode("T1"))
    # Byte by byte, after line noise: the device's framer finds the request.
    answer = b""
    for byte in b"\x00\x13" + SET_T1_WITH_RSSI:
        answer += device.receive(bytes((byte,)))
    (response,) = hci(answer)
    assert response.msg_id == imst.DEVMGMT_SET_CONFIG_RSP
    assert response.payload == bytes((imst.STATUS_OK,))
    assert (device.link_mode, device.rssi, device.timestamp) == (0x03, True, False)
    assert device.hears(of_mode("T1"))
    assert not device.hears(of_mode("C1"))
    assert not device.hears(of_mode("T1", crc_ok=False))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        bytes.fromhex("00020B"),  # link mode 0B does not exist
        bytes.fromhex("0002"),  # link mode announced, missing
        bytes.fromhex("00020330"),  # IIFlag2 announces two fields, none sent
        bytes.fromhex("000203300101FF"),  # a byte too many
    ],
)
def test_im871a_refuses_a_bad_configuration_and_keeps_its_own(payload: bytes) -> None:
    device = Im871aDevice()
    request = imst.encode_hci(imst.ENDPOINT_DEVMGMT, imst.DEVMGMT_SET_CONFIG_REQ, payload)
    (response,) = hci(device.receive(request))
    assert response.payload != bytes((imst.STATUS_OK,))
    assert (device.link_mode, device.rssi) == (0x00, False)


def test_im871a_ignores_what_it_does_not_know() -> None:
    device = Im871aDevice()
    assert device.receive(imst.encode_hci(imst.ENDPOINT_HWTEST, 0x01)) == b""
    assert device.receive(bytes(range(0xA0, 0xB0))) == b""
    assert device.unknown_requests == 1


@pytest.mark.parametrize("mode", ["C1A", "C1B", "C1T1", "S1", "T1"])
def test_im871a_indication_reads_back(mode: str) -> None:
    device = Im871aDevice()
    device.receive(imst.set_link_mode_request(mode, timestamp=True))
    heard = [tx for tx in air() if device.hears(tx)]
    assert heard
    assert all(tx.crc_ok and tx.link_mode in mode for tx in heard)
    framer = imst.Im871aFramer(require_fcs=True)
    messages = framer.feed(b"".join(device.indication(tx, tx.frame) for tx in heard))
    frames = [imst.wmbus_frame_of(m, mode) for m in messages]
    assert [f.frame for f in frames if f] == [tx.frame for tx in heard]
    # RSSI: the level in dBm comes back exactly (half-dB steps).
    assert [f.rssi_dbm for f in frames if f] == [tx.level_dbm for tx in heard]
    assert all(f is not None and isinstance(f.device_time, int) for f in frames)


def test_im871a_power_on_forgets_the_configuration() -> None:
    device = Im871aDevice()
    device.receive(SET_T1_WITH_RSSI)
    device.power_on()
    assert (device.link_mode, device.rssi) == (0x00, False)


def test_amb8465_set_mode_with_the_manual_frame() -> None:
    device = Amb8465Device()
    assert not device.hears(of_mode("T1"))
    (confirm,) = amb.Amb8465Framer().feed(device.receive(AMB_SET_T1))
    assert amb.status_of(confirm) == 0
    assert device.hears(of_mode("T1")) and not device.hears(of_mode("C1"))
    (refused,) = amb.Amb8465Framer().feed(device.receive(amb.encode_command(4, b"\x05")))
    assert amb.status_of(refused) == 1  # 05 is the meter mode T1, no collector mode
    assert device.mode == 0x08


def test_amb8465_parameters_take_effect_at_reset() -> None:
    device = Amb8465Device(rssi=0)
    framer = amb.Amb8465Framer()
    (value,) = framer.feed(device.receive(amb.get_request(amb.PARAM_RSSI_ENABLE, 1)))
    assert amb.parameters_of(value) == (amb.PARAM_RSSI_ENABLE, b"\x00")
    (written,) = framer.feed(device.receive(amb.set_request(amb.PARAM_RSSI_ENABLE, b"\x01")))
    assert amb.status_of(written) == 0
    assert not device.rssi
    (reset,) = framer.feed(device.receive(amb.encode_command(amb.CMD_RESET_REQ)))
    assert reset.command == amb.CMD_RESET_REQ | amb.CONFIRM
    assert device.rssi
    (version,) = framer.feed(device.receive(AMB_FWV))
    assert amb.firmware_version_of(version) == (1, 3, 0)


@pytest.mark.parametrize(
    "request_frame",
    [
        amb.encode_command(amb.CMD_GET_REQ, b"\xff\x02"),  # past the end of the memory
        amb.encode_command(amb.CMD_GET_REQ, b"\x05"),
        amb.encode_command(amb.CMD_SET_REQ, b"\x45\x02\x01"),  # count 2, one value
        amb.encode_command(amb.CMD_SET_REQ, b"\xff\x02\x01\x01"),
        amb.encode_command(amb.CMD_SET_MODE_REQ, b""),
    ],
)
def test_amb8465_refuses_bad_requests(request_frame: bytes) -> None:
    device = Amb8465Device()
    before = bytes(device.memory)
    (answer,) = amb.Amb8465Framer().feed(device.receive(request_frame))
    assert amb.status_of(answer) == 1
    assert bytes(device.memory) == before


def test_amb8465_indication_reads_back_with_rssi() -> None:
    device = Amb8465Device(rssi=1, mode=0x09)
    heard = [tx for tx in air() if device.hears(tx)]
    assert {tx.link_mode for tx in heard} == {"C1", "T1"}
    stream = b"".join(device.indication(tx, tx.frame) for tx in heard)
    messages = amb.Amb8465Framer(rssi_attached=True).feed(stream)
    frames = [amb.wmbus_frame_of(m, "C1T1") for m in messages]
    assert [f.frame for f in frames if f] == [tx.frame for tx in heard]
    assert [f.rssi_dbm for f in frames if f] == [tx.level_dbm for tx in heard]


def test_amb8465_transparent_mode_drops_the_command_frame() -> None:
    tx = of_mode("T1")
    device = Amb8465Device(cmd_out=0, mode=0x08)
    assert device.indication(tx, tx.frame) == bytes((len(tx.frame) - 1,)) + tx.frame[1:]


def test_rtlwmbus_lines_read_back_and_report_crc_failures() -> None:
    device = RtlWmbusDevice()
    assert not device.hears(of_mode("S1"))
    good, bad = of_mode("C1"), of_mode("T1", crc_ok=False)
    frame = parse_rtlwmbus_line(device.indication(good, good.frame).decode().rstrip("\n"))
    assert (frame.frame, frame.link_mode, frame.device_time) == (
        good.frame,
        "C1",
        good.at.timestamp(),
    )
    with pytest.raises(ChecksumError):
        parse_rtlwmbus_line(device.indication(bad, bad.frame).decode().rstrip("\n"))


def test_hex_lines_carry_the_frame_as_it_was_on_air() -> None:
    device = HexLineDevice()
    for tx in air()[:100]:
        line = device.indication(tx, tx.frame).decode()
        assert bytes.fromhex(line) == tx.on_air
        if tx.crc_ok:
            frame = parse_hex_line(line)
            assert frame is not None and frame.frame == tx.frame
        else:
            with pytest.raises(ChecksumError):
                parse_hex_line(line, tx.frame_format)


@pytest.mark.parametrize("level", [Decimal(-105), Decimal("-74.5"), Decimal(-50), Decimal(-20)])
def test_rssi_bytes_invert_the_drivers_conversions(level: Decimal) -> None:
    assert imst.rssi_to_dbm(im871a_rssi(level)) == level
    assert amb.rssi_to_dbm(amb8465_rssi(level)) == level


def _receiving(which: int) -> tuple[ReceiverDevice, Callable[[bytes], list[bytes]]]:
    """A device hearing everything, and a feed of the driver's framer giving frames."""
    if which == 0:
        im871a = Im871aDevice(initial_mode=0x0A)
        im871a.rssi = True
        hci_framer = imst.Im871aFramer()
        return im871a, lambda data: [
            f.frame for m in hci_framer.feed(data) if (f := imst.wmbus_frame_of(m))
        ]
    if which == 1:
        amb_framer = amb.Amb8465Framer()
        return Amb8465Device(rssi=1, mode=0x09), lambda data: [
            f.frame for m in amb_framer.feed(data) if (f := amb.wmbus_frame_of(m))
        ]
    line_framer = RtlWmbusFramer() if which == 2 else HexLineFramer()
    device = RtlWmbusDevice(frozenset({"T1", "C1", "S1"})) if which == 2 else HexLineDevice()
    return device, lambda data: [f.frame for f in line_framer.feed(data)]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32), which=st.integers(0, 3), rate=st.floats(0.05, 0.5))
def test_spoiled_messages_cost_no_more_than_themselves_and_the_next(
    seed: int, which: int, rate: float
) -> None:
    """After garbage, a cut or a changed byte the framers find their feet again: every clean
    message that does not directly follow a spoiled one comes through, and nothing comes
    through that was not sent, with two known exceptions where a cut may bring one frame that
    was never sent. The AMB8465's one-byte XOR checksum passes one false start in 256 (the
    cut message's length reaching into the next one). A cut hex line runs into the next line,
    and strip_crcs takes a line longer than its L as a frame with L wrong, as some real meters
    send it."""
    device, feed = _receiving(which)
    rng = random.Random(seed)
    heard = [tx for tx in air() if tx.crc_ok][:60]
    stream = b""
    must_arrive = []
    previous_spoiled = False
    cuts = 0
    for tx in heard:
        message = device.indication(tx, tx.frame)
        if rng.random() < rate:
            fault = rng.choice(FAULTS[:3])
            cuts += fault == "cut"
            message = spoil(fault, message, rng, text=device.text)
            previous_spoiled = True
        else:
            if not previous_spoiled:
                must_arrive.append(tx.frame)
            previous_spoiled = False
        stream += message
    frames = feed(stream)
    invented = set(frames) - {tx.frame for tx in heard}
    weak = isinstance(device, (HexLineDevice, Amb8465Device))
    assert len(invented) <= (cuts if weak else 0)
    for frame in must_arrive:
        assert frame in frames


def test_spoil_knows_its_faults() -> None:
    rng = random.Random(0)
    line = b"0123456789ABCDEF\n"
    assert spoil("flip", line, rng, text=True).count(b"?") == 1
    assert spoil("flip", line, rng, text=True).endswith(b"\n")
    assert len(spoil("cut", line, rng, text=True)) < len(line)
    garbage = spoil("garbage", line, rng, text=True)
    assert garbage.endswith(line) and garbage.count(b"\n") == 2
    with pytest.raises(ValueError, match="unknown fault"):
        spoil("short", line, rng, text=True)
