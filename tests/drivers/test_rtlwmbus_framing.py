"""rtl_wmbus lines and hex replay lines: the worked example of PROTOCOL_NOTES §9.3, line
splitting, skipping, round trips, fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.records import parse_records
from decoders.wmbus_link import parse_dll
from drivers.received import ReceivedFrame
from drivers.rtlwmbus_framing import (
    HexLineFramer,
    RtlWmbusFramer,
    encode_hex_line,
    encode_rtlwmbus_line,
    parse_hex_line,
    parse_rtlwmbus_line,
)
from metergate.errors import ChecksumError, FrameError, UnsupportedError
from tests.drivers.feeding import FEEDERS, Feed, in_chunks

# PROTOCOL_NOTES §9.3, from wmbusmeters tests/test_nc1.sh.
RTL_LINE = (
    "T1;1;1;2019-04-03 19:00:42.000;97;148;33225544;"
    "0x1844AE4C4455223368077A55000000041389E20100023B0000"
)
SEN_FRAME = bytes.fromhex("1844AE4C4455223368077A55000000041389E20100023B0000")
RTL_TIME = datetime(2019, 4, 3, 19, 0, 42, tzinfo=UTC).timestamp()
# PROTOCOL_NOTES §1.6, Sontex HCA from wmbusmeters simulations/simulation_dll_crcs.txt: format A
# with its block CRCs (every second entry), and the same frame with them removed.
SONTEX_BLOCKS = [
    "34 44 EE 4D 81 39 29 27 16 08",
    "81 1D",
    "7A 51 00 00 00 04 6D 19 12 A6 2B 03 6E 00 00 00",
    "51 70",
    "42 6C E1 F1 43 6E 00 00 00 02 FF 2C 00 00 02 59",
    "D6 D0",
    "D4 09 02 65 FC 09 02 FD 66 A0 00",
    "44 C4",
]
SONTEX_WITH_CRCS = " ".join(SONTEX_BLOCKS)
SONTEX_STRIPPED = bytes.fromhex("".join(SONTEX_BLOCKS[0::2]))

GOOD = ReceivedFrame(SEN_FRAME, None, RTL_TIME, "T1")


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("feed", FEEDERS)
def test_the_worked_example_line(feed: Feed, ending: str) -> None:
    framer = RtlWmbusFramer()
    assert feed(framer, (RTL_LINE + ending).encode()) == [GOOD]
    assert (framer.frames, framer.skipped_lines, framer.discarded_bytes) == (1, 0, 0)


def test_the_example_frame_decodes_to_the_documented_volume() -> None:
    # PROTOCOL_NOTES §9.3: SEN water meter 33225544, CI 7A, volume 04 13 89E20100 = 123 529 l.
    frame = parse_rtlwmbus_line(RTL_LINE).frame
    c_field, address = parse_dll(frame)
    assert (c_field, address.manufacturer, address.id) == (0x44, "SEN", "33225544")
    assert frame[10] == 0x7A
    (volume, *_) = parse_records(frame[15:]).records
    assert (volume.quantity, volume.unit, volume.value) == ("volume", "m3", Decimal("123.529"))


def test_the_encoder_prints_the_example_line() -> None:
    line = encode_rtlwmbus_line(SEN_FRAME, device_time=RTL_TIME, packet_rssi=97, current_rssi=148)
    # rtl_wmbus prints lower-case hex; the wmbusmeters test has it in upper case.
    assert line.decode().upper() == (RTL_LINE + "\n").upper()


def test_lines_rtl_wmbus_marks_bad_are_counted_and_skipped() -> None:
    hex_part = RTL_LINE.rsplit(";", maxsplit=1)[-1]
    lines = [
        RTL_LINE.replace("T1;1;1", "T1;0;1"),  # CRC failed
        RTL_LINE.replace("T1;1;1", "T1;1;0"),  # 3-out-of-6 failed, matters for T1
        RTL_LINE.replace("T1;1;1", "X1;1;1"),  # not a mode we keep
        "rtl_wmbus: some message on stderr",
        RTL_LINE + ";extra",
        RTL_LINE.replace(hex_part, "0x18zz"),
        RTL_LINE.replace(hex_part, "1844"),  # no 0x
        RTL_LINE.replace(hex_part, hex_part[:-2]),  # L no longer matches
        "",
        RTL_LINE.replace("T1;1;1", "C1;1;0"),  # 3OUTOF6OK means nothing for C1
        RTL_LINE.replace("T1;1;1", "S1;1;1"),
    ]
    stream = "\n".join(lines).encode() + b"\n"
    framer = RtlWmbusFramer()
    frames = framer.feed(stream)
    assert [f.link_mode for f in frames] == ["C1", "S1"]
    assert all(f.frame == SEN_FRAME for f in frames)
    assert (framer.frames, framer.skipped_lines, framer.bad_checksums) == (2, 8, 2)
    assert framer.discarded_bytes == sum(len(line) + 1 for line in lines[:8])


def test_parse_raises_the_error_that_says_why() -> None:
    with pytest.raises(ChecksumError):
        parse_rtlwmbus_line(RTL_LINE.replace("T1;1;1", "T1;0;1"))
    with pytest.raises(UnsupportedError):
        parse_rtlwmbus_line(RTL_LINE.replace("T1;1;1", "T2;1;1"))
    with pytest.raises(FrameError):
        parse_rtlwmbus_line("T1;1;1")


def test_timestamps() -> None:
    without_fraction = RTL_LINE.replace("42.000", "42")
    assert parse_rtlwmbus_line(without_fraction).device_time == RTL_TIME
    with_fraction = RTL_LINE.replace("42.000", "42.25")
    assert parse_rtlwmbus_line(with_fraction).device_time == RTL_TIME + 0.25
    # A timestamp that does not parse loses the time, not the frame.
    assert parse_rtlwmbus_line(RTL_LINE.replace("2019-04-03", "2019-13-03")).device_time is None


@pytest.mark.parametrize("feed", FEEDERS)
def test_partial_lines_wait_for_their_end(feed: Feed) -> None:
    framer = RtlWmbusFramer()
    data = (RTL_LINE + "\r\n" + RTL_LINE).encode()
    assert feed(framer, data) == [GOOD]
    assert feed(framer, b"\r") == []
    assert feed(framer, b"\n") == [GOOD]


def test_an_overlong_line_is_dropped_up_to_its_end() -> None:
    framer = RtlWmbusFramer(max_line=200)
    junk = b"x" * 150
    assert framer.feed(junk) == []
    assert framer.feed(junk) == []  # now over the limit: dropped
    assert framer.feed(junk + b"\n" + RTL_LINE.encode() + b"\n") == [GOOD]
    assert framer.discarded_bytes == 3 * len(junk) + 1
    assert framer.skipped_lines == 0


def test_a_line_that_is_not_ascii_is_skipped() -> None:
    framer = RtlWmbusFramer()
    assert framer.feed(b"\xff\xfe\n" + RTL_LINE.encode() + b"\n") == [GOOD]
    assert (framer.skipped_lines, framer.discarded_bytes) == (1, 3)


# Hex replay lines ---------------------------------------------------------------------------


@pytest.mark.parametrize("feed", FEEDERS)
def test_hex_lines_with_prefix_whitespace_comments_and_crcs(feed: Feed) -> None:
    text = (
        "# replay file\n"
        "\n"
        f"  0x{SEN_FRAME.hex()}  \r\n"
        f"{SONTEX_WITH_CRCS}\n"
        f"{' '.join(f'{b:02X}' for b in SONTEX_STRIPPED)}\n"
    )
    framer = HexLineFramer()
    frames = feed(framer, text.encode())
    assert frames == [
        ReceivedFrame(SEN_FRAME, None, None, None),
        ReceivedFrame(SONTEX_STRIPPED, None, None, None),
        ReceivedFrame(SONTEX_STRIPPED, None, None, None),
    ]
    assert (framer.frames, framer.skipped_lines) == (3, 0)


def test_hex_lines_that_are_no_frame_are_skipped() -> None:
    framer = HexLineFramer()
    bad_crc = SONTEX_WITH_CRCS.replace("81 1D", "81 1E")
    lines = ["not hex", "0x", SEN_FRAME[:-1].hex(), bad_crc, "0x" + SEN_FRAME[:9].hex()]
    assert framer.feed(("\n".join(lines) + "\n").encode()) == []
    assert (framer.skipped_lines, framer.bad_checksums) == (5, 1)


def test_hex_lines_with_a_named_link_format() -> None:
    assert parse_hex_line(SONTEX_WITH_CRCS, "A") == ReceivedFrame(SONTEX_STRIPPED, None, None, None)
    with pytest.raises(FrameError):
        parse_hex_line(SONTEX_WITH_CRCS, "none")
    assert parse_hex_line("   ") is None


def test_encoders_refuse_what_they_cannot_print() -> None:
    with pytest.raises(UnsupportedError):
        encode_rtlwmbus_line(SEN_FRAME, mode="T2")
    with pytest.raises(FrameError):
        encode_rtlwmbus_line(SEN_FRAME[:9])
    with pytest.raises(FrameError):
        encode_rtlwmbus_line(SEN_FRAME, packet_rssi=-1)
    with pytest.raises(FrameError):
        encode_rtlwmbus_line(SEN_FRAME, device_time=1e300)
    with pytest.raises(FrameError):
        encode_hex_line(b"")


# Properties ---------------------------------------------------------------------------------

frames = st.binary(min_size=9, max_size=255).map(lambda rest: bytes((len(rest),)) + rest)
# Milliseconds from 1970 to 9999, as rtl_wmbus prints them.
device_times = st.integers(0, 253_402_300_799_999).map(lambda ms: ms / 1000)


@given(
    st.lists(st.tuples(frames, st.sampled_from(["T1", "C1", "S1"]), device_times), max_size=4),
    st.lists(st.integers(0, 2500)),
)
def test_rtl_lines_round_trip(entries: list[tuple[bytes, str, float]], cuts: list[int]) -> None:
    stream = b"".join(
        encode_rtlwmbus_line(frame, mode=mode, device_time=time) for frame, mode, time in entries
    )
    expected = [ReceivedFrame(frame, None, time, mode) for frame, mode, time in entries]
    assert in_chunks(RtlWmbusFramer(), stream, cuts) == expected


@given(st.lists(frames, max_size=4), st.lists(st.integers(0, 2500)))
def test_hex_lines_round_trip(stripped: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_hex_line(frame) for frame in stripped)
    expected = [ReceivedFrame(frame, None, None, None) for frame in stripped]
    assert in_chunks(HexLineFramer("none"), stream, cuts) == expected


@given(st.binary(max_size=800), st.lists(st.integers(0, 800)))
def test_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    for framer in (RtlWmbusFramer(max_line=300), HexLineFramer(max_line=300)):
        for frame in in_chunks(framer, data, cuts):
            assert frame.frame[0] == len(frame.frame) - 1


@given(st.binary(max_size=500), frames, st.booleans())
def test_a_line_after_garbage_is_never_lost(garbage: bytes, frame: bytes, crlf: bool) -> None:
    end = b"\r\n" if crlf else b"\n"
    line = encode_rtlwmbus_line(frame).replace(b"\n", end)
    framer = RtlWmbusFramer(max_line=300)
    assert framer.feed(garbage + b"\n" + line)[-1:] == [ReceivedFrame(frame, None, 0.0, "T1")]
