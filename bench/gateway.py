"""Telegrams per second through the gateway with a fleet of meters configured, and its memory.

The fleet is firmware_sim's: mode 5 and mode 7 encrypted, plain and compact frames in the mix
its model draws, sent on the fleet's own schedule from one instant on; a share of the telegrams
is heard a second time by another receiver, which the duplicate filter must drop. Configured as
a fixed gateway of a utility would be: a KeyRing with a key for every meter (meters that send
plain have one too: an operator's keys file covers the fleet), a location for every meter, the
duplicate filter holding a window's entries (10,000 meters fill it to its bound), and the
compact format of every model in the stream learned from a full frame, as after the gateway has
run for a while.

Stages, each with a fresh pipeline and filter, on one core:
- pipeline: decode + duplicate filter + reading/1 building (Pipeline.messages, batches of
  BATCH_MAX), one thread;
- + spool: Pipeline.run draining a filled queue into the spool (append_many, an fsync a batch);
- end to end: items submitted to a running pipeline thread and a Publisher to the broker (QoS 1),
  timed until the spool is empty (every PUBACK in).
Each stage's rate is given by the wall clock and per CPU-second of the process (pinned to one
core, that is the rate of a core of its own; the wall clock moves with the machine's load).
Memory: peak RSS of the whole process (the simulated fleet and every frame included), and the
peak of the Python allocations of the gateway's own parts (keys, locations, filled filter, a
pipeline spooling telegrams; the queued frames were made before and are not counted).

Issue 4's target: at least 5,000 telegrams/s on one core, under 150 MB peak RSS.

    .venv/bin/python bench/gateway.py [--meters 10000] [--telegrams 50000] [--mqtt-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from decoders.compact import CompactFormats
from decoders.decode import Decoder
from decoders.profile import ProfileSet
from firmware_sim.fleet import Fleet
from firmware_sim.wmbus_meters import WmbusFleet
from gateway.broker import BrokerConfig
from gateway.dedup import DuplicateFilter
from gateway.frames import Location, RawFrame
from gateway.messages import status_topic
from gateway.metrics import GatewayMetrics
from gateway.pipeline import BATCH_MAX, Pipeline
from gateway.publisher import Publisher
from gateway.spool import Spool
from metergate.errors import DecodeError
from metergate.keys import KeyRing
from metergate.profiles import load_profiles

START = datetime(2026, 2, 1, 6, tzinfo=UTC)
REPEAT_DELAY = timedelta(milliseconds=4)  # a second receiver hands the same telegram over
TRACED = 10_000  # telegrams spooled under tracemalloc
TARGET_RATE = 5_000
TARGET_RSS_MB = 150
MQTT_URL = os.environ.get("METERGATE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@dataclass(frozen=True, slots=True)
class Setup:
    """What every stage is given: the gateway's configuration and the telegrams received."""

    meters: int
    keys: dict[str, bytes]
    meter_ids: tuple[str, ...]
    profiles: ProfileSet
    formats: CompactFormats
    items: list[RawFrame]
    mix: Counter[str]


@dataclass(frozen=True, slots=True)
class Stage:
    """`rate` by the wall clock; `cpu_rate` by the process's CPU time over the same span: on
    the one core the process is pinned to, what the stage reaches when nothing else runs there
    (the machines are shared: the wall-clock rate moves with their load)."""

    name: str
    rate: float
    cpu_rate: float
    counts: dict[str, int]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fleet_of(meters: int, seed: int) -> WmbusFleet:
    return WmbusFleet(Fleet.generate(meters, seed=seed))


def received(air: WmbusFleet, count: int, repeat_share: float, seed: int) -> Setup:
    """The first `count` telegrams the gateway receives from `air`, and its configuration."""
    rng = random.Random(seed)
    timeline = air.timeline(START)
    items: list[RawFrame] = []
    mix: Counter[str] = Counter()
    full_frames: dict[tuple[str, int, int], tuple[bytes, bytes | None]] = {}
    end = START
    while len(items) < count:
        end += timedelta(seconds=10)
        for at, meter in timeline.until(end):
            compact = meter.is_compact(at)
            key = meter.meter.key_at(at)
            mode = meter.meter.security_mode if key is not None else 0
            mix[f"{'compact ' if compact else ''}{f'mode {mode}' if mode else 'plain'}"] += 1
            frame = meter.telegram(at, compact=compact)
            identity = meter.meter.identity_at(at)
            model = (identity.manufacturer, identity.version, identity.device_type)
            if model not in full_frames:
                full = meter.telegram(at, compact=False) if compact else frame
                full_frames[model] = (full, key)
            level = meter.radio.level_dbm
            items.append(RawFrame(frame, at, "rx0", "wmbus", rssi_dbm=level))
            if rng.random() < repeat_share:
                heard = RawFrame(frame, at + REPEAT_DELAY, "rx1", "wmbus", rssi_dbm=level - 6)
                items.append(heard)
    del items[count:]
    keys = air.keys()
    meter_ids = [m.meter.identity.meter_id for m in air.meters]
    meter_ids += [r.identity.meter_id for m in air.meters if (r := m.meter.replacement)]
    for meter_id in meter_ids:
        keys.setdefault(meter_id, rng.randbytes(16))  # sends plain; the keys file has it anyway
    # A gateway that has run for a while has had a full frame of every model it hears, and
    # knows their compact formats.
    profiles = load_profiles()
    decoder = Decoder(profiles)
    for frame, key in full_frames.values():
        with contextlib.suppress(DecodeError):  # a model the decoder cannot read teaches nothing
            decoder.decode(frame, key, link_format="none")
    return Setup(
        len(air.meters), keys, tuple(meter_ids), profiles, decoder.compact_formats, items, mix
    )


def locations_of(meter_ids: Sequence[str], seed: int) -> dict[str, Location]:
    """A configured position for every meter, somewhere in Riga."""
    rng = random.Random(seed)
    return {
        meter_id: Location(
            Decimal(f"56.{rng.randrange(900_000, 990_000)}"),
            Decimal(f"24.{rng.randrange(50_000, 200_000):06d}"),
            source="config",
        )
        for meter_id in meter_ids
    }


def filled(dedup: DuplicateFilter, meters: int) -> DuplicateFilter:
    """`dedup` holding a window's entries of `meters` sending every 30 s (the sizing of
    DEFAULT_MAX_ENTRIES; 10,000 meters reach the bound), spread over the window before START."""
    entries = min(dedup.max_entries, meters * round(dedup.window / timedelta(seconds=30)))
    step = dedup.window / entries
    first = START - dedup.window
    for n in range(entries):
        payload = n.to_bytes(4, "little") * 12
        dedup.is_duplicate(f"FIL-{n % 10**8:08d}", n % 256, payload, first + n * step)
    return dedup


def pipeline(setup: Setup, gateway_id: str, spool: Spool, **options: Any) -> Pipeline:
    return Pipeline(
        gateway_id,
        spool,
        keys=KeyRing(setup.keys),
        metrics=options.pop("metrics", None) or GatewayMetrics(),
        decoder=Decoder(setup.profiles, setup.formats),
        dedup=filled(DuplicateFilter(), setup.meters),
        locations=locations_of(setup.meter_ids, 1),
        **options,
    )


def pipeline_only(setup: Setup, directory: Path) -> Stage:
    items = setup.items
    with Spool(directory / "pipeline.sqlite", "bench-pipeline") as spool:
        pipe = pipeline(setup, "bench-pipeline", spool)
        started, cpu = time.perf_counter(), cpu_seconds()
        for first in range(0, len(items), BATCH_MAX):
            pipe.messages(items[first : first + BATCH_MAX])
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return Stage(
        "pipeline (decode, dedup, messages)", len(items) / elapsed, len(items) / cpu, pipe.counts
    )


def spool_stage(setup: Setup, directory: Path, name: str = "spool") -> Stage:
    """Pipeline.run in this thread, draining a queue filled with every item."""
    items = setup.items
    batches: list[float] = []
    with Spool(directory / f"{name}.sqlite", f"bench-{name}") as spool:
        pipe = pipeline(
            setup,
            f"bench-{name}",
            spool,
            queue_size=len(items) + 1,
            on_spooled=lambda _: batches.append(time.perf_counter()),
        )
        for item in items:
            pipe.submit(item)
        stop = threading.Event()
        stop.set()  # run() returns once the queue is empty
        started, cpu = time.perf_counter(), cpu_seconds()
        pipe.run(stop)
        cpu = cpu_seconds() - cpu
    return Stage(
        "pipeline + spool (append_many)",
        len(items) / (batches[-1] - started),
        len(items) / cpu,
        pipe.counts,
    )


def end_to_end(setup: Setup, directory: Path, broker: BrokerConfig) -> Stage:
    """Items submitted to a running pipeline thread, timed until the broker acknowledged all."""
    items = setup.items
    gateway_id = f"bench-{uuid.uuid4().hex[:12]}"
    metrics = GatewayMetrics()
    spooled = 0

    def count(batch: Sequence[dict[str, Any]]) -> None:
        nonlocal spooled
        spooled += len(batch)

    with Spool(directory / f"{gateway_id}.sqlite", gateway_id) as spool:
        pipe = pipeline(setup, gateway_id, spool, metrics=metrics, on_spooled=count)
        publisher = Publisher(
            spool, broker, gateway_id, metrics=metrics, status=lambda: dict(pipe.counts)
        )
        publisher.start()
        stop = threading.Event()
        worker = threading.Thread(
            target=pipe.run, args=(stop,), kwargs={"wake": publisher.wake}, name="pipeline"
        )
        try:
            deadline = time.monotonic() + 10
            while not publisher.connected:
                if time.monotonic() > deadline:
                    raise SystemExit(f"cannot connect to the broker {broker.host}:{broker.port}")
                time.sleep(0.01)
            worker.start()
            started, cpu = time.perf_counter(), cpu_seconds()
            for item in items:
                pipe.submit(item)
            counts = pipe.counts
            # The published counter first: counting the outbox rows takes the core too.
            while (
                counts["received"] < len(items)
                or spooled < counts["received"] - counts["duplicates"]
                or published(metrics) < spooled
            ):
                time.sleep(0.01)
            while spool.depth():
                time.sleep(0.01)
            elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        finally:
            stop.set()
            if worker.is_alive():
                worker.join()
            publisher.stop(5)
    clear_status(broker, gateway_id)
    return Stage(
        "end to end (pipeline thread + publisher, QoS 1)",
        len(items) / elapsed,
        len(items) / cpu,
        counts,
    )


def published(metrics: GatewayMetrics) -> float:
    """Messages the broker acknowledged so far."""
    return metrics.registry.get_sample_value("metergate_gateway_published_total") or 0.0


def clear_status(broker: BrokerConfig, gateway_id: str) -> None:
    """Delete the retained status the publisher left on the broker (an empty retained message)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=broker.ca_file)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(status_topic(gateway_id), None, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def gateway_allocations(setup: Setup, directory: Path) -> int:
    """The peak of Python allocations while the gateway's parts are built and spool the stream
    (its start: tracemalloc slows Python down threefold, and a batch is all a pipeline holds)."""
    tracemalloc.start()
    try:
        spool_stage(replace(setup, items=setup.items[:TRACED]), directory, "traced")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--telegrams", type=int, default=50_000)
    parser.add_argument("--mqtt-url", default=MQTT_URL)
    parser.add_argument("--repeats", type=float, default=0.1, help="share heard twice")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    broker = BrokerConfig.from_url(args.mqtt_url)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    loaded = max_rss_mb()
    started = time.perf_counter()
    air = fleet_of(args.meters, args.seed)
    setup = received(air, args.telegrams, args.repeats, args.seed)
    del air  # the gateway knows nothing of the simulator; its memory is not the gateway's
    gc.collect()
    took = time.perf_counter() - started
    print(
        f"gateway: {setup.meters:,} meters ({len(setup.keys):,} keys),"
        f" {len(setup.items):,} telegrams, one core, Python {sys.version.split()[0]}"
        f" (set up in {took:.0f} s)"
    )
    total = sum(setup.mix.values())
    print("  mix: " + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(setup.mix.items())))
    print(
        f"  RSS with the modules loaded: {loaded:.0f} MB;"
        f" peak after building the fleet and the frames: {max_rss_mb():.0f} MB"
    )

    var = Path(__file__).resolve().parents[1] / "var"  # a real disk, not a tmpfs: fsyncs count
    var.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=var) as name:
        directory = Path(name)
        stages = [
            pipeline_only(setup, directory),
            spool_stage(setup, directory),
            end_to_end(setup, directory, broker),
        ]
        rss = max_rss_mb()  # before tracemalloc, whose own bookkeeping would count
        allocated = gateway_allocations(setup, directory)

    print(
        f"  {'stage':48s} {'telegrams/s':>11s} {'per CPU-s':>10s} {'readings':>9s} {'raw':>6s}"
        f" {'repeats':>8s}"
    )
    for stage in stages:
        c = stage.counts
        print(
            f"  {stage.name:48s} {stage.rate:11,.0f} {stage.cpu_rate:10,.0f}"
            f" {c['readings']:9,d} {c['raw']:6,d} {c['duplicates']:8,d}"
        )
    print(f"  peak RSS of the whole process (fleet and frames included): {rss:.0f} MB")
    print(
        f"  peak Python allocations of the gateway's parts ({min(TRACED, len(setup.items)):,}"
        f" telegrams spooled): {allocated / 1e6:.0f} MB"
    )
    rate, cpu_rate = stages[-1].rate, stages[-1].cpu_rate
    print(
        f"target: >= {TARGET_RATE:,} telegrams/s on one core, end to end: {rate:,.0f} by the"
        f" clock ({'met' if rate >= TARGET_RATE else 'MISSED'}), {cpu_rate:,.0f} per CPU-second"
        f" ({'met' if cpu_rate >= TARGET_RATE else 'MISSED'})"
    )
    print(
        f"target: < {TARGET_RSS_MB} MB peak RSS: {rss:.0f} MB"
        f" ({'met' if rss < TARGET_RSS_MB else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
