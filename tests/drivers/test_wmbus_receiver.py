"""The wM-Bus receiver drivers against the simulated receivers on real pseudo-terminals:
configuration, a fleet of 50 decoded with its keys, garbage, truncation, timeouts, refusals
and a device that vanishes and comes back."""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from itertools import islice
from pathlib import Path

import pytest

from decoders.decode import Decoder
from decoders.telegram import Telegram
from decoders.wmbus_link import parse_dll
from drivers import amb8465_framing as amb
from drivers import im871a_framing as imst
from drivers.received import ReceivedFrame
from drivers.rtlwmbus_framing import encode_hex_line, encode_rtlwmbus_line
from drivers.wmbus_receiver import open_receiver
from firmware_sim.fleet import SimClock
from firmware_sim.receivers import DEVICES, Amb8465Device, Im871aDevice, ReceiverDevice
from firmware_sim.wmbus_meters import Transmission
from metergate.errors import (
    DecodeError,
    DeviceError,
    DeviceTimeout,
    TransportError,
)
from tests.drivers.wmbus_sim import (
    START,
    air,
    clean_transmissions,
    meter_of,
    receiver_for,
    serving,
)

# --- a fleet of 50 on every receiver -------------------------------------------------------


def check_values(received: ReceivedFrame, telegram: Telegram, clock: SimClock, kind: str) -> bool:
    """Whether the frame is one the fleet model says its meter sent (or the start of one, for
    a truncated telegram); if so, that its values are the model's and the receiver's side
    information fits."""
    assert telegram.address is not None
    wm = meter_of(telegram.address.meter_id)
    meter = wm.meter
    instants = [
        t
        for t in meter.transmissions(START, clock.now() + timedelta(seconds=1))
        if meter.access_no_at(t) == telegram.tpl.access_no
        and wm.telegram(t)[1:].startswith(received.frame[1:])
    ]
    if not instants:
        return False
    # A truncated telegram may end in what the decoder calls an unparsed tail.
    values = [r.value for r in telegram.records if r.spec.quantity != "unparsed_tail"]
    assert values
    assert any(wm.values(t)[: len(values)] == values for t in instants)
    if kind in ("im871a", "amb8465"):
        assert received.rssi_dbm is not None
        assert abs(received.rssi_dbm - wm.radio.level_dbm) <= 3
    if kind == "rtlwmbus":
        # POSIX seconds near 1.8e9 as a float resolve about 0.24 µs: a microsecond of slack.
        assert received.device_time is not None
        assert any(abs(received.device_time - t.timestamp()) <= 1e-6 for t in instants)
    if kind == "im871a":
        assert isinstance(received.device_time, int)
    return True


@pytest.mark.parametrize("kind", ["im871a", "amb8465", "rtlwmbus", "hex"])
def test_every_meter_of_a_fleet_of_50_decodes(kind: str, tmp_path: Path) -> None:
    """With telegrams damaged on air and messages spoiled on the line. Hex lines are the one
    source where a frame that was never sent can decode: a format B frame damaged on air has
    the length of a stripped frame, and strip_crcs then takes it as one (its docstring says
    so); a cut line running into the next may pass as a frame whose L was wrong."""
    fleet = air()
    keys = fleet.keys()
    decoder = Decoder()
    wanted = {m.meter.identity_at(START).meter_id for m in fleet.meters}
    decoded: set[str] = set()
    failures = never_sent = 0
    with serving(DEVICES[kind](), fault_rate=0.03, tmp_path=tmp_path) as (server, clock):
        receiver = receiver_for(server, kind, mode="C1T1")
        deadline = time.monotonic() + 15
        try:
            for received in receiver.frames(idle_timeout_s=3):
                meter_id = parse_dll(received.frame)[1].meter_id
                try:
                    telegram = decoder.decode(
                        received.frame, keys.get(meter_id), link_format="none"
                    )
                except DecodeError:
                    # Truncated telegrams ("short" faults); compact ones before a full one.
                    failures += 1
                    continue
                if check_values(received, telegram, clock, kind):
                    decoded.add(meter_id)
                else:
                    never_sent += 1
                if decoded >= wanted or time.monotonic() > deadline:
                    break
        finally:
            receiver.close()
        assert server.faults > 0
    assert decoded >= wanted
    assert failures < receiver.stats.frames / 4
    # The AMB8465's one-byte checksum lets one false start in 256 through (a cut message
    # reaching into the next); the iM871A's 16-bit FCS and rtl_wmbus's text none in practice.
    allowed = {"hex": receiver.stats.frames / 50, "amb8465": receiver.stats.frames / 200}
    assert never_sent <= allowed.get(kind, 0)


# --- configuration ---------------------------------------------------------------------------


def test_im871a_is_configured_for_the_mode_asked(tmp_path: Path) -> None:
    device = Im871aDevice()  # S1 after power-on: hears none of this fleet
    with (
        serving(device, tmp_path=tmp_path) as (server, _),
        receiver_for(server, "im871a", mode="T1") as receiver,
    ):
        assert (device.link_mode, device.rssi, device.timestamp) == (0x03, True, True)
        assert receiver.device_info is not None  # type: ignore[attr-defined]
        frames = list(islice(receiver.frames(idle_timeout_s=3), 40))
    modes = {meter_of(parse_dll(f.frame)[1].meter_id).radio.link_mode for f in frames}
    assert modes == {"T1"}
    assert {f.link_mode for f in frames} == {"T1"}


def test_amb8465_gets_rssi_switched_on_and_its_mode_set(tmp_path: Path) -> None:
    device = Amb8465Device(rssi=0)
    with (
        serving(device, tmp_path=tmp_path) as (server, _),
        receiver_for(server, "amb8465", mode="C1") as receiver,
    ):
        assert device.memory[amb.PARAM_RSSI_ENABLE] == 1 and device.rssi
        assert device.mode == 0x0E
        frames = list(islice(receiver.frames(idle_timeout_s=3), 40))
    modes = {meter_of(parse_dll(f.frame)[1].meter_id).radio.link_mode for f in frames}
    assert modes == {"C1"}
    assert all(f.rssi_dbm is not None for f in frames)


def test_rtlwmbus_keeps_the_frames_of_its_mode(tmp_path: Path) -> None:
    with (
        serving(DEVICES["rtlwmbus"](), tmp_path=tmp_path) as (server, _),
        receiver_for(server, "rtlwmbus", mode="C1") as receiver,
    ):
        frames = list(islice(receiver.frames(idle_timeout_s=3), 30))
        assert receiver.stats.skipped > 0
    assert {f.link_mode for f in frames} == {"C1"}


class _Refusing(Im871aDevice):
    def _configure(self, payload: bytes) -> int:
        return 0x01


class _RefusingAmber(Amb8465Device):
    def _answer(self, message: amb.AmberMessage) -> bytes:
        if message.command == amb.CMD_SET_MODE_REQ:
            return amb.set_mode_confirm(0x01)
        return super()._answer(message)


@pytest.mark.parametrize(("device", "kind"), [(_Refusing, "im871a"), (_RefusingAmber, "amb8465")])
def test_a_refused_configuration_is_a_device_error(
    device: type[ReceiverDevice], kind: str, tmp_path: Path
) -> None:
    with (
        serving(device(), tmp_path=tmp_path) as (server, _),
        pytest.raises(DeviceError, match="refused"),
    ):
        receiver_for(server, kind)


@contextmanager
def raw_pty() -> Iterator[tuple[int, str]]:
    """A pty with nothing behind it but what the test writes into the master."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("kind", ["im871a", "amb8465"])
def test_a_silent_stick_is_a_device_timeout(kind: str) -> None:
    with raw_pty() as (_, port):
        started = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no answer"):
            open_receiver(f"{kind}:{port}", answer_timeout_s=0.3)
        assert time.monotonic() - started < 2


def test_no_telegram_for_too_long_is_a_device_timeout(tmp_path: Path) -> None:
    with serving(Im871aDevice(), speed=0.0, tmp_path=tmp_path) as (server, _):
        receiver = receiver_for(server, "im871a")
        started = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no telegram"):
            next(receiver.frames(idle_timeout_s=0.3))
        assert 0.25 < time.monotonic() - started < 2
        receiver.close()


# --- bad bytes on the port ------------------------------------------------------------------


def _indications(kind: str, txs: list[Transmission]) -> list[bytes]:
    if kind == "im871a":
        return [imst.data_indication(tx.frame, rssi=100) for tx in txs]
    if kind == "amb8465":
        return [amb.data_indication(tx.frame, 0x90) for tx in txs]
    if kind == "rtlwmbus":
        return [encode_rtlwmbus_line(tx.frame, mode=tx.link_mode) for tx in txs]
    return [encode_hex_line(tx.on_air) for tx in txs]


GARBAGE = bytes.fromhex("A5 FF 03 00 A5 42 03 40 FF FF 0A 0D") + b"\x00\n;;0x\n"


@pytest.mark.parametrize("kind", ["rtlwmbus", "hex", "im871a", "amb8465"])
def test_garbage_and_truncated_messages_on_the_port(kind: str, tmp_path: Path) -> None:
    """Between good messages: garbage, a message cut short, a message with a changed byte;
    only the good ones come through, and what was thrown away is counted."""
    txs = clean_transmissions()
    good = _indications(kind, txs)
    spoiled = _indications(kind, clean_transmissions(8)[6:])
    text = kind in ("rtlwmbus", "hex")
    cut = spoiled[0][: len(spoiled[0]) // 2] + (b"\n" if text else b"")
    changed = bytearray(spoiled[1])
    changed[len(changed) // 2] = ord("?") if text else changed[5] ^ 0x55
    stream = b"".join(
        (GARBAGE, good[0], cut, good[1], good[2], bytes(changed), good[3], GARBAGE, good[4])
    )
    with serving(DEVICES[kind](), speed=0.0, tmp_path=tmp_path) as (server, _):
        receiver = receiver_for(server, kind, mode="C1T1")
        server.inject(stream + good[5][:7])
        got: list[ReceivedFrame] = []
        deadline = time.monotonic() + 2
        while len(got) < 5 and time.monotonic() < deadline:
            got += receiver.read(time.monotonic() + 0.1) or []
        receiver.close()
    assert [f.frame for f in got] == [tx.frame for tx in txs[:5]]
    assert receiver.stats.discarded_bytes > len(GARBAGE)


# --- a device that vanishes ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["im871a", "amb8465", "hex"])
def test_unplugging_and_plugging_back_is_survived(kind: str, tmp_path: Path) -> None:
    device = DEVICES[kind]()
    with serving(device, speed=200.0, tmp_path=tmp_path) as (server, _):
        receiver = receiver_for(server, kind, mode="C1T1")
        frames = receiver.frames(idle_timeout_s=5)
        before = list(islice(frames, 10))
        server.unplug()
        time.sleep(0.3)
        server.replug()  # powered up again: S1 and no RSSI, until configured again
        after = list(islice(frames, 10))
        receiver.close()
    assert len(before) == len(after) == 10
    assert receiver.stats.reconnects == 1
    if isinstance(device, Im871aDevice):
        assert device.link_mode == 0x0A
    if isinstance(device, Amb8465Device):
        assert device.mode == 0x09


def test_a_device_that_stays_away_is_a_transport_error(tmp_path: Path) -> None:
    with serving(Im871aDevice(), tmp_path=tmp_path) as (server, _):
        receiver = receiver_for(server, "im871a", reconnect_budget_s=0.5)
        frames = receiver.frames(idle_timeout_s=5)
        next(frames)
        server.unplug()
        started = time.monotonic()
        with pytest.raises(TransportError, match="still gone"):
            list(frames)
        assert time.monotonic() - started < 3
        receiver.close()
