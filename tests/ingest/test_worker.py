"""The ingest worker against the real Mosquitto and PostgreSQL, faults included (DESIGN.md
section 9): bad payloads, redelivery, SIGKILL mid-batch, the database crashing and coming
back, and a burst while the worker is held up."""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from paho.mqtt.client import MQTTv311

from metergate.cli import main
from tests.ingest.messages import encode, raw, reading, rows_of
from tests.ingest.services import (
    PrivateBroker,
    PrivateCluster,
    PrivateNats,
    Publisher,
    WorkerProcess,
    count,
    nats_server,
    private_cluster_unavailable,
    running,
    wait_until,
    worker_config,
)

pytestmark = pytest.mark.timeout(180)

READINGS = "SELECT count(*) FROM readings"


def stored_rows(url: str) -> set[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return set(
            conn.execute(
                "SELECT meter_id, quantity, storage, tariff, subunit, function, measured_at, value"
                " FROM readings"
            )
        )


def writer_waiting(database_url: str) -> bool:
    """Whether an ingest connection waits for a lock (the test's lock on readings)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'metergate-ingest' AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def process_args(database_url: str, mqtt_url: str, topic_root: str) -> list[str]:
    return [
        "--database-url", database_url, "--mqtt-url", mqtt_url, "--topic-root", topic_root,
        "--share-group", topic_root, "--client-id", f"{topic_root}-worker",
        "--batch-size", "20", "--batch-ms", "20", "--session-expiry", "120",
    ]  # fmt: skip


def test_bad_payloads_become_dead_letters_and_the_worker_goes_on(
    db: str, mqtt_url: str, topic_root: str, publisher: Publisher
) -> None:
    good = [reading(seq, topic_root=topic_root) for seq in range(30)]
    raws = [raw(100 + seq, topic_root=topic_root, meter_id="KAM-99873476") for seq in range(3)]
    topic = good[0][0]
    float_value = json.loads(json.dumps(good[0][1]))
    float_value["readings"][0]["value"] = 7.5
    naive = json.loads(json.dumps(good[1][1]))
    naive["readings"][0]["measured_at"] = "2026-10-31T22:00:00"
    missing = json.loads(json.dumps(good[2][1]))
    del missing["readings"]
    wrong_schema = dict(good[3][1], schema="reading/9")
    bad = [
        (topic, b"\xff\xfe garbage \x00"),
        (topic, b""),
        (topic, b"[]"),
        (topic, json.dumps(float_value).encode()),
        (topic, json.dumps(naive).encode()),
        (topic, json.dumps(missing).encode()),
        (topic, json.dumps(wrong_schema).encode()),
        (f"{topic_root}/gw-01/KAM-00000031/reading", json.dumps(good[4][1]).encode()),
        (f"{topic_root}/gw-01/KAM-00000031/raw", json.dumps(good[5][1]).encode()),
    ]
    sequence = [encode(m) for m in good[:10]] + bad + [encode(m) for m in good[10:] + raws]
    with running(worker_config(db, mqtt_url, topic_root)) as worker:
        publisher.publish(sequence)
        wait_until(
            lambda: (
                count(db, READINGS) == 60
                and count(db, "SELECT count(*) FROM dead_letters") == len(bad)
                and count(db, "SELECT count(*) FROM raw_frames") == 3
            ),
            60,
            "every message stored",
        )
        assert worker.totals.dead_letters == len(bad)
    assert stored_rows(db) == rows_of(good)
    with psycopg.connect(db) as conn:
        letters = dict(
            conn.execute("SELECT payload, error FROM dead_letters WHERE payload = %s", (bad[0][1],))
        )
        errors = [row[0] for row in conn.execute("SELECT error FROM dead_letters")]
    assert "Invalid JSON" in letters[bad[0][1]]
    assert any("readings.0.value: a value is an exact decimal string" in e for e in errors)
    assert any("readings.0.measured_at" in e for e in errors)
    assert any("readings: Field required" in e for e in errors)
    assert any("schema: Input should be 'reading/1'" in e for e in errors)
    assert sum("topic's gateway or meter differs" in e for e in errors) == 1


def test_the_worker_serves_its_metrics(
    db: str, mqtt_url: str, topic_root: str, publisher: Publisher
) -> None:
    messages = [reading(seq, topic_root=topic_root) for seq in range(30)]
    config = worker_config(db, mqtt_url, topic_root, metrics_port=0)
    with running(config) as worker:
        publisher.publish(encode(m) for m in messages)
        publisher.publish(encode(m) for m in messages[:10])  # ten redelivered
        wait_until(lambda: worker.totals.duplicate_readings == 20, 60, "every copy written")
        assert worker.metrics_server is not None
        url = f"http://127.0.0.1:{worker.metrics_server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["metergate_ingest_messages_total"] == 40
    assert samples['metergate_ingest_stored_total{kind="readings"}'] == 60
    assert samples['metergate_ingest_duplicates_total{kind="readings"}'] == 20
    assert samples['metergate_ingest_stored_total{kind="status_reports"}'] == 30
    assert samples["metergate_ingest_mqtt_connected"] == 1
    assert samples["metergate_ingest_batch_write_seconds_count"] >= 1
    assert worker.metrics_server is None  # stopped with the worker


def test_a_metrics_port_in_use_is_refused_at_start(
    db: str, mqtt_url: str, topic_root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = process_args(db, mqtt_url, topic_root)
        assert main(["ingest", "run", *args, "--metrics-port", str(port)]) == 2
    assert f"--metrics-port: cannot serve metrics on 127.0.0.1:{port}" in capsys.readouterr().err


def test_redelivered_messages_are_stored_once(
    db: str, mqtt_url: str, topic_root: str, publisher: Publisher
) -> None:
    messages = [reading(seq, topic_root=topic_root) for seq in range(30)]
    with running(worker_config(db, mqtt_url, topic_root)) as worker:
        publisher.publish(encode(m) for m in messages)
        publisher.publish(encode(m) for m in messages)
        wait_until(
            lambda: worker.totals.readings + worker.totals.duplicate_readings == 120,
            60,
            "both copies written",
        )
        assert (worker.totals.readings, worker.totals.duplicate_readings) == (60, 60)
    assert stored_rows(db) == rows_of(messages)


@pytest.mark.parametrize(
    "variant",
    [(4, True), (4, False), (5, False)],
    ids=["mqtt-3.1.1-shared", "mqtt-3.1.1-plain", "mqtt-5-plain"],
)
def test_other_protocols_and_plain_subscriptions(
    db: str, mqtt_url: str, topic_root: str, publisher: Publisher, variant: tuple[int, bool]
) -> None:
    protocol, shared = variant
    config = worker_config(db, mqtt_url, topic_root, share_group=topic_root if shared else None)
    config = replace(config, broker=replace(config.broker, protocol=protocol))
    messages = [reading(seq, topic_root=topic_root) for seq in range(40)]
    with running(config):
        publisher.publish(encode(m) for m in messages)
        wait_until(lambda: count(db, READINGS) == 80, 60, "every reading stored")
    assert stored_rows(db) == rows_of(messages)


@pytest.mark.skipif(nats_server() is None, reason="nats-server is not installed")
def test_a_broker_without_shared_subscriptions_works_with_a_plain_one(
    db: str, topic_root: str, tmp_path: Path
) -> None:
    broker = PrivateNats(tmp_path)
    sender = Publisher(broker.url, protocol=MQTTv311)
    config = worker_config(db, broker.url, topic_root, share_group=None)
    config = replace(config, broker=replace(config.broker, protocol=4))
    messages = [reading(seq, topic_root=topic_root) for seq in range(40)]
    try:
        with running(config):
            sender.publish(encode(m) for m in messages)
            wait_until(lambda: count(db, READINGS) == 80, 60, "every reading stored")
    finally:
        sender.close()
        broker.stop()
    assert stored_rows(db) == rows_of(messages)


def test_two_workers_split_a_shared_subscription(
    db: str, mqtt_url: str, topic_root: str, publisher: Publisher
) -> None:
    messages = [reading(seq, topic_root=topic_root) for seq in range(200)]
    first = worker_config(db, mqtt_url, topic_root, client_id=f"{topic_root}-a")
    second = worker_config(db, mqtt_url, topic_root, client_id=f"{topic_root}-b")
    with running(first) as one, running(second) as two:
        publisher.publish(encode(m) for m in messages)
        wait_until(lambda: count(db, READINGS) == 400, 60, "every reading stored")
        assert one.totals.readings > 0
        assert two.totals.readings > 0
        assert one.totals.readings + two.totals.readings == 400
    assert stored_rows(db) == rows_of(messages)


def test_killed_mid_batch_and_restarted_every_reading_is_stored_once(
    db: str, mqtt_url: str, topic_root: str, publisher: Publisher, tmp_path: Path
) -> None:
    messages = [reading(seq, topic_root=topic_root) for seq in range(600)]
    args = process_args(db, mqtt_url, topic_root)
    first = WorkerProcess(tmp_path / "first.log", *args)
    first.wait_for_log("subscribed to")
    publisher.publish([encode(m) for m in messages[:300]])
    wait_until(lambda: count(db, READINGS) == 600, 60, "the first half stored")
    # The second half reaches a worker whose write waits on a lock: killed mid-batch, with
    # messages delivered and not acknowledged, whatever the machine's speed.
    with psycopg.connect(db) as blocker:
        blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        publisher.publish([encode(m) for m in messages[300:]])
        wait_until(lambda: writer_waiting(db), 60, "the worker's write waiting on the lock")
        first.kill()
        row = blocker.execute(READINGS).fetchone()
        stored_at_kill = row[0] if row else 0
    second = WorkerProcess(tmp_path / "second.log", *args)
    second.wait_for_log("subscribed to")
    wait_until(lambda: count(db, READINGS) == 1200, 60, "every reading stored")
    assert second.terminate() == 0
    assert stored_at_kill < 1200
    assert "session present: True" in second.log_text()
    assert stored_rows(db) == rows_of(messages)
    assert count(db, "SELECT count(*) FROM meter_status") == 600


@pytest.mark.skipif(private_cluster_unavailable() is not None, reason="no private PostgreSQL")
def test_the_database_down_at_start_and_crashing_later_loses_nothing(
    mqtt_url: str, topic_root: str, publisher: Publisher, tmp_path: Path
) -> None:
    # A cluster of the test's own: the machine's PostgreSQL serves every other test meanwhile.
    cluster = PrivateCluster()
    worker = None
    try:
        worker = WorkerProcess(
            tmp_path / "worker.log", *process_args(cluster.url, mqtt_url, topic_root)
        )
        worker.wait_for_log("database unavailable for migrations")
        cluster.start()
        worker.wait_for_log("subscribed to", timeout_s=60)
        before = [reading(seq, topic_root=topic_root) for seq in range(100)]
        publisher.publish(encode(m) for m in before)
        wait_until(lambda: count(cluster.url, READINGS) == 200, 60, "the first readings")

        cluster.stop("immediate")
        during = [reading(seq, topic_root=topic_root) for seq in range(100, 250)]
        publisher.publish(encode(m) for m in during)
        worker.wait_for_log("not written")
        cluster.start()
        wait_until(lambda: count(cluster.url, READINGS) == 500, 60, "the readings of the outage")
        assert worker.terminate() == 0
        worker = None
        assert stored_rows(cluster.url) == rows_of(before + during)
    finally:
        if worker is not None:
            worker.kill()
        cluster.destroy()


@pytest.mark.parametrize("from_deploy", [True, False], ids=["shipped-config", "mosquitto-defaults"])
def test_a_burst_while_the_worker_is_held_up(
    db: str, topic_root: str, tmp_path: Path, from_deploy: bool
) -> None:
    """3000 messages arrive while the worker's first batch waits on a lock: with the shipped
    broker settings every one is stored; with Mosquitto's defaults (a queue of 1000 per
    client) some are dropped, which is what the setting is for."""
    broker = PrivateBroker(tmp_path, from_deploy=from_deploy)
    sender = Publisher(broker.url)
    messages = [reading(seq, topic_root=topic_root, count=1) for seq in range(3000)]
    try:
        with running(worker_config(db, broker.url, topic_root)) as worker:
            with psycopg.connect(db) as blocker:
                blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
                sender.publish(encode(m) for m in messages)
                blocker.rollback()
            if from_deploy:
                wait_until(lambda: count(db, READINGS) == 3000, 60, "every reading of the burst")
                assert stored_rows(db) == rows_of(messages)
                return
            # Once the broker's queue has room, a last message marks the end of what it kept.
            wait_until(lambda: worker.totals.readings > 200, 60, "the queue to drain")
            last = reading(5000, topic_root=topic_root, count=1)
            sender.publish([encode(last)])
            wait_until(
                lambda: count(db, "SELECT count(*) FROM readings WHERE msg_id = 'gw-01:5000'"),
                60,
                "the last message",
            )
            lost = len(messages) + 1 - count(db, READINGS)
            assert lost > 0
    finally:
        sender.close()
        broker.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mqtt-url", "http://127.0.0.1"], "starts with mqtt:// or mqtts://"),
        (["--mqtt-url", "mqtt://:1883"], "names no host"),
        (["--topic-root", "a/b"], "topic root"),
        (["--share-group", "a+b"], "share group"),
        (["--client-id", "a#"], "client id"),
        (["--batch-size", "40000"], "batch size"),
        (["--batch-ms", "70000"], "batch time"),
        (["--metrics-port", "70000"], "metrics port"),
    ],
)
def test_ingest_run_bad_options(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["ingest", "run", "--database-url", "postgresql://x/y", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--batch-size", "0"],
        ["--batch-size", "x"],
        ["--batch-ms", "-1"],
        ["--mqtt-protocol", "4"],
        ["--session-expiry", "0"],
        ["--engine-delay", "-1"],
        ["--engine-delay", "soon"],
        ["--metrics-port", "x"],
        ["--unknown"],
    ],
)
def test_ingest_run_malformed_arguments(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ingest", "run", "--database-url", "postgresql://x/y", *args])
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_ingest_run_without_a_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["ingest", "run"]) == 2
    assert "no database URL" in capsys.readouterr().err
