"""A longer fuzz run of the decoders than the test suite affords.

Mutates seed frames (bit flips, byte changes, truncations, insertions, random tails) and feeds
random bytes; every outcome must be a telegram or a DecodeError subclass. Prints the number of
cases, the outcomes and any other exception with the input that caused it (exit 1 then).

    .venv/bin/python bench/fuzz_decode.py [--cases 200000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.samples import sample_frames
from decoders.decode import Decoder
from metergate.errors import DecodeError
from metergate.profiles import load_profiles


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.35 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif choice < 0.6 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.8:
            del data[rng.randrange(len(data) + 1) :]
        elif choice < 0.9:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        else:
            data += rng.randbytes(rng.randint(1, 20))
    return bytes(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seeds = sample_frames()
    decoder = Decoder(load_profiles())
    outcomes: Counter[str] = Counter()
    failures = 0
    started = time.perf_counter()
    for case in range(args.cases):
        name, frame, key = seeds[case % len(seeds)]
        data = rng.randbytes(rng.randint(0, 300)) if case % 10 == 0 else mutate(rng, frame)
        use_key = key if rng.random() < 0.8 else rng.randbytes(16)
        try:
            decoder.decode(data, use_key)
            outcomes["decoded"] += 1
        except DecodeError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception:
            failures += 1
            print(f"NOT A DecodeError from {name} mutated to {data.hex()}:", file=sys.stderr)
            traceback.print_exc()
    elapsed = time.perf_counter() - started
    print(f"fuzz: {args.cases} cases in {elapsed:.1f} s, seed {args.seed}")
    for outcome, count in outcomes.most_common():
        print(f"  {outcome}: {count}")
    print(f"  other exceptions: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
