"""The whole gateway against simulated meters and a real Mosquitto (issue 4, must show).

The simulated fleet transmits on an emulated iM871A, a wired M-Bus of four meters answers on
another pty and a Modbus flow meter serves on a TCP port; the gateway is configured by a TOML
file as an installer writes it. A subscriber on the broker must see every reading the gateway
spooled exactly once, as a valid reading/1 payload, in order per meter; a meter whose key in
the keys file is wrong shows up on the raw topic with the decryption error.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from decoders.modbus_map import RegisterMap
from firmware_sim.fleet import DEFAULT_EPOCH, SimClock
from firmware_sim.modbus_meters import FlowMeterBank
from firmware_sim.modbus_server import ModbusTcpSimulator
from firmware_sim.receivers import Im871aDevice
from firmware_sim.serve_mbus import PtyMbusServer
from firmware_sim.serve_wmbus import ReceiverServer
from gateway.config import load_config, load_gateway_keys
from gateway.daemon import Gateway
from gateway.messages import status_topic
from gateway.spool import Spool
from metergate.cli import main
from metergate.profiles import load_register_map
from tests.drivers.wmbus_sim import START, air
from tests.firmware_sim.meters import bus_of, make_meter
from tests.gateway.mqtt_services import Received, Subscriber
from tests.gateway.test_publisher import delivery
from tests.ingest.services import wait_until

REPO = Path(__file__).resolve().parents[2]
MAGMETER: RegisterMap = load_register_map("generic-magmeter")
WRONG_KEY = "00112233445566778899AABBCCDDEEFF"

pytestmark = pytest.mark.timeout(180)


def write_config(
    tmp_path: Path,
    gateway_id: str,
    mqtt_url: str,
    *,
    receiver: str,
    keys: dict[str, bytes | str],
    mbus: str | None = None,
    modbus: str | None = None,
) -> Path:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(
        "[keys]\n"
        + "".join(
            f'"{meter}" = "{key.hex() if isinstance(key, bytes) else key}"\n'
            for meter, key in keys.items()
        )
    )
    keys_file.chmod(0o600)
    text = f"""
gateway_id = "{gateway_id}"
spool_path = "spool.sqlite"
metrics_port = 0
keys_file = "keys.toml"

[mqtt]
url = "{mqtt_url}"

[[receivers]]
device = "im871a:{receiver}"
mode = "C1T1"
"""
    if mbus is not None:
        text += f'\n[[mbus]]\nport = "{mbus}"\naddresses = [1, 2, 3, 4]\ninterval_s = 3600\n'
    if modbus is not None:
        text += (
            f'\n[[modbus]]\nurl = "{modbus}"\nunit_id = 1\nprofile = "generic-magmeter"\n'
            'interval_s = 3600\nmeter_id = "SIE-00004711"\n'
            '\n[[meters]]\nmeter_id = "SIE-00004711"\nlat = "56.9496"\nlon = "24.1052"\n'
        )
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def check_reading(document: dict[str, Any]) -> None:
    """A reading/1 payload as DESIGN.md section 3 describes it."""
    assert document["schema"] == "reading/1"
    assert document["msg_id"] == f"{document['gateway_id']}:{document['seq']}"
    assert document["protocol"] in {"wmbus", "mbus", "modbus"}
    assert document["received_at"].endswith("Z")
    assert bytes.fromhex(document["frame"])
    assert isinstance(document["status"]["flags"], list)
    for reading in document["readings"]:
        assert Decimal(reading["value"]).is_finite()  # an exact decimal string
        assert reading["measured_at"].endswith("Z")
        assert reading["quantity"] and "unit" in reading


def documents(received: list[Received], kind: str) -> list[dict[str, Any]]:
    return [m.document() for m in received if m.topic.endswith(f"/{kind}")]


class HaltingClock:
    """The fleet's clock at 1000x, until halt(): then the air falls silent, and a test can
    wait for the last telegrams to arrive instead of cutting them off in the pty."""

    def __init__(self) -> None:
        self._clock = SimClock(START, 1000.0)
        self._halted_at: datetime | None = None

    def now(self) -> datetime:
        return self._halted_at or self._clock.now()

    def halt(self) -> None:
        self._halted_at = self._clock.now()


@pytest.fixture
def clock() -> HaltingClock:
    return HaltingClock()


@pytest.fixture
def wmbus(tmp_path: Path, clock: HaltingClock) -> Iterator[ReceiverServer]:
    server = ReceiverServer(Im871aDevice(), air(), clock=clock.now, link=tmp_path / "ttyWMBUS0")
    with server:
        yield server
    assert not server.errors


def test_simulated_meters_reach_the_broker_once_each(
    tmp_path: Path, mqtt_url: str, gateway_id: str, wmbus: ReceiverServer, clock: HaltingClock
) -> None:
    keys: dict[str, bytes | str] = dict(air().keys())
    wrong = sorted(keys)[0]
    keys[wrong] = WRONG_KEY
    bus = bus_of(*(make_meter(f"5000000{n}", n) for n in range(1, 5)))
    now = DEFAULT_EPOCH + timedelta(days=30)
    bank = FlowMeterBank.generate(MAGMETER, 1, seed=5, clock=lambda: now)
    with (
        PtyMbusServer(bus, link=tmp_path / "ttyMBUS0", clock=lambda: now) as mbus,
        ModbusTcpSimulator(bank) as modbus,
    ):
        config = load_config(
            write_config(
                tmp_path,
                gateway_id,
                mqtt_url,
                receiver=wmbus.url,
                keys=keys,
                mbus=mbus.url,
                modbus=modbus.url,
            )
        )
        subscriber = Subscriber(mqtt_url, [f"metergate/{gateway_id}/+/+", status_topic(gateway_id)])
        spooled: list[dict[str, Any]] = []
        gateway = Gateway(config, load_gateway_keys(config.keys_file), on_spooled=spooled.extend)
        gateway.start()
        try:
            wait_until(lambda: wmbus.sent >= 300, 60, "300 radio telegrams")
            clock.halt()
            wait_until(
                lambda: sum(d["protocol"] == "wmbus" for d in spooled) == wmbus.sent,
                30,
                "every telegram sent on the air",
            )
            wait_until(
                lambda: {d["protocol"] for d in spooled} >= {"wmbus", "mbus", "modbus"},
                30,
                "a reading from every kind of source",
            )
            wait_until(
                lambda: gateway.spool is not None and gateway.spool.depth() == 0, 30, "PUBACKs"
            )
            wait_until(
                lambda: len(subscriber.received()) >= len(spooled), 30, "every spooled message"
            )
        finally:
            gateway.stop()
            subscriber.close()
        assert not mbus.errors and not modbus.errors

    received = subscriber.received()
    readings = documents(received, "reading")
    raws = documents(received, "raw")
    seen = delivery(received, gateway_id)
    assert seen.repeats == 0 and seen.in_order_per_meter
    assert sorted(d["msg_id"] for d in readings + raws) == sorted(d["msg_id"] for d in spooled)
    for document in readings:
        check_reading(document)
    by_protocol = Counter(d["protocol"] for d in readings)
    # Every telegram the receiver delivered became one message: a reading, or raw for the
    # meter with the wrong key; the radio sent no repeats, so none was filtered.
    assert by_protocol["wmbus"] + len(raws) == wmbus.sent
    assert {d["meter_id"] for d in readings if d["protocol"] == "mbus"} == {
        f"KAM-5000000{n}" for n in range(1, 5)
    }
    (flow,) = (d for d in readings if d["protocol"] == "modbus")
    assert flow["meter_id"] == "SIE-00004711"
    assert flow["location"] == {"lat": "56.9496", "lon": "24.1052"}
    undecrypted = {d["meter_id"] for d in raws if d["error"]["type"] == "DecryptionError"}
    assert undecrypted == {wrong}
    # A compact frame heard before any full frame of its format cannot be decoded yet: it
    # travels raw, to be decoded again from the stored frame (issue 5).
    assert all(
        "not learned yet" in d["error"]["message"]
        for d in raws
        if d["error"]["type"] != "DecryptionError"
    )
    assert WRONG_KEY.lower() not in str(received).lower()
    statuses = [m.document() for m in received if m.topic == status_topic(gateway_id)]
    assert statuses[0]["state"] == "online" and statuses[-1]["state"] == "offline"
    assert {"uptime_s", "spool_depth", "received", "readings", "raw"} <= statuses[0].keys()


def run_gateway(config: Path) -> subprocess.Popen[bytes]:
    log = (config.parent / "gateway.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "metergate", "gateway", "run", "--config", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def seqs_of(received: list[Received]) -> list[int]:
    """The seq of every reading and raw message, in arrival order (repeats included)."""
    return [m.document()["seq"] for m in received if m.topic.endswith(("/reading", "/raw"))]


def test_sigkill_mid_stream_then_restart(
    tmp_path: Path, mqtt_url: str, gateway_id: str, wmbus: ReceiverServer
) -> None:
    config = write_config(tmp_path, gateway_id, mqtt_url, receiver=wmbus.url, keys=air().keys())
    subscriber = Subscriber(mqtt_url, [f"metergate/{gateway_id}/+/+"])
    first = run_gateway(config)
    try:
        wait_until(lambda: len(seqs_of(subscriber.received())) >= 100, 60, "100 messages")
    finally:
        first.kill()  # SIGKILL, mid-stream
        first.wait(10)
    with Spool(tmp_path / "spool.sqlite", gateway_id) as spool:
        last_before = spool.last_seq()
    second = run_gateway(config)
    try:
        wait_until(
            lambda: max(seqs_of(subscriber.received())) > last_before + 50,
            60,
            "messages of the restarted gateway",
        )
        wmbus.stop()
        with Spool(tmp_path / "spool.sqlite", gateway_id) as spool:
            wait_until(lambda: spool.depth() == 0, 30, "an empty spool")
            last = spool.last_seq()
        wait_until(
            lambda: set(seqs_of(subscriber.received())) >= set(range(1, last + 1)),
            30,
            "every spooled message",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, (tmp_path / "gateway.log").read_text()
        subscriber.close()
    received = subscriber.received()
    seqs = seqs_of(received)
    assert set(seqs) == set(range(1, last + 1))  # nothing spooled was lost; seq went on
    assert delivery(received, gateway_id).in_order_per_meter
    # Only what was in flight at the kill (the publisher's window) may go out twice.
    assert len(seqs) - len(set(seqs)) <= 100


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.write_text(p.read_text().replace('mode = "C1T1"', 'mode = "X9"')), "mode"),
        (lambda p: p.write_text(p.read_text() + "\nspeed = 3\n"), "speed"),
        (lambda p: (p.parent / "keys.toml").chmod(0o644), "chmod 600"),
        (lambda p: p.write_text("gateway_id = [\n"), "gateway.toml"),
        (lambda p: p.unlink(), "cannot read"),
    ],
)
def test_a_bad_configuration_stops_the_start_with_file_and_key(
    tmp_path: Path,
    mqtt_url: str,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    message: str,
) -> None:
    config = write_config(tmp_path, "gw-bad", mqtt_url, receiver="/dev/null", keys={})
    change(config)
    for command in ("check", "run"):
        assert main(["gateway", command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert "gateway.toml" in err or "keys.toml" in err
    assert not (tmp_path / "spool.sqlite").exists()


def test_check_prints_what_would_run(
    tmp_path: Path, mqtt_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, "gw-check", mqtt_url, receiver="/dev/ttyUSB0", keys={"KAM-12345678": bytes(16)}
    )
    assert main(["gateway", "check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "gateway gw-check" in out and "1 keys" in out
    assert "receiver im871a:/dev/ttyUSB0 mode C1T1" in out
    assert bytes(16).hex() not in out
