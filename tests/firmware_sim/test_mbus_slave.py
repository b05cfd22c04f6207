"""The wired M-Bus slaves as a pure state machine: requests in, wire bytes out."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.decode import Decoder
from decoders.mbus_link import (
    Ack,
    Collision,
    LongFrame,
    NoReply,
    SecondaryAddress,
    application_reset,
    classify_reply,
    parse_frame,
    req_ud1,
    req_ud2,
    rsp_ud,
    select_secondary,
    snd_nke,
)
from decoders.telegram import Telegram
from firmware_sim.consumption import Event
from firmware_sim.fleet import DEFAULT_EPOCH, Fleet
from firmware_sim.mbus_slave import (
    DIF_MORE_FOLLOWS,
    ERROR_BITS,
    SlaveBus,
    pack_telegrams,
    wire_and,
)
from firmware_sim.meter import Identity, Replacement
from metergate.errors import MissingKeyError
from tests.firmware_sim.meters import bus_of, make_meter

NOW = DEFAULT_EPOCH + timedelta(days=40, hours=5)
# PROTOCOL_NOTES §8.4 (verified against libmbus and jMBus): select ID 12345678 with everything
# else a wildcard, then REQ_UD2 to the selected slave with FCB set and clear, and the SND_NKE
# to address 253 that deselects.
SELECT_12345678 = bytes.fromhex("680B0B6873FD5278563412FFFFFFFFD216")
SELECT_1234FFFF = bytes.fromhex("680B0B6873FD52FFFF3412FFFFFFFF0216")
REQ_UD2_FD_FCB = bytes.fromhex("107BFD7816")
REQ_UD2_FD = bytes.fromhex("105BFD5816")
SND_NKE_FD = bytes.fromhex("1040FD3D16")
ACK = b"\xe5"


def talk(bus: SlaveBus, request: bytes) -> bytes:
    exchanges = bus.receive(request, NOW)
    assert len(exchanges) == 1
    return exchanges[0].wire


def decode(wire: bytes, key: bytes | None = None) -> Telegram:
    return Decoder().decode(wire, key)


def test_snd_nke_is_acknowledged_and_req_ud2_answered_with_rsp_ud() -> None:
    m = make_meter("12345678", 5)
    bus = bus_of(m)
    assert talk(bus, snd_nke(5)) == ACK
    telegram = decode(talk(bus, req_ud2(5, True)))
    assert telegram.meter_id == "KAM-12345678"
    assert telegram.primary_address == 5
    assert telegram.tpl.ci == 0x72
    volume = next(r for r in telegram.records if r.quantity == "volume" and r.storage == 0)
    assert volume.value == m.index_at(NOW)
    assert talk(bus, snd_nke(6)) == b""


def test_the_fcb_walks_through_a_multi_telegram_answer_and_repeats_on_request() -> None:
    bus = bus_of(make_meter("12345678", 1), history_months=24)
    talk(bus, snd_nke(1))
    first = talk(bus, req_ud2(1, True))
    assert talk(bus, req_ud2(1, True)) == first  # same FCB: the master missed it
    frames = [first]
    fcb = False
    while decode(frames[-1]).more_records_follow:
        frames.append(talk(bus, req_ud2(1, fcb)))
        fcb = not fcb
    assert len(frames) >= 3
    # Every telegram but the last ends in DIF 1F, the last one does not (EN 13757-3 §6.3.4).
    for frame in frames[:-1]:
        assert parse_frame(frame).data.endswith(DIF_MORE_FOLLOWS)  # type: ignore[union-attr]
    storages = [r.storage for f in frames for r in decode(f).records if r.quantity == "volume"]
    assert sorted(set(storages)) == list(range(25))
    assert len(storages) == len(set(storages))
    # After the last telegram a toggled FCB starts the readout over.
    assert decode(talk(bus, req_ud2(1, fcb))).records[0].quantity == "fabrication_no"
    accesses = [decode(f).tpl.access_no or 0 for f in frames]
    assert accesses == [(accesses[0] + k) % 256 for k in range(len(frames))]


def test_snd_nke_restarts_the_readout() -> None:
    bus = bus_of(make_meter("12345678", 1), history_months=24)
    talk(bus, snd_nke(1))
    first = decode(talk(bus, req_ud2(1, True)))
    second = decode(talk(bus, req_ud2(1, False)))
    assert first.records != second.records
    talk(bus, snd_nke(1))
    again = decode(talk(bus, req_ud2(1, True)))
    assert [r.spec for r in again.records] == [r.spec for r in first.records]


def test_the_notes_select_frames_select_by_id_and_mask() -> None:
    bus = bus_of(make_meter("12345678", 1), make_meter("12349999", 2), make_meter("55345678", 3))
    assert talk(bus, SELECT_12345678) == ACK
    assert decode(talk(bus, REQ_UD2_FD_FCB)).meter_id == "KAM-12345678"
    assert decode(talk(bus, REQ_UD2_FD)).primary_address == 1
    assert talk(bus, SND_NKE_FD) == ACK
    assert talk(bus, REQ_UD2_FD_FCB) == b""  # deselected
    # 1234FFFF matches two slaves: their E5s collide on the wire.
    assert isinstance(classify_reply(talk(bus, SELECT_1234FFFF)), Collision)


def test_after_a_select_the_fcb_continues_from_the_selects() -> None:
    # The select is SND_UD with FCB = 1 (C = 73): the next request toggles it to 0 (5B).
    bus = bus_of(make_meter("12345678", 1), history_months=24)
    assert talk(bus, SELECT_12345678) == ACK
    first = talk(bus, REQ_UD2_FD)
    second = talk(bus, REQ_UD2_FD_FCB)
    assert decode(first).records[0].quantity == "fabrication_no"
    assert decode(second).records[0].storage > 1
    assert talk(bus, REQ_UD2_FD_FCB) == second  # not toggled: repeated
    # A new select starts over, whatever FCB the master uses next.
    talk(bus, SELECT_12345678)
    assert decode(talk(bus, REQ_UD2_FD_FCB)).records[0].quantity == "fabrication_no"


def test_a_select_that_does_not_match_deselects() -> None:
    bus = bus_of(make_meter("12345678", 1))
    talk(bus, select_secondary(SecondaryAddress("12345678")))
    assert talk(bus, select_secondary(SecondaryAddress("87654321"))) == b""
    assert talk(bus, req_ud2(253, True)) == b""
    assert bus.slaves[0].selected is False


@pytest.mark.parametrize(
    ("mask", "selected"),
    [
        # M-field nibbles A-F are ordinary digits: KAM is 2C2D, KAN 2C2E.
        (SecondaryAddress("12345678", 0x2C2D), {"KAM-12345678"}),
        (SecondaryAddress("12345678", 0x2C2E), {"KAN-12345678"}),
        (SecondaryAddress("12345678", 0xFFFD), {"KAM-12345678"}),
        (SecondaryAddress("12345678", 0xFFFE), {"KAN-12345678"}),
        (SecondaryAddress("12345678", 0x2CFF), {"KAM-12345678", "KAN-12345678"}),
        (SecondaryAddress("12345678", version=0x1A), {"KAN-12345678"}),
        (SecondaryAddress("12345678", version=0xFB), {"KAM-12345678"}),
        (SecondaryAddress("12345678", medium=0x0C), {"KAN-12345678"}),
        (SecondaryAddress("12345678", medium=0xFD), set()),
    ],
)
def test_secondary_selection_compares_every_nibble(
    mask: SecondaryAddress, selected: set[str]
) -> None:
    bus = bus_of(
        make_meter("12345678", 1, "KAM", version=0x1B, medium=0x16),
        make_meter("12345678", 2, "KAN", version=0x1A, medium=0x0C),
    )
    reply = classify_reply(talk(bus, select_secondary(mask)))
    assert {s.meter.identity.meter_id for s in bus.slaves if s.selected} == selected
    expected = {0: NoReply, 1: Ack, 2: Collision}[len(selected)]
    assert isinstance(reply, expected)


def test_broadcasts() -> None:
    one = bus_of(make_meter("12345678", 1))
    assert talk(one, snd_nke(255)) == b""  # everyone listens, nobody answers
    assert decode(talk(one, req_ud2(254, True))).meter_id == "KAM-12345678"
    two = bus_of(make_meter("12345678", 1), make_meter("22345678", 2))
    assert isinstance(classify_reply(talk(two, req_ud2(254, True))), Collision)
    assert isinstance(classify_reply(talk(two, snd_nke(254))), Collision)


def test_the_same_primary_address_twice_is_a_collision() -> None:
    bus = bus_of(make_meter("12345678", 7), make_meter("22345678", 7))
    assert isinstance(classify_reply(talk(bus, snd_nke(7))), Collision)
    assert isinstance(classify_reply(talk(bus, req_ud2(7, True))), Collision)


def test_other_requests() -> None:
    bus = bus_of(make_meter("12345678", 1))
    assert talk(bus, req_ud1(1, True)) == ACK  # no alarm data
    assert talk(bus, application_reset(1)) == ACK
    assert talk(bus, rsp_ud(1, 0x72, b"\x00")) == b""  # a slave's frame is no request


def test_flags_reach_the_status_byte_and_the_error_word() -> None:
    leak = Event("leak", NOW - timedelta(days=2), None, 15)
    telegram = decode(talk(bus_of(make_meter("12345678", 1, events=(leak,))), req_ud2(1, True)))
    assert "temporary_error" in telegram.status.flags
    flags = next(r for r in telegram.records if r.quantity == "error_flags")
    assert int(str(flags.value)) == ERROR_BITS["leak"]


def test_a_replaced_meter_answers_with_its_new_identity() -> None:
    new = Identity("KAM", "99999999", 0x1B, 0x16)
    replacement = Replacement(NOW - timedelta(hours=1), new, Decimal("0.001"), None)
    m = make_meter("12345678", 1, replacement=replacement)
    bus = bus_of(m)
    assert decode(talk(bus, req_ud2(1, True))).meter_id == "KAM-99999999"
    assert talk(bus, select_secondary(SecondaryAddress("99999999"))) == ACK


def test_encrypted_answers_need_the_key() -> None:
    key = bytes(range(16))
    bus = bus_of(make_meter("12345678", 1, key=key, security_mode=5), encrypted=True)
    wire = talk(bus, req_ud2(1, True))
    with pytest.raises(MissingKeyError):
        decode(wire)
    telegram = decode(wire, key)
    assert telegram.security.mode == 5 and telegram.security.decrypted
    assert any(r.quantity == "volume" for r in telegram.records)


@pytest.mark.parametrize("fault", ["silent", "truncate", "garbage", "corrupt"])
def test_faults_spoil_one_answer_each(fault: str) -> None:
    bus = bus_of(make_meter("12345678", 1))
    bus.slaves[0].faults.append(fault)  # type: ignore[arg-type]
    spoiled = talk(bus, req_ud2(1, True))
    assert not isinstance(classify_reply(spoiled), LongFrame)
    # The slave believes it sent the telegram: the same FCB gets the same one, intact.
    again = talk(bus, req_ud2(1, True))
    assert isinstance(classify_reply(again), LongFrame)
    assert bus.slaves[0].telegrams_sent == 1


def test_requests_are_framed_from_a_stream_with_noise() -> None:
    bus = bus_of(make_meter("12345678", 1))
    stream = b"\x00\x16" + snd_nke(1) + b"\xff" + req_ud2(1, True)
    whole = [e.wire for e in bus.receive(stream, NOW)]
    assert whole[0] == ACK and isinstance(classify_reply(whole[1]), LongFrame)
    other = bus_of(make_meter("12345678", 1))
    pieces = [e.wire for byte in stream for e in other.receive(bytes((byte,)), NOW)]
    assert pieces == whole


def test_pack_telegrams_keeps_the_budget() -> None:
    records = [bytes([0x04, 0x13]) + bytes(4)] * 30
    payloads = pack_telegrams(records, budget=50)
    assert all(len(p) <= 50 for p in payloads)
    assert [p.endswith(DIF_MORE_FOLLOWS) for p in payloads] == [True] * (len(payloads) - 1) + [
        False
    ]
    assert b"".join(p.removesuffix(DIF_MORE_FOLLOWS) for p in payloads) == b"".join(records)


def test_a_generated_fleet_is_a_bus() -> None:
    fleet = Fleet.generate(12, seed=2)
    bus = SlaveBus.from_fleet(fleet)
    for meter in fleet:
        telegram = decode(talk(bus, req_ud2(meter.primary_address, True)))
        assert telegram.meter_id == meter.identity_at(NOW).meter_id


frames = st.sampled_from([b"\xe5", snd_nke(1), req_ud2(3, True), rsp_ud(9, 0x72, bytes(40))])


rsp_uds = st.builds(
    lambda a, data: rsp_ud(a, 0x72, data),
    st.integers(min_value=0, max_value=250),
    st.binary(min_size=1, max_size=60),
)
# What slaves answer at once: E5 to a select or SND_NKE, RSP_UD to a REQ_UD2.
simultaneous = st.one_of(
    st.integers(min_value=2, max_value=6).map(lambda n: [ACK] * n),
    st.lists(rsp_uds, min_size=2, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(simultaneous, st.integers(min_value=1, max_value=30))
def test_simultaneous_answers_never_look_like_one(answers: list[bytes], skew: int) -> None:
    # On the wire a 0 wins, and each answer starts `skew` bits after the one before: the
    # master never reads one clean answer out of several.
    wire = wire_and(answers, skew)
    assert isinstance(classify_reply(wire), Collision)


@given(frames)
def test_a_single_answer_is_untouched(answer: bytes) -> None:
    assert wire_and([answer]) == answer
    assert wire_and([answer, b""]) == answer
    assert wire_and([]) == b""


def test_two_acks_one_bit_apart() -> None:
    # E5 is 0 1010 0111 1 1 on the wire (start, data LSB first, parity, stop); a copy one bit
    # later ANDs into 0 0000 0011 1 1: the master reads C0, a parity error it cannot see.
    assert wire_and([ACK, ACK], skew_bits=1) == b"\xc0"
    # Eleven bits apart the characters do not overlap: two E5 in a row.
    assert wire_and([ACK, ACK], skew_bits=11) == ACK + ACK
