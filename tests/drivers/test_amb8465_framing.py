"""AMB8465 command-mode framing: worked examples of PROTOCOL_NOTES §9.2 and the Amber manual,
streams, round trips, fuzzing."""

from __future__ import annotations

from decimal import Decimal
from functools import reduce
from operator import xor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.amb8465_framing import (
    CMD_DATA_IND,
    CMD_SERIALNO_REQ,
    CMD_SET_CHANNEL_REQ,
    DEVICE_COMMANDS,
    HOST_COMMANDS,
    PARAM_RSSI_ENABLE,
    PARAM_UART_CMD_OUT_ENABLE,
    Amb8465Framer,
    AmberMessage,
    data_indication,
    encode_command,
    encode_message,
    firmware_version_confirm,
    firmware_version_of,
    firmware_version_request,
    get_confirm,
    get_request,
    parameters_of,
    rssi_to_dbm,
    set_confirm,
    set_mode_confirm,
    set_mode_request,
    set_request,
    status_of,
    wmbus_frame_of,
)
from drivers.received import ReceivedFrame
from metergate.errors import FrameError, UnsupportedError
from tests.drivers.feeding import FEEDERS, Feed, in_chunks, whole

# PROTOCOL_NOTES §9.3, from wmbusmeters tests/test_nc1.sh: a stripped SEN water meter frame.
SEN_FRAME = bytes.fromhex("1844AE4C4455223368077A55000000041389E20100023B0000")


def xor_all(data: bytes) -> int:
    return reduce(xor, data, 0)


# PROTOCOL_NOTES §9.2 table of collector modes (the T1 frame also in the Amber manual).
@pytest.mark.parametrize(
    ("mode", "frame"),
    [
        ("T1", "FF 04 01 08 F2"),
        ("S1", "FF 04 01 03 F9"),
        ("S1-m", "FF 04 01 03 F9"),
        ("C1", "FF 04 01 0E F4"),
        ("C1T1", "FF 04 01 09 F3"),
    ],
)
def test_set_mode_requests(mode: str, frame: str) -> None:
    assert set_mode_request(mode) == bytes.fromhex(frame)


def test_unknown_mode_is_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        set_mode_request("N1")


def test_manual_examples() -> None:
    # Amber AMB8426-M manual v2.4: §7.8 firmware version request and its example answer
    # (version 2.0.6), §7.6 "query all parameters", §7.7 serial number, §7.4 channel 11.
    assert firmware_version_request() == bytes.fromhex("FF 0C 00 F3")
    assert firmware_version_confirm(2, 0, 6) == bytes.fromhex("FF 8C 03 02 00 06 74")
    assert get_request(0x00, 0x80) == bytes.fromhex("FF 0A 02 00 80 77")
    assert encode_command(CMD_SERIALNO_REQ) == bytes.fromhex("FF 0B 00 F4")
    assert encode_command(CMD_SET_CHANNEL_REQ, b"\x0b") == bytes.fromhex("FF 06 01 0B F3")


@pytest.mark.parametrize("feed", FEEDERS)
def test_framer_reads_the_manual_answers(feed: Feed) -> None:
    framer = Amb8465Framer()
    stream = bytes.fromhex("FF 8C 03 02 00 06 74FF 86 01 0B 73")
    version, channel = feed(framer, stream)
    assert firmware_version_of(version) == (2, 0, 6)
    assert channel == AmberMessage(0x86, b"\x0b")


@pytest.mark.parametrize("feed", FEEDERS)
def test_host_side_framer_reads_the_requests(feed: Feed) -> None:
    framer = Amb8465Framer(from_device=False)
    stream = bytes.fromhex("FF 04 01 08 F2FF 0C 00 F3") + set_request(PARAM_RSSI_ENABLE, b"\x01")
    messages = feed(framer, stream)
    assert messages == [
        AmberMessage(0x04, b"\x08"),
        AmberMessage(0x0C, b""),
        AmberMessage(0x09, bytes((0x45, 1, 1))),
    ]


def test_parameter_requests() -> None:
    # SET_REQ: address, count, values (manual §7.5); jMBus `amberSetReg` writes the same bytes.
    frame = set_request(PARAM_RSSI_ENABLE, b"\x01")
    assert frame[:6] == bytes.fromhex("FF 09 03 45 01 01")
    assert frame[6] == xor_all(frame[:6])
    assert set_request(PARAM_UART_CMD_OUT_ENABLE, b"\x01")[3] == 0x05
    assert get_request(PARAM_RSSI_ENABLE, 1)[:5] == bytes.fromhex("FF 0A 02 45 01")
    with pytest.raises(FrameError):
        set_request(0x45, b"")


def test_confirmations_the_simulator_sends() -> None:
    framer = Amb8465Framer()
    stream = set_mode_confirm() + set_confirm(1) + get_confirm(0x45, b"\x01")
    set_mode, set_param, get_param = framer.feed(stream)
    assert set_mode == AmberMessage(0x84, b"\x00")
    assert status_of(set_mode) == 0
    assert status_of(set_param) == 1
    assert parameters_of(get_param) == (0x45, b"\x01")


def test_confirmation_readers_refuse_the_wrong_message() -> None:
    with pytest.raises(FrameError):
        status_of(AmberMessage(0x04, b"\x00"))
    with pytest.raises(FrameError):
        firmware_version_of(AmberMessage(0x8C, b"\x01\x02"))
    with pytest.raises(FrameError):
        parameters_of(AmberMessage(0x8A, bytes((0x45, 2, 1))))


def test_data_indication_length_counts_the_rssi_byte() -> None:
    # PROTOCOL_NOTES §9.2: FF 03 len <C ... last byte> RSSI CS, len = wM-Bus L + 1.
    frame = data_indication(SEN_FRAME, rssi=0x9C)
    assert frame[:3] == bytes((0xFF, 0x03, SEN_FRAME[0] + 1))
    assert frame[3:-2] == SEN_FRAME[1:]
    assert frame[-2] == 0x9C
    assert frame[-1] == xor_all(frame[:-1])


@pytest.mark.parametrize("feed", FEEDERS)
def test_received_telegram_comes_out_with_l_reinserted(feed: Feed) -> None:
    framer = Amb8465Framer()
    (message,) = feed(framer, data_indication(SEN_FRAME, rssi=0x01))
    assert message.rssi_raw == 0x01
    assert wmbus_frame_of(message, "C1") == ReceivedFrame(SEN_FRAME, Decimal("-73.5"), None, "C1")


def test_without_rssi_attachment_the_last_byte_is_data() -> None:
    framer = Amb8465Framer(rssi_attached=False)
    (message,) = framer.feed(data_indication(SEN_FRAME))
    assert wmbus_frame_of(message) == ReceivedFrame(SEN_FRAME, None, None, None)


def test_wmbus_frame_of_ignores_other_messages_and_refuses_short_indications() -> None:
    assert wmbus_frame_of(AmberMessage(0x84, b"\x00")) is None
    with pytest.raises(FrameError):
        wmbus_frame_of(AmberMessage(CMD_DATA_IND, bytes(8)))


def test_rssi_conversion_keeps_the_half_db() -> None:
    # Manual §7.9: raw >= 128 -> (raw - 256) / 2 - 74, else raw / 2 - 74, with real division.
    assert rssi_to_dbm(0) == Decimal(-74)
    assert rssi_to_dbm(1) == Decimal("-73.5")
    assert rssi_to_dbm(0x7F) == Decimal("-10.5")
    assert rssi_to_dbm(0x80) == Decimal(-138)
    assert rssi_to_dbm(0xFF) == Decimal("-74.5")
    with pytest.raises(FrameError):
        rssi_to_dbm(-1)


def test_encoders_refuse_what_does_not_fit() -> None:
    with pytest.raises(FrameError):
        encode_command(0x100)
    with pytest.raises(FrameError):
        encode_command(0x0C, bytes(256))
    with pytest.raises(FrameError):
        encode_message(AmberMessage(0x8C, b"", rssi_raw=1))
    with pytest.raises(FrameError):
        data_indication(SEN_FRAME[:-1])  # L no longer matches
    with pytest.raises(FrameError):
        data_indication(bytes((255,)) + bytes(255), rssi=1)  # 256 payload bytes


# Streams ------------------------------------------------------------------------------------

INDICATION = data_indication(SEN_FRAME, rssi=0x40)
CONFIRM = set_mode_confirm()


@pytest.mark.parametrize("feed", FEEDERS)
def test_garbage_before_a_frame_is_discarded_and_counted(feed: Feed) -> None:
    framer = Amb8465Framer()
    garbage = bytes(range(0x20, 0x60))
    (message,) = feed(framer, garbage + INDICATION)
    assert message.payload == SEN_FRAME[1:]
    assert framer.discarded_bytes == len(garbage)


@pytest.mark.parametrize("feed", FEEDERS)
def test_false_starts_before_a_frame_cost_one_byte_each(feed: Feed) -> None:
    framer = Amb8465Framer()
    unknown_command = bytes.fromhex("FF 0E 00")
    request_from_the_wrong_side = bytes.fromhex("FF 04 01")
    short_indication = bytes.fromhex("FF 03 02")
    bad_checksum = bytes.fromhex("FF 84 01 00 00")
    stream = (
        unknown_command + request_from_the_wrong_side + short_indication + bad_checksum + INDICATION
    )
    (message,) = feed(framer, stream)
    assert message.payload == SEN_FRAME[1:]
    assert framer.bad_checksums == 1
    assert framer.discarded_bytes == len(stream) - len(INDICATION)


@pytest.mark.parametrize("feed", FEEDERS)
def test_trailing_bytes_wait_for_the_rest_of_their_frame(feed: Feed) -> None:
    framer = Amb8465Framer()
    assert feed(framer, CONFIRM + INDICATION[:7]) == [AmberMessage(0x84, b"\x00")]
    (message,) = feed(framer, INDICATION[7:])
    assert message.payload == SEN_FRAME[1:]
    assert framer.discarded_bytes == 0


@pytest.mark.parametrize("feed", FEEDERS)
def test_back_to_back_frames(feed: Feed) -> None:
    framer = Amb8465Framer()
    stream = CONFIRM + INDICATION + INDICATION + firmware_version_confirm(1, 2, 3)
    messages = feed(framer, stream)
    assert [m.command for m in messages] == [0x84, 0x03, 0x03, 0x8C]
    assert framer.frames == 4


@pytest.mark.parametrize("feed", FEEDERS)
def test_a_corrupted_frame_is_dropped_and_the_next_one_read(feed: Feed) -> None:
    framer = Amb8465Framer()
    corrupted = bytearray(INDICATION)
    corrupted[12] ^= 0x10
    assert feed(framer, bytes(corrupted) + CONFIRM) == [AmberMessage(0x84, b"\x00")]
    assert framer.bad_checksums == 1


# Properties ---------------------------------------------------------------------------------


@st.composite
def device_messages(draw: st.DrawFn, rssi_attached: bool = True) -> AmberMessage:
    command = draw(st.sampled_from(sorted(DEVICE_COMMANDS)))
    if command != CMD_DATA_IND:
        return AmberMessage(command, draw(st.binary(max_size=255)))
    if not rssi_attached:
        return AmberMessage(command, draw(st.binary(min_size=9, max_size=255)))
    payload = draw(st.binary(min_size=9, max_size=254))
    return AmberMessage(command, payload, draw(st.integers(0, 255)))


@given(st.lists(device_messages(), min_size=1, max_size=4), st.lists(st.integers(0, 1100)))
def test_encoded_messages_come_back_whatever_the_chunking(
    messages: list[AmberMessage], cuts: list[int]
) -> None:
    stream = b"".join(encode_message(m) for m in messages)
    framer = Amb8465Framer()
    assert in_chunks(framer, stream, cuts) == messages
    assert (framer.frames, framer.discarded_bytes, framer.bad_checksums) == (len(messages), 0, 0)


@given(st.lists(st.sampled_from(sorted(HOST_COMMANDS))), st.binary(max_size=255))
def test_host_requests_come_back(commands: list[int], payload: bytes) -> None:
    messages = [AmberMessage(command, payload) for command in commands]
    framer = Amb8465Framer(from_device=False)
    assert framer.feed(b"".join(encode_message(m) for m in messages)) == messages


@given(st.binary(max_size=600), st.lists(st.integers(0, 600)), st.booleans(), st.booleans())
def test_random_bytes_never_raise_and_every_message_is_in_the_input(
    data: bytes, cuts: list[int], rssi_attached: bool, from_device: bool
) -> None:
    framer = Amb8465Framer(rssi_attached=rssi_attached, from_device=from_device)
    for message in in_chunks(framer, data, cuts):
        assert encode_message(message) in data


@given(st.binary(max_size=300), device_messages())
def test_a_frame_after_garbage_without_sof_is_never_lost(
    garbage: bytes, message: AmberMessage
) -> None:
    garbage = garbage.replace(b"\xff", b"")
    framer = Amb8465Framer()
    assert whole(framer, garbage + encode_message(message)) == [message]
    assert framer.discarded_bytes == len(garbage)


@given(device_messages(), st.data())
def test_a_bit_flip_after_the_header_is_always_caught(
    message: AmberMessage, data: st.DataObject
) -> None:
    frame = bytearray(encode_message(message))
    bit = data.draw(st.integers(3 * 8, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    framer = Amb8465Framer()
    assert message not in framer.feed(bytes(frame) + bytes(260))
    assert framer.bad_checksums >= 1
