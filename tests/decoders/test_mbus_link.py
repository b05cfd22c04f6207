"""Wired M-Bus link layer: frames, encoders, framer, secondary addressing, reply judgement."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.mbus_link import (
    ADDRESS_NETWORK_LAYER,
    C_RSP_UD,
    C_SND_UD,
    CI_SELECT_SECONDARY,
    Ack,
    Collision,
    ControlFrame,
    Frame,
    LongFrame,
    MbusFramer,
    NoReply,
    SecondaryAddress,
    ShortFrame,
    application_reset,
    classify_reply,
    encode_frame,
    frame_length,
    parse_frame,
    req_ud1,
    req_ud2,
    rsp_ud,
    secondary_matches,
    select_secondary,
    set_baud_rate,
    snd_nke,
    snd_ud,
)
from metergate.errors import ChecksumError, DecodeError, FrameError
from tests.corpus import CORPUS, SKIP_REASON, entries

# PROTOCOL_NOTES §8.1 (verified): libmbus test frame GWF-MTKcoder, RSP_UD from address 1, CI 72.
GWF = bytes.fromhex("681B1B6808017207201800E61E35074C0000000C78072018000C16690200009616")
# PROTOCOL_NOTES §8.4 (verified): select ID 12345678 / mask 1234FFFF, then REQ_UD2 and SND_NKE
# to the network layer address.
SELECT_12345678 = bytes.fromhex("680B0B6873FD5278563412FFFFFFFFD216")
SELECT_1234FFFF = bytes.fromhex("680B0B6873FD52FFFF3412FFFFFFFF0216")
REQ_UD2_FD_FCB = bytes.fromhex("107BFD7816")
REQ_UD2_FD = bytes.fromhex("105BFD5816")
SND_NKE_FD = bytes.fromhex("1040FD3D16")
# m-bus.com "06 application layer" (M-Bus documentation), application reset with subcode 10 to
# the broadcast-with-reply address, as quoted in the test data of a Go M-Bus parser.
APPLICATION_RESET_10 = bytes.fromhex("6804046853FE5010B116")

NO_START_BYTES = bytes(b for b in range(256) if b not in (0xE5, 0x10, 0x68))


def flipped(data: bytes, position: int, bit: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 1 << bit
    return bytes(out)


# --- parse_frame -------------------------------------------------------------------------------


def test_gwf_long_frame() -> None:
    frame = parse_frame(GWF)
    assert isinstance(frame, LongFrame)
    assert (frame.c, frame.a, frame.ci) == (C_RSP_UD, 1, 0x72)
    assert len(frame.data) == 0x1B - 3
    assert frame.data[:4] == bytes.fromhex("07201800")  # ID 00182007
    assert frame.data[-4:] == bytes.fromhex("69020000")  # volume 269 m3
    assert encode_frame(frame) == GWF


def test_select_vectors() -> None:
    frame = parse_frame(SELECT_12345678)
    assert isinstance(frame, LongFrame)
    assert (frame.c, frame.a, frame.ci) == (0x73, ADDRESS_NETWORK_LAYER, CI_SELECT_SECONDARY)
    assert SecondaryAddress.from_bytes(frame.data) == SecondaryAddress("12345678")
    assert select_secondary(SecondaryAddress("12345678")) == SELECT_12345678
    assert select_secondary(SecondaryAddress("1234FFFF")) == SELECT_1234FFFF
    assert select_secondary(SecondaryAddress("1234????")) == SELECT_1234FFFF
    assert select_secondary(bytes.fromhex("FFFF3412FFFFFFFF")) == SELECT_1234FFFF


def test_short_frame_vectors() -> None:
    assert req_ud2(ADDRESS_NETWORK_LAYER, fcb=True) == REQ_UD2_FD_FCB
    assert req_ud2(ADDRESS_NETWORK_LAYER, fcb=False) == REQ_UD2_FD
    assert snd_nke(ADDRESS_NETWORK_LAYER) == SND_NKE_FD
    assert parse_frame(REQ_UD2_FD_FCB) == ShortFrame(0x7B, 0xFD)
    assert parse_frame(SND_NKE_FD) == ShortFrame(0x40, 0xFD)


def test_application_reset_vectors() -> None:
    assert application_reset(0xFE, 0x10) == APPLICATION_RESET_10
    assert parse_frame(APPLICATION_RESET_10) == LongFrame(0x53, 0xFE, 0x50, b"\x10")
    assert parse_frame(application_reset(5)) == ControlFrame(0x53, 5, 0x50)


def test_control_frame_checksum() -> None:
    # 53 + 05 + 50 = A8
    assert application_reset(5) == bytes.fromhex("68030368530550A816")


def test_other_encoders() -> None:
    assert parse_frame(req_ud1(7, fcb=False)) == ShortFrame(0x5A, 7)
    assert parse_frame(req_ud1(7, fcb=True)) == ShortFrame(0x7A, 7)
    assert parse_frame(set_baud_rate(3, 300)) == ControlFrame(0x53, 3, 0xB8)
    assert parse_frame(set_baud_rate(3, 38400)) == ControlFrame(0x53, 3, 0xBF)
    assert parse_frame(set_baud_rate(3, 9600, fcb=True)) == ControlFrame(0x73, 3, 0xBD)
    assert parse_frame(snd_ud(9, 0x51, b"\x01\x7a\x09", fcb=True)) == LongFrame(
        0x73, 9, 0x51, b"\x01\x7a\x09"
    )
    assert parse_frame(snd_ud(9, 0x51, b"", fcb=False)) == ControlFrame(C_SND_UD, 9, 0x51)
    assert parse_frame(rsp_ud(1, 0x72, b"\x00")) == LongFrame(0x08, 1, 0x72, b"\x00")
    assert parse_frame(rsp_ud(1, 0x72, b"\x00", acd=True)) == LongFrame(0x28, 1, 0x72, b"\x00")
    assert parse_frame(rsp_ud(1, 0x72, b"\x00", dfc=True)) == LongFrame(0x18, 1, 0x72, b"\x00")
    assert parse_frame(rsp_ud(1, 0x70, b"", acd=True, dfc=True)) == ControlFrame(0x38, 1, 0x70)


def test_encoder_arguments_are_checked() -> None:
    with pytest.raises(DecodeError):
        set_baud_rate(1, 115200)
    with pytest.raises(DecodeError):
        snd_nke(256)
    with pytest.raises(DecodeError):
        application_reset(1, 300)
    with pytest.raises(DecodeError):
        LongFrame(0x08, 1, 0x72, b"")  # no data: that is a control frame
    with pytest.raises(DecodeError):
        LongFrame(0x08, 1, 0x72, bytes(253))
    with pytest.raises(DecodeError):
        select_secondary(b"\xff" * 7)


@pytest.mark.parametrize(
    ("data", "error", "offset"),
    [
        (b"", FrameError, 0),
        (GWF[:-2] + b"\x97\x16", ChecksumError, len(GWF) - 2),
        (GWF[:-1] + b"\x17", FrameError, len(GWF) - 1),
        (GWF[:2] + b"\x1c" + GWF[3:], FrameError, 2),
        (GWF[:3] + b"\x69" + GWF[4:], FrameError, 3),
        (GWF[:-1], FrameError, len(GWF) - 1),
        (GWF + b"\x00", FrameError, len(GWF)),
        (b"\x68\x02\x02\x68\x08\x01\x09\x16", FrameError, 1),
        (b"\x42" + GWF, FrameError, 0),
        (b"\x10\x7b\xfd\x79\x16", ChecksumError, 3),
        (b"\x10\x7b\xfd\x78\x17", FrameError, 4),
        (b"\x10\x7b\xfd", FrameError, 3),
        (b"\xe5\xe5", FrameError, 1),
    ],
)
def test_parse_errors_carry_offset(data: bytes, error: type[DecodeError], offset: int) -> None:
    with pytest.raises(error) as raised:
        parse_frame(data)
    assert type(raised.value) is error
    assert raised.value.offset == offset
    assert raised.value.data == data


def test_every_single_bit_flip_is_caught() -> None:
    # The 8-bit sum changes with any single flipped bit in C..data; the framing bytes are fixed.
    for position in range(len(GWF)):
        for bit in range(8):
            with pytest.raises(DecodeError):
                parse_frame(flipped(GWF, position, bit))


def test_every_truncation_is_a_frame_error() -> None:
    for end in range(len(GWF)):
        with pytest.raises(FrameError):
            parse_frame(GWF[:end])


# --- framer -----------------------------------------------------------------------------------

VECTORS = [GWF, SELECT_12345678, SELECT_1234FFFF, REQ_UD2_FD_FCB, SND_NKE_FD, b"\xe5"]


@pytest.mark.parametrize("vector", VECTORS)
def test_framer_whole(vector: bytes) -> None:
    framer = MbusFramer()
    assert framer.feed(vector) == [parse_frame(vector)]
    assert (framer.pending, framer.discarded) == (0, 0)


@pytest.mark.parametrize("vector", VECTORS)
def test_framer_byte_by_byte(vector: bytes) -> None:
    framer = MbusFramer()
    frames: list[Frame] = []
    for index in range(len(vector)):
        out = framer.feed(vector[index : index + 1])
        if index < len(vector) - 1:
            assert out == []
            assert framer.pending == index + 1  # a partial frame waits
        frames += out
    assert frames == [parse_frame(vector)]
    assert (framer.pending, framer.discarded) == (0, 0)


@pytest.mark.parametrize("vector", VECTORS)
def test_framer_after_garbage_and_with_trailing_bytes(vector: bytes) -> None:
    framer = MbusFramer()
    garbage = b"\x00\xff\x42\x16\x7b"
    assert framer.feed(garbage + vector + b"\x68\x1b") == [parse_frame(vector)]
    assert framer.discarded == len(garbage)
    assert framer.pending == 2  # the start of the next frame is kept
    assert framer.feed(GWF[2:]) == [parse_frame(GWF)]
    assert framer.pending == 0


def test_framer_two_frames_back_to_back() -> None:
    framer = MbusFramer()
    assert framer.feed(SELECT_12345678 + b"\xe5" + REQ_UD2_FD_FCB + GWF) == [
        parse_frame(SELECT_12345678),
        Ack(),
        parse_frame(REQ_UD2_FD_FCB),
        parse_frame(GWF),
    ]
    assert framer.discarded == 0


@pytest.mark.parametrize("chunk", [1, 2, 7, 100])
def test_framer_bad_checksum_then_good_frame(chunk: int) -> None:
    bad = GWF[:-2] + bytes(((GWF[-2] + 1) & 0xFF,)) + GWF[-1:]
    stream = bad + GWF
    framer = MbusFramer()
    frames: list[Frame] = []
    for start in range(0, len(stream), chunk):
        frames += framer.feed(stream[start : start + chunk])
    assert frames == [parse_frame(GWF)]
    # GWF holds no other E5, 10 or 68, so the whole bad frame is skipped.
    assert framer.discarded == len(bad)
    assert framer.pending == 0


def test_framer_reset_discards_a_partial_frame() -> None:
    framer = MbusFramer()
    assert framer.feed(GWF[:10]) == []
    framer.reset()
    assert (framer.pending, framer.discarded) == (0, 10)
    assert framer.feed(GWF) == [parse_frame(GWF)]


def test_framer_rejects_a_bad_header_without_waiting() -> None:
    framer = MbusFramer()
    assert framer.feed(b"\x68\x1b\x1c") == []  # L fields differ: no need to wait for 33 bytes
    assert (framer.pending, framer.discarded) == (0, 3)


# --- secondary addressing -----------------------------------------------------------------------

GWF_METER = SecondaryAddress("00182007", manufacturer=0x1EE6, version=0x35, medium=0x07)


def mask(**fields: Any) -> bytes:
    values: dict[str, Any] = {"id": "00182007", "manufacturer": 0x1EE6, "version": 0x35}
    values["medium"] = 0x07
    values.update(fields)
    return SecondaryAddress(**values).to_bytes()


def test_secondary_address_bytes() -> None:
    assert GWF_METER.to_bytes() == bytes.fromhex("07201800E61E3507")  # as in the GWF header
    assert SecondaryAddress.from_bytes(GWF_METER.to_bytes()) == GWF_METER
    wildcard = SecondaryAddress.from_bytes(b"\xff" * 8)
    assert wildcard == SecondaryAddress("FFFFFFFF")
    assert (wildcard.manufacturer, wildcard.version, wildcard.medium) == ("any", "any", "any")
    assert SecondaryAddress("12ab??78").id == "12ABFF78"


@pytest.mark.parametrize(
    "fields",
    [{"id": "1234567"}, {"id": "1234567G"}, {"manufacturer": 0x10000}, {"version": -1}],
)
def test_secondary_address_rejects_bad_fields(fields: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        mask(**fields)


@pytest.mark.parametrize(
    ("fields", "matches"),
    [
        ({}, True),
        ({"id": "FFFFFFFF", "manufacturer": "any", "version": "any", "medium": "any"}, True),
        ({"id": "0018FFFF"}, True),
        ({"id": "F0182007"}, True),
        ({"id": "001F2007"}, True),
        ({"id": "0018200F"}, True),
        ({"id": "00182008"}, False),
        ({"id": "1018FFFF"}, False),
        ({"manufacturer": 0x1EEF}, True),  # low nibble of E6 wildcarded
        ({"manufacturer": 0xFEE6}, True),  # high nibble of 1E wildcarded
        ({"manufacturer": 0x1EE7}, False),
        ({"manufacturer": 0x1FE6}, True),  # nibble F matches the E in 1E
        ({"manufacturer": 0x1DE6}, False),
        ({"version": 0x3F}, True),
        ({"version": 0xF5}, True),
        ({"version": 0x36}, False),
        ({"medium": 0x0F}, True),
        ({"medium": 0xF7}, True),
        ({"medium": 0x16}, False),
    ],
)
def test_secondary_matching_per_nibble(fields: dict[str, object], matches: bool) -> None:
    assert secondary_matches(mask(**fields), GWF_METER.to_bytes()) is matches


@pytest.mark.parametrize(
    ("manufacturer", "version", "medium", "matches"),
    [
        (0x2C2D, 0xAB, 0x1C, True),
        (0x2CFD, 0xAF, 0xFC, True),
        (0xFFFD, 0xFB, 0x1F, True),
        (0x2CED, 0xAB, 0x1C, False),  # E is a digit, not a wildcard
        (0x2C2E, 0xAB, 0x1C, False),
        (0x2C2D, 0xAC, 0x1C, False),
        (0x2C2D, 0xBB, 0x1C, False),
        (0x2C2D, 0xAB, 0x1D, False),
        (0x2C2D, 0xAB, 0xEC, False),
    ],
)
def test_secondary_matching_a_to_f_digits(
    manufacturer: int, version: int, medium: int, matches: bool
) -> None:
    # KAM = 0x2C2D: C and D are ordinary digits there, as are A, B and C in version and medium.
    meter = SecondaryAddress("12345678", manufacturer=0x2C2D, version=0xAB, medium=0x1C)
    select = SecondaryAddress("12345678", manufacturer, version, medium)
    assert secondary_matches(select.to_bytes(), meter.to_bytes()) is matches


def test_secondary_matching_wrong_lengths() -> None:
    with pytest.raises(FrameError):
        secondary_matches(b"\xff" * 7, GWF_METER.to_bytes())
    with pytest.raises(FrameError):
        SecondaryAddress.from_bytes(b"\xff" * 9)


@given(
    meter=st.binary(min_size=8, max_size=8), wild=st.lists(st.booleans(), min_size=16, max_size=16)
)
def test_wildcarded_nibbles_always_match(meter: bytes, wild: list[bool]) -> None:
    nibbles = [n for b in meter for n in (b >> 4, b & 0xF)]
    masked = [0xF if w else n for n, w in zip(nibbles, wild, strict=True)]
    mask_bytes = bytes((masked[i] << 4) | masked[i + 1] for i in range(0, 16, 2))
    assert secondary_matches(mask_bytes, meter)


@given(
    meter=st.binary(min_size=8, max_size=8),
    position=st.integers(0, 15),
    delta=st.integers(1, 14),
)
def test_one_wrong_digit_never_matches(meter: bytes, position: int, delta: int) -> None:
    nibbles = [n for b in meter for n in (b >> 4, b & 0xF)]
    wrong = (nibbles[position] + delta) % 16
    if wrong == 0xF:  # F in a mask is the wildcard, not a wrong digit
        wrong = 0
    nibbles[position] = wrong
    mask_bytes = bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, 16, 2))
    assert not secondary_matches(mask_bytes, meter)


# --- classify_reply ---------------------------------------------------------------------------

# A second slave's answer to the same REQ_UD2 to address 253: same layout, ID 00182008.
OTHER = rsp_ud(0xFD, 0x72, bytes.fromhex("08201800E61E35074D0000000C78082018000C1670020000"))
GWF_AT_FD = rsp_ud(0xFD, 0x72, GWF[7:-2])


def overlap(first: bytes, second: bytes, combine: str) -> bytes:
    """Two answers on the bus at once: the UART sees the bits combined."""
    size = max(len(first), len(second))
    pad = 0x00 if combine == "or" else 0xFF
    a, b = first.ljust(size, bytes((pad,))), second.ljust(size, bytes((pad,)))
    if combine == "or":
        return bytes(x | y for x, y in zip(a, b, strict=True))
    return bytes(x & y for x, y in zip(a, b, strict=True))


def test_classify_reply() -> None:
    assert classify_reply(b"") == NoReply()
    assert classify_reply(b"\xe5") == Ack()
    assert classify_reply(GWF) == parse_frame(GWF)
    assert classify_reply(SND_NKE_FD) == ShortFrame(0x40, 0xFD)
    for collided in (b"\xe5\xe5", b"\xe5\x00\x7f", b"\x7f\xe5", flipped(GWF, 12, 3), GWF[:-3]):
        reply = classify_reply(collided)
        assert isinstance(reply, Collision)
        assert reply.data == collided
        assert reply.reason


@pytest.mark.parametrize("combine", ["or", "and"])
def test_classify_overlapping_answers(combine: str) -> None:
    # The brief asks for OR; on the bus a space (0) from either slave wins, which is AND.
    assert parse_frame(OTHER) != parse_frame(GWF_AT_FD)
    reply = classify_reply(overlap(GWF_AT_FD, OTHER, combine))
    assert isinstance(reply, Collision)


# --- properties -------------------------------------------------------------------------------

frames = st.one_of(
    st.just(Ack()),
    st.builds(ShortFrame, st.integers(0, 255), st.integers(0, 255)),
    st.builds(ControlFrame, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.builds(
        LongFrame,
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=252),
    ),
)


@given(frames)
def test_encode_parse_round_trip(frame: Frame) -> None:
    encoded = encode_frame(frame)
    assert len(encoded) == frame_length(frame)
    assert parse_frame(encoded) == frame


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except DecodeError as error:
        assert error.offset is not None
        assert 0 <= error.offset <= len(data)
    else:
        assert encode_frame(frame) == data


@given(st.binary(max_size=600), st.lists(st.integers(1, 40), max_size=30))
def test_framer_accounts_for_every_byte(data: bytes, cuts: list[int]) -> None:
    framer = MbusFramer()
    seen: list[Frame] = []
    pos = 0
    for cut in [*cuts, len(data)]:
        seen += framer.feed(data[pos : pos + cut])
        pos += cut
    used = sum(frame_length(frame) for frame in seen)
    assert used + framer.discarded + framer.pending == len(data)


@given(st.lists(frames, min_size=1, max_size=5), st.lists(st.integers(1, 50), max_size=40))
def test_framer_chunking_does_not_matter(sent: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(frame) for frame in sent)
    framer = MbusFramer()
    received: list[Frame] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        received += framer.feed(stream[pos : pos + cut])
        pos += cut
    assert received == sent
    assert (framer.discarded, framer.pending) == (0, 0)


@given(st.binary(max_size=40).map(lambda b: bytes(x for x in b if x in NO_START_BYTES)), frames)
def test_framer_finds_a_frame_after_any_garbage(garbage: bytes, frame: Frame) -> None:
    framer = MbusFramer()
    assert framer.feed(garbage + encode_frame(frame)) == [frame]
    assert framer.discarded == len(garbage)


def test_framer_finds_a_frame_inside_a_broken_one() -> None:
    # 68 05 05 68 announces 11 bytes; the stop byte is wrong, so only the first byte is dropped
    # and the search resumes inside: the second 68 fails its L check, then REQ_UD2 is found.
    stream = b"\x68\x05\x05\x68" + REQ_UD2_FD_FCB + b"\x00\x00"
    framer = MbusFramer()
    assert framer.feed(stream) == [parse_frame(REQ_UD2_FD_FCB)]
    assert framer.discarded == 6


@pytest.mark.skipif(not CORPUS.exists(), reason=SKIP_REASON)
def test_corpus_wired_frames() -> None:
    # The 27 wired long frames of the shared corpus (wmbusmeters driver tests), read in place:
    # each parses alone, and all of them run through the framer back to back, whole and byte by
    # byte.
    wired = [entry.telegram for entry in entries() if entry.telegram[:1] == b"\x68"]
    assert len(wired) == 27
    parsed = [parse_frame(frame) for frame in wired]
    assert all(isinstance(frame, LongFrame) and frame.c == C_RSP_UD for frame in parsed)
    stream = b"".join(wired)
    assert MbusFramer().feed(stream) == parsed
    framer = MbusFramer()
    assert [f for i in range(len(stream)) for f in framer.feed(stream[i : i + 1])] == parsed
