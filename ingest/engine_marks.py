"""The engines' work list in the database: marked meters, and raw frames a stored key may open.

Marks (migrations/0009_engine_marks.sql) are written with the new rows, in their transaction:
by the ingest's batches (ingest/store.py) and by the API's manual readings. An engine run takes
a chunk of them with a lease (`claim`), runs the engines, and then removes the marks it saw
(`finish`): a mark that changed during the run (new rows came) stays for a later run, and one
whose run died with its worker is taken again when the lease ends. The lease keeps the engine
threads of several workers apart: a claimed mark is not claimed again while its run lasts
(and run_engines locks each meter besides). Claims skip rows a writer has locked rather than
wait; `finish` and `release` lock the marks in meter order first, the order in which the
writers' upserts take them, so the two never wait on each other in a cycle.

A mark is taken only once it is `delay` old. A wM-Bus meter sends every half minute or so, and
an engine run loads days of its readings (the flow rules look back several nights): running
each meter at every telegram would cost a core per few thousand meters. Waiting gathers the
telegrams of the delay into one run, at the price of alerts coming up to `delay` later.

Raw frames: a frame that reached the ingest raw (the gateway had no key, or did not know the
compact format yet) but whose meter has a key in `meter_keys` is decoded by the engine thread
with ingest/recover.py, as `metergate keys add` would; frames are tried once (`tried_at`, set
by recover_with on the frames it read and that still fail, with the error, and here on the
frames of meters without a key), so that a frame that still fails is not decoded again every
few seconds. Compact frames that failed for want of their format are tried again when the
thread's decoder learns a format: any meter of the model may teach it. One engine thread at a
time decodes a meter's frames (`decoding`, an advisory lock); the others leave it to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

LEASE = timedelta(minutes=10)
# Two-key advisory locks of this class: a meter whose raw frames an engine thread decodes.
DECODING_LOCK = int.from_bytes(b"mgrw", "big")

# How a new mark meets one already there: the earlier instant, and a new generation.
ON_MARKED = """ON CONFLICT (meter_id) DO UPDATE
    SET since = least(engine_marks.since, excluded.since), marked_at = clock_timestamp()"""
# One meter's mark, for writers of single readings (the API's manual readings).
MARK_METER = f"""
INSERT INTO engine_marks (meter_id, since) VALUES (%(meter)s, %(since)s)
{ON_MARKED}
"""

_CLAIM = """
UPDATE engine_marks AS m SET claimed_until = now() + %(lease)s
FROM (
    SELECT meter_id FROM engine_marks
    WHERE (claimed_until IS NULL OR claimed_until < now())
      AND first_marked_at <= clock_timestamp() - %(delay)s
    ORDER BY first_marked_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AS free
WHERE m.meter_id = free.meter_id
RETURNING m.meter_id, m.since, m.marked_at
"""

_REMOVE_SEEN = """
DELETE FROM engine_marks AS m
USING unnest(%s::text[], %s::timestamptz[]) AS seen (meter_id, marked_at)
WHERE m.meter_id = seen.meter_id AND m.marked_at = seen.marked_at
"""

_LOCK_IN_ORDER = """
SELECT 1 FROM engine_marks WHERE meter_id = ANY(%s) ORDER BY meter_id COLLATE "C" FOR UPDATE
"""
_RELEASE = "UPDATE engine_marks SET claimed_until = NULL WHERE meter_id = ANY(%s)"
# What came during the run waits its own delay.
_RENEW = """
UPDATE engine_marks SET claimed_until = NULL, first_marked_at = clock_timestamp()
WHERE meter_id = ANY(%s)
"""

_UNTRIED = """
SELECT meter_id, max(id) FROM raw_frames
WHERE decoded_at IS NULL AND tried_at IS NULL AND meter_id IS NOT NULL
GROUP BY meter_id ORDER BY meter_id LIMIT %s
"""

_KEYS_OF = "SELECT meter_id, key FROM meter_keys WHERE meter_id = ANY(%s)"

_RETRY_UNSUPPORTED = """
UPDATE raw_frames SET tried_at = NULL, tried_error = NULL
WHERE decoded_at IS NULL AND tried_error = 'UnsupportedError'
"""

_MARK_TRIED = """
UPDATE raw_frames AS r SET tried_at = now()
FROM unnest(%s::text[], %s::bigint[]) AS seen (meter_id, last_id)
WHERE r.meter_id = seen.meter_id AND r.id <= seen.last_id
  AND r.decoded_at IS NULL AND r.tried_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """Marks taken by one engine run: `since` by meter, and the `marked_at` each had."""

    since: dict[str, datetime]
    marked_at: dict[str, datetime]


def claim(
    conn: psycopg.Connection[Any], limit: int, delay: timedelta, lease: timedelta = LEASE
) -> Claim:
    """Take up to `limit` free marks at least `delay` old, in the order they were made (`conn`
    in autocommit): a large import's marks delay the live ones that came after it, not those
    that came before."""
    rows = conn.execute(_CLAIM, {"lease": lease, "limit": limit, "delay": delay}).fetchall()
    return Claim({m: since for m, since, _ in rows}, {m: at for m, _, at in rows})


def finish(conn: psycopg.Connection[Any], taken: Claim) -> None:
    """Remove the marks the run saw; release those that changed meanwhile."""
    ids = list(taken.marked_at)
    with conn.transaction():
        conn.execute(_LOCK_IN_ORDER, (ids,))
        conn.execute(_REMOVE_SEEN, (ids, [taken.marked_at[m] for m in ids]))
        conn.execute(_RENEW, (ids,))


def release(conn: psycopg.Connection[Any], meter_ids: list[str]) -> None:
    """Give marks back untouched (the run failed) for the next run."""
    with conn.transaction():
        conn.execute(_LOCK_IN_ORDER, (meter_ids,))
        conn.execute(_RELEASE, (meter_ids,))


def pending(conn: psycopg.Connection[Any]) -> int:
    """Marks waiting, claimed or not, of every worker."""
    row = conn.execute("SELECT count(*) FROM engine_marks").fetchone()
    return int(row[0]) if row else 0


def untried_frames(conn: psycopg.Connection[Any], limit: int) -> dict[str, int]:
    """Meters with raw frames not tried yet, and the newest such frame's id."""
    return {str(m): int(last) for m, last in conn.execute(_UNTRIED, (limit,)).fetchall()}


def retry_unsupported(conn: psycopg.Connection[Any]) -> int:
    """Make the frames that failed as compact frames of an unknown format untried again (a
    format was just learned, from any meter of the model); how many."""
    return conn.execute(_RETRY_UNSUPPORTED).rowcount


@contextmanager
def decoding(conn: psycopg.Connection[Any], meter_id: str) -> Iterator[bool]:
    """Whether this connection may decode the meter's raw frames now (False: another worker's
    engine thread is at it), holding that right for the block."""
    lock = (DECODING_LOCK, meter_id)
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", lock).fetchone()
    mine = bool(row and row[0])
    try:
        yield mine
    finally:
        if mine and not conn.broken:  # a broken connection took the lock with it
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock)


def keys_of(conn: psycopg.Connection[Any], meter_ids: list[str]) -> dict[str, bytes]:
    """The stored keys of those of `meter_ids` that have one."""
    return {str(m): bytes(key) for m, key in conn.execute(_KEYS_OF, (meter_ids,)).fetchall()}


def mark_tried(conn: psycopg.Connection[Any], last_ids: dict[str, int]) -> None:
    """The raw frames up to `last_ids[meter]`, of meters without a key (nothing can open them
    until `keys add`, which tries every frame anyway, so a frame committed late under a lower
    id loses nothing by being marked) or whose decoding the database refused."""
    ids = list(last_ids)
    conn.execute(_MARK_TRIED, (ids, [last_ids[m] for m in ids]))
