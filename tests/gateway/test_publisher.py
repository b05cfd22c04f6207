"""The MQTT publisher against a real Mosquitto: order, PUBACK before delete, outages, refusals,
a SIGKILLed gateway, status and Last Will, TLS."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import BrokerConfig
from gateway.messages import status_topic
from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.spool import Spool
from metergate.errors import ConfigError
from tests.gateway.mqtt_services import Mosquitto, Received, Subscriber
from tests.gateway.publish_worker import WINDOW as WORKER_WINDOW
from tests.ingest.services import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


@contextmanager
def publishing(
    spool: Spool, broker: BrokerConfig | str, gateway_id: str, **options: Any
) -> Iterator[Publisher]:
    """A started publisher with quick back-off, stopped at the end of the block."""
    config = BrokerConfig.from_url(broker) if isinstance(broker, str) else broker
    options = {
        "metrics": GatewayMetrics(),
        "status": lambda: {"spool_depth": spool.depth()},
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
    } | options
    publisher = Publisher(spool, config, gateway_id, **options)
    publisher.start()
    try:
        yield publisher
    finally:
        publisher.stop(5)


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"metergate_gateway_{name}", labels)
    return value or 0.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a subscriber saw of the readings of one gateway."""

    seqs: set[int]
    in_order_per_meter: bool
    repeats: int  # the same msg_id again, not flagged DUP: the gateway sent it twice
    redeliveries: int  # the same msg_id again, flagged DUP: the broker's own retry to us


def delivery(received: list[Received], gateway_id: str) -> Delivery:
    seen: set[int] = set()
    first_by_meter: dict[str, list[int]] = defaultdict(list)
    repeats = redeliveries = 0
    for message in received:
        if not message.topic.endswith("/reading"):
            continue
        document = message.document()
        seq = document["seq"]
        assert document["msg_id"] == f"{gateway_id}:{seq}"
        if seq in seen:
            if message.dup:
                redeliveries += 1
            else:
                repeats += 1
            continue
        seen.add(seq)
        first_by_meter[document["meter_id"]].append(seq)
    in_order = all(seqs == sorted(seqs) for seqs in first_by_meter.values())
    return Delivery(seen, in_order, repeats, redeliveries)


def readings_of(subscriber: Subscriber) -> int:
    return sum(1 for m in subscriber.received() if m.topic.endswith("/reading"))


def message(gateway_id: str, meter_id: str, n: int) -> dict[str, Any]:
    return {"schema": "reading/1", "gateway_id": gateway_id, "meter_id": meter_id, "n": n}


@pytest.mark.parametrize("protocol", [5, 4])
def test_every_message_arrives_once_in_seq_order(
    tmp_path: Path, mqtt_url: str, gateway_id: str, protocol: int
) -> None:
    total = 300
    subscriber = Subscriber(mqtt_url, [f"metergate/{gateway_id}/+/reading"])
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    metrics = GatewayMetrics()
    broker = replace(BrokerConfig.from_url(mqtt_url), protocol=protocol)
    stored = []
    with publishing(spool, broker, gateway_id, metrics=metrics, window=8) as publisher:
        for n in range(total):
            meter_id = f"M-{n % 6}"
            stored.append(spool.append("reading", meter_id, message(gateway_id, meter_id, n)))
            if n % 50 == 0:
                publisher.wake()
        publisher.wake()
        wait_until(lambda: readings_of(subscriber) >= total, 30, "every reading")
        wait_until(lambda: spool.depth() == 0, 10, "the spool to empty")
    subscriber.close()

    received = [m for m in subscriber.received() if m.topic.endswith("/reading")]
    # One publisher connection and one subscriber: Mosquitto keeps the order of QoS 1 messages.
    assert [(m.topic, m.payload) for m in received] == [(s.topic, s.payload) for s in stored]
    assert sample(metrics, "publish_latency_seconds_count") == total
    assert sample(metrics, "published_total") == total


def test_a_message_stays_in_the_spool_until_its_puback(
    tmp_path: Path, private_broker: Mosquitto
) -> None:
    gateway_id = "gw-puback"
    subscriber = Subscriber(
        private_broker.url, [f"metergate/{gateway_id}/+/reading"], session_expiry_s=300
    )
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    with publishing(spool, private_broker.url, gateway_id) as publisher:
        wait_until(lambda: publisher.connected, 10, "the connection")
        private_broker.save()  # the subscriber's session survives the kill below
        private_broker.pause()  # connected, but it reads and acknowledges nothing
        spooled = spool.append("reading", "M-1", message(gateway_id, "M-1", 1))
        publisher.wake()
        wait_until(lambda: publisher.in_flight == 1, 10, "the PUBLISH to go out")
        assert spool.pending(10) == [spooled]  # sent, never acknowledged: still spooled

        private_broker.kill()  # it never acknowledges
        wait_until(lambda: not publisher.connected, 10, "the publisher to notice")
        assert spool.pending(10) == [spooled]

        private_broker.start()  # the saved session: the subscriber is subscribed again
        wait_until(lambda: spool.depth() == 0, 20, "the PUBACK after the restart")
        wait_until(lambda: readings_of(subscriber) >= 1, 20, "the reading")
    subscriber.close()
    seen = delivery(subscriber.received(), gateway_id)
    assert (seen.seqs, seen.repeats) == ({spooled.seq}, 0)


def test_a_broker_outage_under_load_loses_and_duplicates_nothing(
    tmp_path: Path, private_broker: Mosquitto
) -> None:
    gateway_id = "gw-outage"
    total = 2000
    subscriber = Subscriber(
        private_broker.url, [f"metergate/{gateway_id}/+/reading"], session_expiry_s=300
    )
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    metrics = GatewayMetrics()
    appended = [0]

    with publishing(spool, private_broker.url, gateway_id, metrics=metrics) as publisher:

        def produce() -> None:
            for n in range(total):
                meter_id = f"M-{n % 25}"
                spool.append("reading", meter_id, message(gateway_id, meter_id, n))
                appended[0] = n + 1
                publisher.wake()
                time.sleep(0.001)

        producer = threading.Thread(target=produce)
        producer.start()
        wait_until(lambda: readings_of(subscriber) >= 600, 30, "600 readings before the stop")
        private_broker.stop()  # graceful, while the producer keeps going
        at_stop = appended[0]
        wait_until(lambda: appended[0] >= at_stop + 500, 30, "500 readings into the outage")
        depth_in_outage = spool.depth()
        private_broker.start()
        producer.join(60)
        wait_until(lambda: spool.depth() == 0, 60, "the spool to empty")
        wait_until(
            lambda: len(delivery(subscriber.received(), gateway_id).seqs) == total,
            60,
            "every reading at the subscriber",
        )
    subscriber.close()

    seen = delivery(subscriber.received(), gateway_id)
    print(
        f"outage: {depth_in_outage} readings spooled while the broker was down;"
        f" {seen.repeats} sent twice by the gateway, {seen.redeliveries} redelivered by the"
        " broker to the subscriber (DUP)"
    )
    assert depth_in_outage >= 500
    assert sample(metrics, "mqtt_connects_total") >= 2
    assert seen.seqs == set(range(1, total + 1))
    assert seen.in_order_per_meter
    # None sent twice: Mosquitto answers each PUBLISH it reads in the same turn of its loop, and
    # a graceful stop finishes that turn, so every PUBLISH it took is acknowledged and every
    # one it did not take reaches nobody; on 127.0.0.1 its PUBACKs are already in our receive
    # buffer when it closes, and paho reads them before the end of the connection. The spool
    # resends only what has no PUBACK, and paho's own resend queue is dropped on reconnect.
    # (A broker crash or a lost network can still make the gateway send a message twice:
    # MQTT QoS 1 is at least once, and msg_id lets the ingest drop the copy.) What the broker
    # had in flight to the subscriber when it stopped comes again flagged DUP: that is the
    # broker's own QoS 1 retry, counted and printed above, not the gateway's.
    assert seen.repeats == 0


# Mosquitto before 2.0.22 with `max_queued_messages 0` (deploy/mosquitto.conf) answers a PUBLISH
# its ACL denies with PUBACK 0x87 and then drops the connection (eclipse-mosquitto issue 3244),
# usually while the gateway is still writing what followed, so the refusal itself is seldom
# read; with a finite queue limit it keeps the connection. Either way nothing is lost, and once
# allowed every reading gets through in order.
@pytest.mark.parametrize("queue_limit", ["deploy", "finite"])
def test_a_refused_publish_stays_in_the_spool_until_the_broker_takes_it(
    tmp_path: Path, queue_limit: str
) -> None:
    gateway_id = "gw-acl"
    acl = tmp_path / "acl"
    allow_m1 = f"topic read #\ntopic write metergate/{gateway_id}/status\n"
    acl.write_text(allow_m1 + f"topic write metergate/{gateway_id}/M-1/reading\n")
    finite = queue_limit == "finite"
    extra = [f"acl_file {acl}"] + (["max_queued_messages 100000"] if finite else [])
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=extra)
    broker.start()
    try:
        subscriber = Subscriber(broker.url, [f"metergate/{gateway_id}/+/reading"])
        spool = Spool(tmp_path / "spool.sqlite", gateway_id)
        metrics = GatewayMetrics()
        meters = ["M-1", "M-2", "M-1", "M-2", "M-1"]
        with publishing(spool, broker.url, gateway_id, metrics=metrics) as publisher:
            spool.append_many(
                ("reading", m, message(gateway_id, m, n)) for n, m in enumerate(meters)
            )
            publisher.wake()
            if finite:
                wait_until(
                    lambda: sample(metrics, "failed_total", reason="puback_refused") >= 3,
                    20,
                    "the refused reading to be tried again",
                )
                # The M-1 readings behind the refused one got through on the same connection.
                assert publisher.connected
                assert sample(metrics, "mqtt_connects_total") == 1
                assert [m.seq for m in spool.pending(10)] == [2, 4]
            else:
                wait_until(
                    lambda: sample(metrics, "mqtt_connect_failures_total") >= 3,
                    20,
                    "the broker to drop the connection again and again",
                )
                # Each connection ends at the refused reading: what follows waits, in order.
                assert [m.seq for m in spool.pending(10) if m.seq >= 2] == [2, 3, 4, 5]

            acl.write_text(allow_m1 + f"topic write metergate/{gateway_id}/+/reading\n")
            broker.reload()
            wait_until(lambda: spool.depth() == 0, 20, "the retried rows to be taken")
            wait_until(lambda: readings_of(subscriber) >= len(meters), 10, "every reading")
        subscriber.close()
    finally:
        broker.close()
    seen = delivery(subscriber.received(), gateway_id)
    assert seen.seqs == {1, 2, 3, 4, 5}
    assert seen.in_order_per_meter
    if finite:
        assert seen.repeats == 0  # answers in flight were awaited before anything was resent
    else:
        # A PUBACK still unread when the broker drops the connection is lost with it, and its
        # reading is sent again: at least once, as QoS 1 promises (msg_id makes it harmless).
        print(f"ACL with max_queued_messages 0: {seen.repeats} readings sent twice")


def test_the_publisher_waits_for_a_broker_that_is_not_up_yet(
    tmp_path: Path, private_broker: Mosquitto
) -> None:
    gateway_id = "gw-late"
    subscriber = Subscriber(
        private_broker.url, [f"metergate/{gateway_id}/+/reading"], session_expiry_s=300
    )
    private_broker.stop()  # saves the subscriber's session
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    metrics = GatewayMetrics()
    with publishing(spool, private_broker.url, gateway_id, metrics=metrics) as publisher:
        spooled = spool.append("reading", "M-1", message(gateway_id, "M-1", 1))
        publisher.wake()
        wait_until(lambda: sample(metrics, "mqtt_connect_failures_total") >= 3, 20, "retries")
        assert not publisher.connected
        assert spool.pending(10) == [spooled]
        private_broker.start()
        wait_until(lambda: spool.depth() == 0, 20, "the reading to go out")
        wait_until(lambda: readings_of(subscriber) >= 1, 20, "the reading to arrive")
    subscriber.close()
    assert delivery(subscriber.received(), gateway_id).seqs == {spooled.seq}


def test_status_is_retained_online_then_offline_after_a_graceful_stop(
    tmp_path: Path, mqtt_url: str, gateway_id: str
) -> None:
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    counts = {"uptime_s": 12.5, "frames": 7, "spool_depth": 0}
    with publishing(spool, mqtt_url, gateway_id, status=lambda: counts) as publisher:
        wait_until(lambda: publisher.connected, 10, "the connection")
        late = Subscriber(mqtt_url, [status_topic(gateway_id)])  # subscribes after the fact
        wait_until(late.received, 10, "the retained status")
        late.close()
    status = late.received()[0]
    assert status.retain
    assert status.document() == {
        "schema": "status/1",
        "gateway_id": gateway_id,
        "state": "online",
        "at": status.document()["at"],
        **counts,
    }
    after_stop = Subscriber(mqtt_url, [status_topic(gateway_id)])
    wait_until(after_stop.received, 10, "the retained status after the stop")
    after_stop.close()
    offline = after_stop.received()[0].document()
    assert (offline["state"], offline["reason"]) == ("offline", "stopped")


def test_a_failing_status_callable_does_not_stop_publishing(
    tmp_path: Path, mqtt_url: str, gateway_id: str
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("status bug")

    subscriber = Subscriber(mqtt_url, [f"metergate/{gateway_id}/#"])
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    metrics = GatewayMetrics()
    with publishing(spool, mqtt_url, gateway_id, metrics=metrics, status=broken) as publisher:
        spool.append("reading", "M-1", message(gateway_id, "M-1", 1))
        publisher.wake()
        wait_until(lambda: readings_of(subscriber) == 1, 10, "the reading")
    subscriber.close()
    status = next(m for m in subscriber.received() if m.topic == status_topic(gateway_id))
    assert status.document()["state"] == "online"
    assert sample(metrics, "failed_total", reason="status_callable") >= 1


def run_worker(spool: Path, gateway_id: str, url: str, count: int) -> subprocess.Popen[str]:
    """publish_worker as a process; its log goes to a file beside the spool."""
    command = ["-m", "tests.gateway.publish_worker", str(spool), gateway_id, url, str(count)]
    with (spool.parent / "worker.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, *command], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True
        )


def test_sigkill_mid_stream_then_restart_replays_the_spool_and_seq_goes_on(
    tmp_path: Path, mqtt_url: str, gateway_id: str
) -> None:
    subscriber = Subscriber(mqtt_url, [f"metergate/{gateway_id}/#"])
    path = tmp_path / "spool.sqlite"
    first = run_worker(path, gateway_id, mqtt_url, 100_000)
    assert first.stdout is not None
    printed: list[int] = []
    for line in first.stdout:
        printed.append(int(line.split()[1]))
        if len(printed) >= 400 and readings_of(subscriber) >= 100:
            break
    first.kill()  # SIGKILL, mid-stream
    first.wait(10)
    # The broker publishes the Last Will for the connection that vanished.
    wait_until(
        lambda: any(
            m.topic == status_topic(gateway_id) and m.document()["state"] == "offline"
            for m in subscriber.received()
        ),
        20,
        "the Last Will",
    )
    will = next(
        m.document()
        for m in subscriber.received()
        if m.topic == status_topic(gateway_id) and m.document()["state"] == "offline"
    )
    assert will == {
        "schema": "status/1",
        "gateway_id": gateway_id,
        "state": "offline",
        "reason": "connection lost",
    }

    second = run_worker(path, gateway_id, mqtt_url, 200)
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, (tmp_path / "worker.log").read_text()
    second_seqs = [int(line.split()[1]) for line in out.splitlines() if line.startswith("seq")]
    # seq goes on after the last committed one (the kill may have come between a commit and
    # its line on stdout, so that message is the only one that may fall between).
    assert max(printed) < second_seqs[0] <= max(printed) + 2
    assert second_seqs == list(range(second_seqs[0], second_seqs[0] + 200))
    with Spool(path, gateway_id) as spool:
        assert spool.depth() == 0
    wait_until(
        lambda: len(delivery(subscriber.received(), gateway_id).seqs) == second_seqs[-1],
        20,
        "every committed reading",
    )
    subscriber.close()
    seen = delivery(subscriber.received(), gateway_id)
    print(f"SIGKILL: {seen.repeats} readings sent again after the restart")
    assert seen.seqs == set(range(1, second_seqs[-1] + 1))  # nothing committed was lost
    assert seen.in_order_per_meter
    # Only messages in flight at the kill (at most the window) can go out twice.
    assert seen.repeats <= WORKER_WINDOW


def test_a_corrupted_row_is_quarantined_and_the_rest_goes_out(
    tmp_path: Path, mqtt_url: str, gateway_id: str
) -> None:
    subscriber = Subscriber(mqtt_url, [f"metergate/{gateway_id}/+/reading"])
    spool = Spool(tmp_path / "spool.sqlite", gateway_id)
    spool.append_many(("reading", "M-1", message(gateway_id, "M-1", n)) for n in range(5))
    with sqlite3.connect(tmp_path / "spool.sqlite") as other:
        other.execute("UPDATE outbox SET payload = x'c328' WHERE seq = 3")  # not UTF-8
    metrics = GatewayMetrics()
    with publishing(spool, mqtt_url, gateway_id, metrics=metrics) as publisher:
        publisher.wake()
        wait_until(lambda: readings_of(subscriber) == 4, 10, "the four good readings")
        wait_until(lambda: sample(metrics, "spool_quarantined") == 1, 5, "the quarantine gauge")
        assert publisher.connected
    subscriber.close()
    assert delivery(subscriber.received(), gateway_id).seqs == {1, 2, 4, 5}
    assert (spool.depth(), spool.quarantined()) == (0, 1)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_publishes_over_tls(tmp_path: Path) -> None:
    gateway_id = "gw-tls"
    cert, key = make_certificate(tmp_path)
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "mosquitto",
        extra_config=[f"listener {tls_port} 127.0.0.1", f"certfile {cert}", f"keyfile {key}"],
    )
    broker.start()
    try:
        subscriber = Subscriber(broker.url, [f"metergate/{gateway_id}/+/reading"])
        spool = Spool(tmp_path / "spool.sqlite", gateway_id)
        config = replace(BrokerConfig.from_url(f"mqtts://127.0.0.1:{tls_port}"), ca_file=str(cert))
        with publishing(spool, config, gateway_id) as publisher:
            spool.append("reading", "M-1", message(gateway_id, "M-1", 1))
            publisher.wake()
            wait_until(lambda: readings_of(subscriber) == 1, 20, "the reading over TLS")
        subscriber.close()
    finally:
        broker.close()


def test_tls_files_that_cannot_be_read_are_a_config_error(tmp_path: Path) -> None:
    config = replace(
        BrokerConfig.from_url("mqtts://127.0.0.1:8883"), ca_file=str(tmp_path / "missing.pem")
    )
    spool = Spool(tmp_path / "spool.sqlite", "gw-tls")
    with pytest.raises(ConfigError, match="TLS"):
        Publisher(spool, config, "gw-tls", metrics=GatewayMetrics(), status=dict)


def test_the_window_holds_at_least_one_message(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", "gw-w")
    with pytest.raises(ValueError, match="window"):
        Publisher(
            spool, BrokerConfig("127.0.0.1"), "gw-w", metrics=GatewayMetrics(), status=dict,
            window=0,
        )  # fmt: skip


def test_a_gateway_of_its_own_topic_root(tmp_path: Path, private_broker: Mosquitto) -> None:
    """Two deployments on one broker: readings and status go under the gateway's root only."""
    gateway_id = "gw-root"
    ours = Subscriber(private_broker.url, ["utility-b/#"])
    default_root = Subscriber(private_broker.url, ["metergate/#"])
    spool = Spool(tmp_path / "spool.sqlite", gateway_id, topic_root="utility-b")
    spooled = spool.append("reading", "M-1", message(gateway_id, "M-1", 1))
    with publishing(spool, private_broker.url, gateway_id):
        wait_until(lambda: spool.depth() == 0, 20, "the PUBACK")
        wait_until(lambda: readings_of(ours) >= 1, 20, "the reading")
    wait_until(lambda: len(ours.received()) >= 3, 20, "status online, reading, status offline")
    ours.close()
    default_root.close()
    topics = {m.topic for m in ours.received()}
    assert topics == {f"utility-b/{gateway_id}/M-1/reading", status_topic(gateway_id, "utility-b")}
    assert spooled.topic == f"utility-b/{gateway_id}/M-1/reading"
    assert default_root.received() == []
