"""Modbus RTU framing: CRC-16/MODBUS check value, published frames, streams fed whole, byte by
byte, after garbage and with trailing bytes, silence, round trips, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus_rtu_framing import (
    MAX_FRAME,
    RtuFrame,
    RtuFramer,
    crc16_modbus,
    encode_rtu_frame,
    exception_response,
    parse_rtu_frame,
    read_request,
    read_response,
    register_values,
)
from metergate.errors import ChecksumError, DecodeError, FrameError
from tests.drivers.feeding import FEEDERS, Feed, in_chunks

# Requests, as a master sends them:
# INVT CHE100 operating manual §10.7.1 "RTU mode, read 2 data from 0004H" (easymanua.ls, p. 121).
INVT_REQUEST = bytes.fromhex("01 03 00 04 00 02 85 CA")
# microrobotics/RS485-TH, Reading-Data-from-RS485.md-TH.md: "Send Hex Data 01 03 00 00 00 02 C4 0B".
RS485TH_REQUEST = bytes.fromhex("01 03 00 00 00 02 C4 0B")
# Simply Modbus, "Function 03 Read Holding Registers" (simplymodbus.ca/FC03.htm), request and
# response of slave 17; quoted from memory, the CRCs agree with crc16_modbus (see below).
SIMPLY_REQUEST = bytes.fromhex("11 03 00 6B 00 03 76 87")
SIMPLY_RESPONSE = bytes.fromhex("11 03 06 AE 41 56 52 43 40 49 AD")
# Illegal data address (02) to a read of holding registers (03 | 80), CRC computed here.
EXCEPTION_RESPONSE = bytes.fromhex("01 83 02 C0 F1")

REQUESTS = {
    "invt": (INVT_REQUEST, RtuFrame(1, 3, bytes.fromhex("00040002"))),
    "rs485th": (RS485TH_REQUEST, RtuFrame(1, 3, bytes.fromhex("00000002"))),
    "simply": (SIMPLY_REQUEST, RtuFrame(0x11, 3, bytes.fromhex("006B0003"))),
}
RESPONSES = {
    "simply": (SIMPLY_RESPONSE, RtuFrame(0x11, 3, bytes.fromhex("06AE4156524340"))),
    "exception": (EXCEPTION_RESPONSE, RtuFrame(1, 0x83, b"\x02")),
}
# Garbage that a naive framer takes for the start of a long frame: a read response of 240
# bytes (direction "response"), a write of 123 registers (direction "request").
LURE = {"response": bytes.fromhex("01 03 F0 00"), "request": bytes.fromhex("01 10 00 00 00 7B F6")}


def test_the_crc_check_value() -> None:
    # The CRC catalogue's check value of CRC-16/MODBUS (reveng; republished by the crc-catalog
    # crate, docs.rs CRC_16_MODBUS, and in the CODESYS CAA Memory CRC16_Modbus example).
    assert crc16_modbus(b"123456789") == 0x4B37


@pytest.mark.parametrize("wire", [INVT_REQUEST, RS485TH_REQUEST, SIMPLY_REQUEST, SIMPLY_RESPONSE])
def test_published_crcs_are_low_byte_first(wire: bytes) -> None:
    assert crc16_modbus(wire[:-2]).to_bytes(2, "little") == wire[-2:]
    assert crc16_modbus(wire) == 0  # the catalogue's residue


def test_encoders_rebuild_the_published_frames() -> None:
    assert read_request(1, 3, 4, 2) == INVT_REQUEST
    assert read_request(0x11, 3, 0x6B, 3) == SIMPLY_REQUEST
    assert read_response(0x11, 3, [0xAE41, 0x5652, 0x4340]) == SIMPLY_RESPONSE
    assert exception_response(1, 3, 2) == EXCEPTION_RESPONSE
    assert register_values(parse_rtu_frame(SIMPLY_RESPONSE)) == [0xAE41, 0x5652, 0x4340]


@pytest.mark.parametrize("name", sorted(REQUESTS))
@pytest.mark.parametrize("feed", FEEDERS)
def test_requests_whole_and_byte_by_byte(feed: Feed, name: str) -> None:
    wire, frame = REQUESTS[name]
    framer = RtuFramer("request")
    assert feed(framer, wire) == [frame]
    assert (framer.frames, framer.bad_crcs, framer.discarded_bytes, framer.pending) == (1, 0, 0, 0)


@pytest.mark.parametrize("name", sorted(RESPONSES))
@pytest.mark.parametrize("feed", FEEDERS)
def test_responses_whole_and_byte_by_byte(feed: Feed, name: str) -> None:
    wire, frame = RESPONSES[name]
    framer = RtuFramer("response")
    assert feed(framer, wire) == [frame]
    assert framer.pending == 0


@pytest.mark.parametrize("direction", ["request", "response"])
@pytest.mark.parametrize("feed", FEEDERS)
def test_after_garbage_that_looks_like_a_long_frame(feed: Feed, direction: str) -> None:
    wire, frame = (REQUESTS if direction == "request" else RESPONSES)["simply"]
    framer = RtuFramer(direction)  # type: ignore[arg-type]
    assert feed(framer, LURE[direction] + wire) == [frame]
    assert framer.discarded_bytes == len(LURE[direction])


@pytest.mark.parametrize("feed", FEEDERS)
def test_trailing_bytes_wait_and_silence_drops_them(feed: Feed) -> None:
    framer = RtuFramer("response")
    assert feed(framer, SIMPLY_RESPONSE + b"\x11\x03") == [RESPONSES["simply"][1]]
    assert framer.pending == 2
    assert framer.silence() == []
    assert (framer.pending, framer.discarded_bytes) == (0, 2)


def test_two_frames_back_to_back() -> None:
    framer = RtuFramer("request")
    frames = framer.feed(INVT_REQUEST + SIMPLY_REQUEST)
    assert frames == [REQUESTS["invt"][1], REQUESTS["simply"][1]]


def test_a_bad_crc_is_counted_and_the_next_frame_found() -> None:
    spoiled = INVT_REQUEST[:-1] + bytes((INVT_REQUEST[-1] ^ 1,))
    framer = RtuFramer("request")
    assert framer.feed(spoiled + SIMPLY_REQUEST) == [REQUESTS["simply"][1]]
    assert framer.bad_crcs == 1
    assert framer.discarded_bytes == len(spoiled)


def test_a_truncated_frame_is_dropped_at_silence() -> None:
    framer = RtuFramer("response")
    assert framer.feed(SIMPLY_RESPONSE[:-3]) == []
    assert framer.silence() == []
    assert framer.discarded_bytes == len(SIMPLY_RESPONSE) - 3
    assert framer.feed(SIMPLY_RESPONSE) == [RESPONSES["simply"][1]]


def test_an_unknown_function_ends_with_silence() -> None:
    # Diagnostics (08) has sub-function dependent data: only the line's silence ends it.
    wire = encode_rtu_frame(5, 8, bytes.fromhex("0000A537"))
    framer = RtuFramer("request")
    assert framer.feed(wire) == []
    assert framer.silence() == [RtuFrame(5, 8, bytes.fromhex("0000A537"))]


def test_directions_reject_each_others_frames() -> None:
    assert RtuFramer("request").feed(EXCEPTION_RESPONSE) == []  # requests never set bit 7
    assert RtuFramer("response").feed(b"\x00" + SIMPLY_RESPONSE[1:]) == []  # no reply from 0
    with pytest.raises(ValueError, match="direction"):
        RtuFramer("sideways")  # type: ignore[arg-type]


def test_parse_rtu_frame_errors() -> None:
    with pytest.raises(ChecksumError) as caught:
        parse_rtu_frame(INVT_REQUEST[:-1] + b"\x00")
    assert caught.value.offset == len(INVT_REQUEST) - 2
    with pytest.raises(FrameError):
        parse_rtu_frame(b"\x01\x03\x00")
    with pytest.raises(FrameError):
        parse_rtu_frame(encode_rtu_frame(1, 0x80, b""))


def test_encoder_limits() -> None:
    with pytest.raises(FrameError):
        encode_rtu_frame(1, 3, bytes(MAX_FRAME - 3))
    with pytest.raises(FrameError):
        encode_rtu_frame(256, 3)
    with pytest.raises(FrameError):
        read_request(1, 6, 0, 1)
    with pytest.raises(FrameError):
        read_response(1, 3, [])
    with pytest.raises(FrameError):
        read_response(1, 3, [0x10000])
    with pytest.raises(FrameError):
        exception_response(1, 3, 0)
    with pytest.raises(FrameError):
        register_values(RtuFrame(1, 3, b"\x03\x00\x01\x02"))


registers = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125)
units = st.integers(1, 247)


@given(units, st.sampled_from([3, 4]), registers, st.lists(st.integers(0, 260)))
def test_responses_round_trip_in_any_chunks(
    unit: int, function: int, words: list[int], cuts: list[int]
) -> None:
    wire = read_response(unit, function, words)
    frames = in_chunks(RtuFramer("response"), wire, cuts)
    assert len(frames) == 1
    assert (frames[0].unit_id, frames[0].function) == (unit, function)
    assert register_values(frames[0]) == words


@given(units, st.sampled_from([3, 4]), st.integers(0, 0xFFFF), st.integers(1, 0xFFFF))
def test_requests_round_trip(unit: int, function: int, start: int, count: int) -> None:
    wire = read_request(unit, function, start, count)
    assert RtuFramer("request").feed(wire) == [parse_rtu_frame(wire)]


@given(st.binary(min_size=1, max_size=40).map(lambda b: bytes(0xF8 | x for x in b)), registers)
def test_resynchronises_after_bytes_that_start_no_frame(garbage: bytes, words: list[int]) -> None:
    # Unit ids 248-255 are reserved (V1.02 §2.2), so this garbage can never begin a frame.
    wire = read_response(9, 3, words)
    framer = RtuFramer("response")
    assert framer.feed(garbage + wire) == [parse_rtu_frame(wire)]
    assert framer.discarded_bytes == len(garbage)


@given(st.binary(max_size=600), st.sampled_from(["request", "response"]))
def test_random_bytes_give_only_frames_with_good_crcs(data: bytes, direction: str) -> None:
    framer = RtuFramer(direction)  # type: ignore[arg-type]
    frames = framer.feed(data) + framer.silence()
    for frame in frames:
        assert encode_rtu_frame(frame.unit_id, frame.function, frame.data) in data
    assert framer.pending == 0


@given(units, registers, st.data())
def test_a_flipped_bit_never_passes(unit: int, words: list[int], data: st.DataObject) -> None:
    wire = bytearray(read_response(unit, 3, words))
    bit = data.draw(st.integers(0, 8 * len(wire) - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    framer = RtuFramer("response")
    frames = framer.feed(bytes(wire)) + framer.silence()
    assert all(frame != parse_rtu_frame(read_response(unit, 3, words)) for frame in frames)


@given(st.binary(max_size=300))
def test_parse_raises_only_decode_errors(data: bytes) -> None:
    try:
        frame = parse_rtu_frame(data)
    except DecodeError:
        return
    assert encode_rtu_frame(frame.unit_id, frame.function, frame.data) == data
