"""Telegrams per second through the decoder and the JSON output, on one core, and peak memory.

Kinds: an AES mode-5 water telegram, a plain one, a compact one (its format learned from a full
frame first) and the mode-5/plain mix the issue's target names (at least 20,000 per second,
what wmbusmeters reaches on this machine). Each telegram has its own values, as a fleet's would.

    .venv/bin/python bench/decode.py [--count 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.samples import KEY, compact_pair, mode5_frame, plain_frame
from decoders.decode import Decoder
from decoders.render import telegram_json


def frames(kind: str, count: int) -> list[tuple[bytes, bytes | None]]:
    distinct = 500  # distinct payloads, cycled: values differ, layouts repeat as in a fleet
    totals = [f"{1000 + i * 0.137:.3f}" for i in range(distinct)]
    pool: list[tuple[bytes, bytes | None]]
    if kind == "plain":
        pool = [(plain_frame(t), None) for t in totals]
    elif kind == "mode5":
        pool = [(mode5_frame(t), KEY) for t in totals]
    elif kind == "mix":
        pool = [
            (mode5_frame(t), KEY) if i % 2 else (plain_frame(t), None) for i, t in enumerate(totals)
        ]
    else:
        _, compact = compact_pair()
        pool = [(compact, None)]
    return [pool[i % len(pool)] for i in range(count)]


def run(kind: str, count: int) -> float:
    decoder = Decoder()
    full, _ = compact_pair()
    decoder.decode(full)  # teaches the compact format, as a full frame does in the field
    work = frames(kind, count)
    dumps = json.dumps
    started = time.perf_counter()
    for frame, key in work:
        dumps(telegram_json(decoder.decode(frame, key)))
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"decode + JSON, {args.count} telegrams each, one core, Python {sys.version.split()[0]}")
    for kind in ("plain", "mode5", "compact", "mix"):
        best = max(run(kind, args.count) for _ in range(3))
        print(f"  {kind:8s} {best:10,.0f} telegrams/s")
    tracemalloc.start()
    run("mix", 10_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak Python allocations during 10,000 mixed telegrams: {peak / 1e6:.1f} MB")
    print(f"  peak RSS of the whole process (incl. the frames built): {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
