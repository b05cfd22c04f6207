"""NMEA 0183 sentences to positions, without a port: the framer, interpret() and GpsState."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from firmware_sim.gps import sentence
from gateway.driveby.gps import MAX_SENTENCE, GpsState, NmeaFramer, interpret
from gateway.frames import Location
from metergate.errors import ChecksumError, FrameError

NOW = datetime(2026, 2, 1, 12, 36, tzinfo=UTC)
# The example every NMEA reference quotes, with its checksum 47.
GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = (
    sentence("GPRMC,123519.50,A,4807.038,N,01131.000,E,022.4,084.4,010226,003.1,W,A")
    .decode()
    .strip()
)


def body(text: str) -> str:
    return text.strip()[1:].rsplit("*", 1)[0]


def test_the_simulator_computes_the_checksum_the_references_give() -> None:
    assert sentence(body(GGA)) == (GGA + "\r\n").encode()


def test_a_gga_fix_in_exact_degrees_on_the_day_of_the_host_clock() -> None:
    observation = interpret(GGA, NOW)
    assert observation is not None
    # 48 deg 07.038' = 48.1173 exactly; 11 deg 31.000' = 11.51666... to 1e-7 degree
    assert observation.location == Location(
        Decimal("48.1173000"), Decimal("11.5166667"), datetime(2026, 2, 1, 12, 35, 19, tzinfo=UTC)
    )
    assert (observation.quality, observation.satellites) == (1, 8)
    assert observation.hdop == Decimal("0.9")


def test_a_gga_just_before_midnight_belongs_to_the_day_before() -> None:
    just_after = datetime(2026, 2, 1, 0, 0, 5, tzinfo=UTC)
    text = sentence("GPGGA,235959.00,4807.038,N,01131.000,E,2,12,0.7,1,M,1,M,,").decode()
    observation = interpret(text, just_after)
    assert observation is not None and observation.location is not None
    assert observation.location.fix_at == datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)


def test_rmc_gives_the_date_and_southern_western_positions_are_negative() -> None:
    observation = interpret(RMC, NOW)
    assert observation is not None and observation.location is not None
    assert observation.location.fix_at == datetime(2026, 2, 1, 12, 35, 19, 500000, tzinfo=UTC)
    text = sentence("GNRMC,081836,A,3751.65,S,14507.36,W,000.0,360.0,130998,011.3,E").decode()
    observation = interpret(text, NOW)
    assert observation is not None and observation.location is not None
    assert observation.location.lat == Decimal("-37.8608333")
    assert observation.location.lon == Decimal("-145.1226667")


@pytest.mark.parametrize(
    "text",
    [
        "GPGGA,123519.00,,,,,0,00,99.99,,,,,,",  # quality 0: no fix
        "GPGGA,123519,4807.038,N,01131.000,E,6,08,0.9,545.4,M,46.9,M,,",  # dead reckoning
        "GPGGA,123519,4807.038,N,01131.000,E,8,08,0.9,545.4,M,46.9,M,,",  # simulation
        "GPRMC,123519.00,V,,,,,,,010226,,,N",  # void
        "GPRMC,123519,A,4807.038,N,01131.000,E,0,0,010226,,,N",  # mode: not valid
        "GPRMC,123519,A,4807.038,N,01131.000,E,0,0,010226,,,E",  # mode: estimated
    ],
)
def test_sentences_that_say_there_is_no_fix(text: str) -> None:
    observation = interpret(sentence(text).decode(), NOW)
    assert observation is not None and observation.location is None


@pytest.mark.parametrize(
    "text",
    ["GPVTG,084.4,T,,M,022.4,N,041.5,K,A", "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"],
)
def test_sentences_without_a_position_are_passed_over(text: str) -> None:
    assert interpret(sentence(text).decode(), NOW) is None


def test_unknown_sentence_types_are_passed_over() -> None:
    assert interpret(sentence("GPXYZ,1,2,3").decode(), NOW) is None


@pytest.mark.parametrize(
    "text",
    [
        GGA[:-1] + "8",  # wrong checksum
        GGA.rsplit("*", 1)[0],  # none at all
    ],
)
def test_checksum_errors(text: str) -> None:
    with pytest.raises(ChecksumError):
        interpret(text, NOW)


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        sentence("GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,").decode(),
        sentence("GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,").decode(),
        sentence("GPGGA,123519,48O7.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,").decode(),
        sentence("GPGGA,123519,4807.038,N,1131.000,E,1,08,0.9,545.4,M,46.9,M,,").decode(),
        sentence("GPRMC,123519,A,9107.038,N,01131.000,E,0,0,010226,,,A").decode(),
    ],
)
def test_unreadable_sentences_are_frame_errors(text: str) -> None:
    with pytest.raises(FrameError):
        interpret(text, NOW)


def test_a_fix_with_a_broken_time_keeps_its_position() -> None:
    text = sentence("GPGGA,12x519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,").decode()
    observation = interpret(text, NOW)
    assert observation is not None and observation.location is not None
    assert observation.location.fix_at is None


def stream() -> bytes:
    return (GGA + "\r\n" + RMC + "\r\n").encode()


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_the_framer_takes_sentences_in_any_pieces(step: int) -> None:
    framer = NmeaFramer()
    data = stream() * 3
    lines = [line for i in range(0, len(data), step) for line in framer.feed(data[i : i + step])]
    assert lines == [GGA, RMC] * 3
    assert framer.discarded_bytes == 0


def test_the_framer_resynchronises_after_garbage_and_binary_noise() -> None:
    framer = NmeaFramer()
    noise = b"\xb5\x62\x01\x07\x00$\x13\xff\n" + b"junk$GP" + GGA.encode() + b"\r\n"
    lines = framer.feed(noise + b"\x00" * 500 + stream())
    assert lines == [GGA, GGA, RMC]
    assert framer.discarded_bytes == 9 + 7 + 500


def test_the_framer_drops_overlong_lines_and_keeps_memory_bounded() -> None:
    framer = NmeaFramer()
    assert framer.feed(b"$" + b"A" * (MAX_SENTENCE + 10) + b"\r\n" + stream()) == [GGA, RMC]
    assert framer.feed(b"x" * 10_000) == []
    assert framer.feed(b"\n" + stream()) == [GGA, RMC]
    assert framer.discarded_bytes == MAX_SENTENCE + 13 + 10_001


def test_state_keeps_the_latest_fix_until_it_goes_stale() -> None:
    state = GpsState(stale_after_s=5.0, clock=lambda: NOW)
    assert state.location(0.0) is None
    state.feed(stream(), now=100.0)
    fix = state.location(100.0)
    assert fix is not None and fix.fix_at == datetime(2026, 2, 1, 12, 35, 19, 500000, tzinfo=UTC)
    assert state.location(105.0) == fix
    assert state.location(105.1) is None
    assert (state.sentences, state.fixes, state.satellites) == (2, 2, 8)


def test_state_drops_the_fix_when_the_receiver_says_it_lost_it() -> None:
    state = GpsState(clock=lambda: NOW)
    state.feed(stream(), now=1.0)
    state.feed(sentence("GPGGA,123520.00,,,,,0,03,99.99,,,,,,"), now=2.0)
    assert state.location(2.0) is None
    assert (state.no_fix, state.satellites) == (1, 3)


def test_state_counts_bad_sentences_and_carries_on() -> None:
    state = GpsState(clock=lambda: NOW)
    bad_checksum = (GGA[:-1] + "0\r\n").encode()
    unreadable = sentence("GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    state.feed(bad_checksum + unreadable + b"$GPGGA,cut\r\n" + stream(), now=1.0)
    assert (state.bad_checksums, state.unreadable, state.fixes) == (2, 1, 2)
    assert state.location(1.0) is not None


def test_a_stale_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        GpsState(stale_after_s=0)
