"""The pipeline thread: telegrams in, spooled messages out, nothing dropped or stalled."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from drivers.modbus import ModbusReading
from gateway.frames import RawFrame
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline, Polled
from gateway.spool import Spool
from tests.drivers.wmbus_sim import START, air, clean_transmissions

GW = "gw-pipeline"


def frames(count: int) -> list[RawFrame]:
    return [
        RawFrame(tx.frame, START + timedelta(seconds=n), "rx0", "wmbus")
        for n, tx in enumerate(clean_transmissions(count))
    ]


def run_until_empty(pipeline: Pipeline) -> None:
    stop = threading.Event()
    stop.set()  # run() returns once the queue is empty
    pipeline.run(stop)


def failures(metrics: GatewayMetrics, reason: str) -> float:
    sample = metrics.registry.get_sample_value("metergate_gateway_failed_total", {"reason": reason})
    return sample or 0.0


def test_telegrams_become_readings_or_raw_and_repeats_are_dropped(tmp_path: Path) -> None:
    received = frames(6)
    with Spool(tmp_path / "spool.sqlite", GW) as spool:
        pipeline = Pipeline(GW, spool, keys=air().keys(), metrics=GatewayMetrics())
        for frame in [*received, received[0]]:  # the first one heard again by the receiver
            pipeline.submit(frame)
        run_until_empty(pipeline)
        spooled = spool.pending(100)

    assert pipeline.counts["received"] == 7
    assert pipeline.counts["duplicates"] == 1
    assert len(spooled) == 6 == pipeline.counts["readings"] + pipeline.counts["raw"]
    kinds = [json.loads(m.payload)["schema"] for m in spooled]
    assert kinds.count("reading/1") == pipeline.counts["readings"] > 0


def test_without_keys_encrypted_telegrams_travel_raw(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.sqlite", GW) as spool:
        pipeline = Pipeline(GW, spool, keys={}, metrics=GatewayMetrics())
        for frame in frames(6):
            pipeline.submit(frame)
        run_until_empty(pipeline)
        spooled = spool.pending(100)

    raw = [json.loads(m.payload) for m in spooled if m.topic.endswith("/raw")]
    assert raw and all(m["schema"] == "raw/1" and m["error"]["type"] for m in raw)
    assert len(spooled) == 6


def test_a_message_the_spool_refuses_is_set_aside_and_the_rest_spooled(tmp_path: Path) -> None:
    """A Modbus unit configured under a meter id that cannot be a topic level (a bug upstream:
    the configuration refuses such ids) must neither stall the frames behind it nor vanish."""
    metrics = GatewayMetrics()
    good = frames(3)
    poll = RawFrame(b"\x00\x2a", START, "tcp://127.0.0.1:5020#7", "modbus")
    bad = Polled(poll, "unit/7", "ABB", ModbusReading(7, (), (), ((("holding", 0), 42),)))
    with Spool(tmp_path / "spool.sqlite", GW) as spool:
        pipeline = Pipeline(GW, spool, keys=air().keys(), metrics=metrics)
        for item in [good[0], bad, *good[1:]]:
            pipeline.submit(item)
        run_until_empty(pipeline)
        spooled = spool.pending(100)
        assert spool.quarantined() == 1

    assert len(spooled) == 3
    assert failures(metrics, "unspoolable") == 1
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        ((topic, meter_id, payload, reason),) = db.execute(
            "SELECT topic, meter_id, payload, reason FROM quarantine"
        ).fetchall()
    assert meter_id == "unit/7" and topic.endswith("/unit/7/reading")
    assert "meter id" in reason
    assert json.loads(payload)["meter_id"] == "unit/7"  # what it held is kept for a person
    # seq keeps counting across the set-aside message: no number is given out twice.
    assert len({m.seq for m in spooled}) == 3


def test_a_failing_disk_is_retried_until_the_gateway_stops(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    with Spool(tmp_path / "spool.sqlite", GW) as spool:
        pipeline = Pipeline(GW, spool, keys=air().keys(), metrics=metrics)
        pipeline.submit(frames(1)[0])
        blocker = sqlite3.connect(tmp_path / "spool.sqlite", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the spool cannot write: as a failing disk
        stop = threading.Event()
        spool_thread = threading.Thread(target=pipeline.run, args=(stop,))
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(spool, "_busy_timeout_s", 0.05)
                spool_thread.start()
                deadline = time.monotonic() + 10
                while failures(metrics, "spool_error") < 2:  # retried, not given up
                    assert time.monotonic() < deadline and spool_thread.is_alive()
                    time.sleep(0.05)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        stop.set()
        spool_thread.join(10)
        assert spool.depth() == 1  # written once the disk came back


def test_set_aside_keeps_even_what_json_cannot_hold(tmp_path: Path) -> None:
    looped: dict[str, object] = {"schema": "reading/1"}
    looped["self"] = looped
    with Spool(tmp_path / "spool.sqlite", GW) as spool:
        seq = spool.set_aside("reading", "M-1", looped, "a bug made this")
        assert spool.quarantined() == 1
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        ((kept_seq, payload),) = db.execute("SELECT seq, payload FROM quarantine").fetchall()
    assert kept_seq == seq and b"reading/1" in payload
