"""iM871A HCI framing: worked examples of PROTOCOL_NOTES §9.1, streams, round trips, fuzzing."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.im871a_framing import (
    DeviceInfo,
    HciMessage,
    Im871aFramer,
    crc16_x25,
    data_indication,
    device_info_of,
    device_info_request,
    device_info_response,
    encode_hci,
    encode_message,
    ping_request,
    ping_response,
    rssi_to_dbm,
    set_config_response,
    set_link_mode_request,
    wmbus_frame_of,
)
from drivers.received import ReceivedFrame
from metergate.errors import FrameError, UnsupportedError
from tests.drivers.feeding import FEEDERS, Feed, byte_by_byte, in_chunks, whole

# PROTOCOL_NOTES §9.1, from wmbusmeters `deviceSetLinkModes`: DEVMGMT_SET_CONFIG_REQ for T1,
# RSSI attachment on, timestamp attachment off, not saved, no FCS.
T1_SET_CONFIG = bytes.fromhex("A5 01 03 06 00 02 03 30 01 00")
# PROTOCOL_NOTES §9.3, from wmbusmeters tests/test_nc1.sh: a stripped SEN water meter frame.
SEN_FRAME = bytes.fromhex("1844AE4C4455223368077A55000000041389E20100023B0000")
# The MsgID ranges of each endpoint (wmbusmeters `checkIM871AFrame`).
LAST_MSG_ID = {1: 0x27, 2: 0x05, 3: 0x07, 4: 0x02}
# PROTOCOL_NOTES §9.1: the link-mode values of the set-config request.
LINK_MODE_VALUES = {
    "S1": 0x00,
    "S1-m": 0x01,
    "S2": 0x02,
    "T1": 0x03,
    "T2": 0x04,
    "R2": 0x05,
    "C1A": 0x06,
    "C1B": 0x07,
    "C2A": 0x08,
    "C2B": 0x09,
    "C1T1": 0x0A,
}


def bitwise_x25(data: bytes) -> int:
    """An independent bit-at-a-time CRC-16/X-25, to check the table-driven one against."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def test_crc_check_value() -> None:
    # The catalogue check value of CRC-16/X-25 (PROTOCOL_NOTES §9.1).
    assert crc16_x25(b"123456789") == 0x906E


@given(st.binary(max_size=300))
def test_crc_matches_the_bitwise_definition(data: bytes) -> None:
    assert crc16_x25(data) == bitwise_x25(data)


def test_t1_set_config_is_the_worked_example() -> None:
    assert set_link_mode_request("T1") == T1_SET_CONFIG


def test_t1_set_config_with_fcs_differs_only_in_the_control_bit_and_the_fcs() -> None:
    frame = set_link_mode_request("T1", fcs=True)
    assert frame[:1] + bytes((frame[1] & 0x7F,)) + frame[2:-2] == T1_SET_CONFIG
    assert frame[1] == 0x81
    # The FCS is LSB first and covers byte 1 to the end; running the CRC over the data and the
    # FCS leaves the X-25 residue 0x0F47 (PROTOCOL_NOTES §9.1).
    assert int.from_bytes(frame[-2:], "little") == bitwise_x25(frame[1:-2])
    assert bitwise_x25(frame[1:]) == 0x0F47


@pytest.mark.parametrize(("mode", "value"), LINK_MODE_VALUES.items())
def test_link_mode_values(mode: str, value: int) -> None:
    frame = set_link_mode_request(mode)
    assert frame[:6] == bytes.fromhex("A5 01 03 06 00 02")
    assert frame[6] == value
    assert frame[7:] == bytes.fromhex("30 01 00")


def test_timestamp_attachment_can_be_switched_on() -> None:
    assert set_link_mode_request("C1A", timestamp=True)[7:] == bytes.fromhex("30 01 01")


def test_unknown_link_mode_is_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        set_link_mode_request("N1A")


@pytest.mark.parametrize("feed", FEEDERS)
def test_framer_reads_the_worked_example(feed: Feed) -> None:
    framer = Im871aFramer()
    messages = feed(framer, T1_SET_CONFIG)
    assert messages == [HciMessage(1, 0x03, bytes.fromhex("00 02 03 30 01 00"))]
    assert (framer.frames, framer.discarded_bytes, framer.bad_checksums) == (1, 0, 0)


def test_requests_the_driver_sends() -> None:
    assert ping_request() == bytes.fromhex("A5 01 01 00")
    assert device_info_request() == bytes.fromhex("A5 01 0F 00")


def test_data_indication_control_bytes_match_the_notes() -> None:
    # PROTOCOL_NOTES §9.1: with RSSI attached byte 1 is 42, with FCS as well C2.
    assert data_indication(SEN_FRAME, rssi=0x50, fcs=False)[1] == 0x42
    assert data_indication(SEN_FRAME, rssi=0x50)[1] == 0xC2
    # Length equals the wM-Bus L and the payload starts at C.
    indication = data_indication(SEN_FRAME, rssi=0x50)
    assert indication[2:4] == bytes((0x03, SEN_FRAME[0]))
    assert indication[4 : 4 + 24] == SEN_FRAME[1:]


@pytest.mark.parametrize("feed", FEEDERS)
def test_received_telegram_comes_out_with_l_reinserted(feed: Feed) -> None:
    framer = Im871aFramer()
    stream = data_indication(SEN_FRAME, rssi=205, timestamp=0x01020304)
    (message,) = feed(framer, stream)
    assert message.timestamp == 0x01020304
    assert wmbus_frame_of(message, "T1") == ReceivedFrame(SEN_FRAME, Decimal(-20), 0x01020304, "T1")


def test_wmbus_frame_of_ignores_other_messages_and_refuses_short_indications() -> None:
    assert wmbus_frame_of(HciMessage(1, 0x02, b"")) is None
    with pytest.raises(FrameError):
        wmbus_frame_of(HciMessage(2, 0x03, bytes(8)))


def test_device_responses_round_trip() -> None:
    info = DeviceInfo(module_type=0x33, device_mode=0, firmware_version=0x15, hci_version=1, uid=7)
    framer = Im871aFramer()
    stream = set_config_response(0) + ping_response() + device_info_response(info)
    set_config, ping, device_info = framer.feed(stream)
    assert set_config == HciMessage(1, 0x04, b"\x00", fcs=True)
    assert ping == HciMessage(1, 0x02, b"", fcs=True)
    assert device_info_of(device_info) == info
    assert device_info.payload[4:] == bytes((7, 0, 0, 0))  # uid LE


def test_device_info_of_refuses_other_and_short_messages() -> None:
    with pytest.raises(FrameError):
        device_info_of(HciMessage(1, 0x02, bytes(8)))
    with pytest.raises(FrameError):
        device_info_of(HciMessage(1, 0x10, bytes(7)))


@pytest.mark.parametrize(
    ("endpoint", "msg_id", "payload"),
    [(5, 1, b""), (0, 1, b""), (1, 0, b""), (1, 0x28, b""), (2, 3, bytes(8)), (1, 1, bytes(256))],
)
def test_encoder_refuses_what_the_framer_would_not_read(
    endpoint: int, msg_id: int, payload: bytes
) -> None:
    with pytest.raises(FrameError):
        encode_hci(endpoint, msg_id, payload)


def test_encoder_refuses_out_of_range_trailer_fields() -> None:
    with pytest.raises(FrameError):
        encode_hci(1, 1, rssi=256)
    with pytest.raises(FrameError):
        encode_hci(1, 1, timestamp=1 << 32)


def test_rssi_conversion_points() -> None:
    # The three graph points wmbusmeters' `toDBM` quotes (PROTOCOL_NOTES §9.1) and the steps
    # between them: 0.5 dB below raw 205, 0.8 dB from 205 to 230, flat above.
    assert rssi_to_dbm(45) == Decimal(-100)
    assert rssi_to_dbm(205) == Decimal(-20)
    assert rssi_to_dbm(230) == Decimal(0)
    assert rssi_to_dbm(255) == Decimal(0)
    assert rssi_to_dbm(46) == Decimal("-99.5")
    assert rssi_to_dbm(206) == Decimal("-19.2")
    assert rssi_to_dbm(0) == Decimal("-122.5")
    with pytest.raises(FrameError):
        rssi_to_dbm(256)


def test_rssi_conversion_is_monotonic_and_continuous() -> None:
    values = [rssi_to_dbm(raw) for raw in range(256)]
    steps = [b - a for a, b in pairwise(values)]
    assert all(Decimal(0) <= step <= Decimal("0.8") for step in steps)


# Streams ------------------------------------------------------------------------------------

PING = ping_response()
INDICATION = data_indication(SEN_FRAME, rssi=100)


@pytest.mark.parametrize("feed", FEEDERS)
def test_garbage_before_a_frame_is_discarded_and_counted(feed: Feed) -> None:
    framer = Im871aFramer()
    garbage = bytes(range(0x10, 0x40))
    messages = feed(framer, garbage + INDICATION)
    assert [m.payload for m in messages] == [SEN_FRAME[1:]]
    assert framer.discarded_bytes == len(garbage)


@pytest.mark.parametrize("feed", FEEDERS)
def test_false_starts_before_a_frame_cost_one_byte_each(feed: Feed) -> None:
    framer = Im871aFramer()
    bad_header = bytes.fromhex("A5 19 01 00")  # reserved control bit set
    bad_endpoint = bytes.fromhex("A5 05 01 00")
    # A plausible FCS header whose length reaches into the real frame: its FCS fails.
    long_fcs_start = bytes.fromhex("A5 82 03 10")
    stream = bad_header + bad_endpoint + long_fcs_start + INDICATION
    messages = feed(framer, stream)
    assert [m.payload for m in messages] == [SEN_FRAME[1:]]
    assert framer.bad_checksums == 1
    assert framer.discarded_bytes == len(stream) - len(INDICATION)


@pytest.mark.parametrize("feed", FEEDERS)
def test_trailing_bytes_wait_for_the_rest_of_their_frame(feed: Feed) -> None:
    framer = Im871aFramer()
    assert feed(framer, PING + INDICATION[:5]) == [HciMessage(1, 0x02, b"", fcs=True)]
    (message,) = feed(framer, INDICATION[5:])
    assert message.payload == SEN_FRAME[1:]
    assert framer.discarded_bytes == 0


@pytest.mark.parametrize("feed", FEEDERS)
def test_back_to_back_frames(feed: Feed) -> None:
    framer = Im871aFramer()
    stream = T1_SET_CONFIG + PING + INDICATION + INDICATION + set_config_response(1)
    messages = feed(framer, stream)
    assert [(m.endpoint, m.msg_id) for m in messages] == [(1, 3), (1, 2), (2, 3), (2, 3), (1, 4)]
    assert framer.frames == 5


@pytest.mark.parametrize("feed", FEEDERS)
def test_a_corrupted_frame_is_dropped_and_the_next_one_read(feed: Feed) -> None:
    framer = Im871aFramer()
    corrupted = bytearray(INDICATION)
    corrupted[10] ^= 0x04
    messages = feed(framer, bytes(corrupted) + PING)
    assert messages == [HciMessage(1, 0x02, b"", fcs=True)]
    assert framer.bad_checksums == 1


def test_require_fcs_skips_frames_without_one() -> None:
    framer = Im871aFramer(require_fcs=True)
    assert framer.feed(T1_SET_CONFIG + PING) == [HciMessage(1, 0x02, b"", fcs=True)]
    assert framer.discarded_bytes == len(T1_SET_CONFIG)


# Properties ---------------------------------------------------------------------------------


@st.composite
def hci_messages(draw: st.DrawFn) -> HciMessage:
    endpoint = draw(st.sampled_from(sorted(LAST_MSG_ID)))
    msg_id = draw(st.integers(1, LAST_MSG_ID[endpoint]))
    shortest = 9 if (endpoint, msg_id) == (2, 3) else 0
    return HciMessage(
        endpoint=endpoint,
        msg_id=msg_id,
        payload=draw(st.binary(min_size=shortest, max_size=255)),
        timestamp=draw(st.none() | st.integers(0, 0xFFFFFFFF)),
        rssi_raw=draw(st.none() | st.integers(0, 0xFF)),
        fcs=draw(st.booleans()),
    )


@given(st.lists(hci_messages(), min_size=1, max_size=4), st.lists(st.integers(0, 1200)))
def test_encoded_messages_come_back_whatever_the_chunking(
    messages: list[HciMessage], cuts: list[int]
) -> None:
    stream = b"".join(encode_message(m) for m in messages)
    framer = Im871aFramer()
    assert in_chunks(framer, stream, cuts) == messages
    assert (framer.frames, framer.discarded_bytes, framer.bad_checksums) == (len(messages), 0, 0)


@given(st.binary(max_size=600), st.lists(st.integers(0, 600)), st.booleans())
def test_random_bytes_never_raise_and_every_message_is_in_the_input(
    data: bytes, cuts: list[int], require_fcs: bool
) -> None:
    framer = Im871aFramer(require_fcs=require_fcs)
    for message in in_chunks(framer, data, cuts):
        assert encode_message(message) in data


@given(st.binary(max_size=300), hci_messages())
def test_a_frame_after_garbage_without_sof_is_never_lost(
    garbage: bytes, message: HciMessage
) -> None:
    garbage = garbage.replace(b"\xa5", b"")
    framer = Im871aFramer()
    assert whole(framer, garbage + encode_message(message)) == [message]
    assert framer.discarded_bytes == len(garbage)


@given(st.binary(max_size=300), hci_messages())
def test_a_checked_frame_after_any_garbage_is_never_lost(
    garbage: bytes, message: HciMessage
) -> None:
    # With every frame carrying an FCS, a false start in the garbage that reaches into the frame
    # fails its FCS; the zero padding completes any false start that reaches beyond it.
    message = replace(message, fcs=True)
    framer = Im871aFramer(require_fcs=True)
    messages = byte_by_byte(framer, garbage + encode_message(message) + bytes(270))
    assert messages[-1:] == [message]


@given(hci_messages(), st.data())
def test_a_bit_flip_after_the_header_is_always_caught(
    message: HciMessage, data: st.DataObject
) -> None:
    message = replace(message, fcs=True)
    frame = bytearray(encode_message(message))
    bit = data.draw(st.integers(4 * 8, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    framer = Im871aFramer(require_fcs=True)
    assert message not in framer.feed(bytes(frame) + bytes(270))
    assert framer.bad_checksums >= 1
