"""The API under load, on this machine: the monthly billing export of a large fleet, and a
meter's readings under concurrent requests.

It makes a database of its own (dropped at the end) on METERGATE_BENCH_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), fills it with SQL (`--meters` meters with two
monthly readings each, a leak alert on every 50th, a replaced meter every 500th; `--reading-meters`
meters with a month of hourly readings), runs the API with uvicorn in a child process on
127.0.0.1 and a free port, and prints:

- the export of one period: JSON and CSV, in one streamed answer and in pages of 10,000, with
  rows per second, bytes and the server's peak memory;
- GET /v1/meters/{id}/readings for one day of a random meter, `--requests` in all from
  `--clients` concurrent clients: p50, p99 and requests per second.

    .venv/bin/python bench/api.py [--meters 100000] [--clients 16] [--requests 4000]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2 as httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api.auth import SCOPES, create_token
from ingest.migrate import migrate

ADMIN_URL = os.environ.get(
    "METERGATE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ROOT = Path(__file__).resolve().parents[1]

_FILL = """
INSERT INTO meters (meter_id, serial, manufacturer, medium, kind, country, premise, address,
                    customer_ref, contract_ref, installed_on, verified_on,
                    next_verification_due, status)
SELECT 'KAM-' || lpad(n::text, 8, '0'), lpad(n::text, 8, '0'), 'KAM', 'water', 'mechanical',
       'LV', 'P-' || n, 'Street ' || (n %% 500) || ', Riga', 'C-' || n, 'K-' || n, '2020-01-01',
       '2023-01-01', date '2027-01-01' - (n %% 900), 'active'
FROM generate_series(1, %(meters)s) AS n;

INSERT INTO monthly_readings (meter_id, period, boundary, value, unit, method, evidence)
SELECT 'KAM-' || lpad(n::text, 8, '0'), p.period, p.boundary,
       round((n %% 1000) + p.k * 7.25 + (n %% 7) * 0.125, 3), 'm3',
       (ARRAY['register', 'actual', 'interpolated', 'customer', 'estimated'])[1 + n %% 5],
       '{"readings": [], "rates": []}'
FROM generate_series(1, %(meters)s) AS n,
     (VALUES (date '2026-09-01', timestamptz '2026-09-30 21:00+00', 0),
             (date '2026-10-01', timestamptz '2026-10-31 22:00+00', 1)) AS p (period, boundary, k);

INSERT INTO alerts (meter_id, kind, rule, opened_at, evidence)
SELECT 'KAM-' || lpad(n::text, 8, '0'), 'leak', 'meter_flag', '2026-10-10 00:00+00', '{}'
FROM generate_series(50, %(meters)s, 50) AS n;

INSERT INTO meter_replacements (replaced_at, old_meter_id, old_final, new_meter_id, new_start)
SELECT '2026-10-15 10:00+00', 'KAM-' || lpad(n::text, 8, '0'), (n %% 1000) + 3,
       'KAM-' || lpad(n::text, 8, '0'), 0
FROM generate_series(500, %(meters)s, 500) AS n;

INSERT INTO readings (meter_id, quantity, storage, tariff, subunit, function, measured_at,
                      value, unit, received_at, gateway_id, source)
SELECT 'KAM-' || lpad(n::text, 8, '0'), 'volume', 0, 0, 0, 'instantaneous', t,
       round(n + extract(epoch FROM t - timestamptz '2026-10-01 00:00+00') / 3600 * 0.012, 3),
       'm3', t, 'gw-1', 'wmbus'
FROM generate_series(1, %(reading_meters)s) AS n,
     generate_series(timestamptz '2026-10-01 00:00+00', timestamptz '2026-10-31 23:00+00',
                     interval '1 hour') AS t;

ANALYZE
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _export(client: httpx.Client, token: str, fmt: str, page: int | None) -> tuple[int, int]:
    """(rows, bytes) of the whole period, in one answer or in pages of `page`."""
    rows = size = 0
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"period": "2026-10", "format": fmt}
        params["limit"] = page or 200_000
        if cursor:
            params["cursor"] = cursor
        with client.stream(
            "GET",
            "/v1/billing/monthly",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            response.raise_for_status()
            body = b"".join(response.iter_bytes())
        size += len(body)
        if fmt == "csv":
            rows += body.count(b"\n") - 1
            cursor = response.headers.get("x-next-cursor")
        else:
            rows += body.count(b'"meter_id"')
            tail = body[: body.index(b'"items"')]
            cursor = None if b'"next_cursor":null' in tail else _json_cursor(tail)
        if not cursor or page is None:
            return rows, size


def _json_cursor(head: bytes) -> str:
    start = head.index(b'"next_cursor":"') + len(b'"next_cursor":"')
    return head[start : head.index(b'"', start)].decode()


def _readings_load(base: str, token: str, meters: int, clients: int, total: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = total // clients

    def run(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[float] = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(per_client):
                meter = f"KAM-{rng.randint(1, meters):08d}"
                day = rng.randint(1, 30)
                params = {
                    "from": f"2026-10-{day:02d}T00:00:00Z",
                    "to": f"2026-10-{day + 1:02d}T00:00:00Z",
                }
                started = time.perf_counter()
                response = client.get(f"/v1/meters/{meter}/readings", params=params)
                mine.append(time.perf_counter() - started)
                if response.status_code != 200 or len(response.json()["items"]) != 24:
                    raise RuntimeError(f"unexpected answer {response.status_code}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--reading-meters", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4_000)
    args = parser.parse_args()

    name = f"metergate_bench_api_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(ADMIN_URL, dbname=name)
    server: subprocess.Popen[bytes] | None = None
    try:
        migrate(url)
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            sizes = {"meters": args.meters, "reading_meters": args.reading_meters}
            for statement in _FILL.split(";"):
                if statement.strip():
                    conn.execute(statement.encode(), sizes)
            token = create_token(conn, "bench", SCOPES)[1]
        print(f"filled {args.meters} meters in {time.perf_counter() - started:.1f} s")

        port = _free_port()
        env = {**os.environ, "DATABASE_URL": url}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--no-access-log"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=600) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the API did not start")
                time.sleep(0.1)

            print(f"\nmonthly billing export, {args.meters} meters, period 2026-10")
            print(f"{'format':<6} {'pages':<14} {'rows':>8} {'MB':>7} {'s':>6} {'rows/s':>8}")
            for fmt in ("json", "csv"):
                for page in (None, 10_000):
                    started = time.perf_counter()
                    rows, size = _export(client, token, fmt, page)
                    elapsed = time.perf_counter() - started
                    label = "one answer" if page is None else f"pages of {page}"
                    print(
                        f"{fmt:<6} {label:<14} {rows:>8} {size / 1e6:>7.1f} {elapsed:>6.2f}"
                        f" {rows / elapsed:>8.0f}"
                    )
            print(f"server peak RSS {_peak_rss_kib(server.pid) / 1024:.0f} MiB")

        print(
            f"\nGET /v1/meters/{{id}}/readings (one day, 24 rows) of {args.reading_meters}"
            f" meters, {args.requests} requests from {args.clients} clients"
        )
        started, cpu = time.perf_counter(), _cpu_seconds(server.pid)
        latencies = _readings_load(base, token, args.reading_meters, args.clients, args.requests)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(server.pid) - cpu
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"p50 {cuts[49] * 1000:.1f} ms   p99 {cuts[98] * 1000:.1f} ms   "
            f"{len(latencies) / elapsed:.0f} requests/s   server CPU"
            f" {cpu / len(latencies) * 1000:.2f} ms per request"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
