"""The duplicate filter: repeated wM-Bus transmissions, repeaters, several receivers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from decoders.decode import Decoder
from decoders.record_encoder import encode_records
from decoders.telegram import TplHeader
from decoders.wmbus_link import make_address
from decoders.wmbus_seal import seal_wmbus
from firmware_sim.fleet import Fleet
from firmware_sim.wmbus_meters import WmbusFleet
from gateway.dedup import DuplicateFilter, wmbus_repeat_key
from metergate.errors import DecodeError

T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
# Kamstrup MULTICAL 21 with an ELL (CI 8D), from examples/telegrams.txt
KAMSTRUP = bytes.fromhex(
    "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24"
)
KAMSTRUP_KEY = bytes.fromhex("28F64A24988064A079AA2C807D6102AE")
# OMS security mode 7: AFL, then the TPL with its access number (examples/telegrams.txt)
MODE7 = bytes.fromhex(
    "50449315443322111A07900F002C2507000000430FAFD7E961F7E87A230030071084DFBE5C66D1B83C3AFAA0"
    "28A0EA088C1A00998627452C80F7A2BD870F83438BA7E4E271753B2603968A21D7A240F10D"
)


def oms_frame(access_no: int, volume: str = "1.000", ci: int = 0x7A) -> bytes:
    apl = encode_records([(b"\x04\x13", Decimal(volume))])
    tpl = (
        TplHeader(ci=ci, access_no=access_no, status=0, config=0)
        if ci == 0x7A
        else TplHeader(ci=ci)
    )
    return seal_wmbus(0x44, make_address("ELS", "12345678", 1, 7), tpl, apl)


def check(dedup: DuplicateFilter, frame: bytes, at: datetime) -> bool:
    return dedup.is_duplicate(*wmbus_repeat_key(frame), at)


def test_the_first_copy_passes_and_repeats_in_the_window_do_not() -> None:
    dedup = DuplicateFilter(WINDOW)
    frame = oms_frame(7)
    assert not check(dedup, frame, T0)
    assert check(dedup, frame, T0 + timedelta(seconds=1))  # a second receiver
    assert check(dedup, frame, T0 + WINDOW)  # the window's end still counts
    assert len(dedup) == 1


def test_a_copy_after_the_window_is_new() -> None:
    dedup = DuplicateFilter(WINDOW)
    frame = oms_frame(7)
    assert not check(dedup, frame, T0)
    later = T0 + WINDOW + timedelta(seconds=1)
    assert not check(dedup, frame, later)
    assert check(dedup, frame, later + timedelta(seconds=30))


def test_different_access_number_payload_or_meter_is_not_a_repeat() -> None:
    dedup = DuplicateFilter(WINDOW)
    assert not check(dedup, oms_frame(7), T0)
    assert not check(dedup, oms_frame(8), T0)  # the meter's next telegram
    assert not check(dedup, oms_frame(7, "1.001"), T0)  # access number wrapped, new value
    other = seal_wmbus(
        0x44,
        make_address("ELS", "87654321", 1, 7),
        TplHeader(ci=0x7A, access_no=7, status=0, config=0),
        encode_records([(b"\x04\x13", Decimal("1.000"))]),
    )
    assert not check(dedup, other, T0)
    assert len(dedup) == 4


def test_a_repeater_changes_c_field_and_hop_bits_but_not_the_telegram() -> None:
    meter_id, access_no, payload = wmbus_repeat_key(KAMSTRUP)
    assert meter_id == "KAM-76348799"
    assert access_no == KAMSTRUP[12] == 0x91  # the ELL's ACC: the TPL has none (CI 78/79)
    repeated = bytearray(KAMSTRUP)
    repeated[1] = 0x46  # SND_IR instead of SND_NR
    repeated[11] |= 0x12  # ELL CC: H (hop) and R (repeated access)
    assert wmbus_repeat_key(bytes(repeated)) == (meter_id, access_no, payload)
    dedup = DuplicateFilter(WINDOW)
    assert not check(dedup, KAMSTRUP, T0)
    assert check(dedup, bytes(repeated), T0 + timedelta(seconds=2))
    # The repeated copy still decodes: H and R are outside the AES-CTR counter.
    assert Decoder().decode(bytes(repeated), KAMSTRUP_KEY).meter_id == "KAM-76348799"
    other_cc = bytearray(KAMSTRUP)
    other_cc[11] ^= 0x20  # the S (synchronous) bit is the meter's, not the repeater's
    assert not check(dedup, bytes(other_cc), T0 + timedelta(seconds=3))


def test_access_number_comes_from_the_tpl_after_an_afl() -> None:
    telegram = Decoder().decode(MODE7, bytes(range(16)))
    meter_id, access_no, payload = wmbus_repeat_key(MODE7)
    assert (meter_id, access_no) == (telegram.meter_id, telegram.tpl.access_no)
    assert payload == MODE7[10:]


def test_access_number_of_simulated_meters() -> None:
    air = WmbusFleet(Fleet.generate(20, seed=5))
    decoder = Decoder()
    for tx in air.transmissions(T0, T0 + timedelta(minutes=2))[:15]:
        meter = air.fleet.by_meter_id(tx.meter_id)
        if tx.compact:
            continue
        telegram = decoder.decode(tx.frame, meter.key_at(tx.at), link_format="none")
        assert wmbus_repeat_key(tx.frame)[:2] == (telegram.meter_id, telegram.tpl.access_no)


def test_polls_and_frames_without_access_number_are_never_duplicates() -> None:
    dedup = DuplicateFilter(WINDOW)
    payload = bytes.fromhex("0C78072018000C1669020000")
    assert not dedup.is_duplicate("GWF-00182007", None, payload, T0)
    assert not dedup.is_duplicate("GWF-00182007", None, payload, T0)
    assert len(dedup) == 0
    no_header = oms_frame(0, ci=0x78)
    assert wmbus_repeat_key(no_header)[1] is None
    assert not check(dedup, no_header, T0)
    assert not check(dedup, no_header, T0)


def test_memory_is_bounded_and_the_oldest_go_first() -> None:
    dedup = DuplicateFilter(WINDOW, max_entries=3)
    frames = [oms_frame(n) for n in range(4)]
    for n, frame in enumerate(frames):
        assert not check(dedup, frame, T0 + timedelta(seconds=n))
    assert len(dedup) == 3
    assert dedup.evicted == 1
    assert check(dedup, frames[3], T0 + timedelta(seconds=5))
    assert check(dedup, frames[1], T0 + timedelta(seconds=5))
    # The evicted first frame passes again: a redundant message, never a lost one.
    assert not check(dedup, frames[0], T0 + timedelta(seconds=6))


def test_expired_entries_are_dropped() -> None:
    dedup = DuplicateFilter(WINDOW)
    for n in range(100):
        check(dedup, oms_frame(n), T0 + timedelta(milliseconds=n))
    assert len(dedup) == 100
    check(dedup, oms_frame(200), T0 + WINDOW + timedelta(seconds=1))
    assert len(dedup) == 1
    assert dedup.evicted == 0


def test_a_clock_stepped_back_does_not_hold_frames() -> None:
    dedup = DuplicateFilter(WINDOW)
    frame = oms_frame(9)
    assert not check(dedup, frame, T0)
    assert check(dedup, frame, T0 - timedelta(minutes=1))  # a slightly late receiver stamp
    assert not check(dedup, frame, T0 - timedelta(hours=2))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window"):
        DuplicateFilter(timedelta(0))
    with pytest.raises(ValueError, match="room"):
        DuplicateFilter(WINDOW, max_entries=0)
    with pytest.raises(DecodeError):
        wmbus_repeat_key(b"\x05\x44\x2d\x2c\x01\x02")
    truncated_tpl = oms_frame(1)[:12]
    truncated = bytes([len(truncated_tpl) - 1]) + truncated_tpl[1:]
    assert wmbus_repeat_key(truncated)[1] is None
