"""`metergate demo`: the whole chain on a simulated fleet, with one command (issue 7).

Simulated meters (wireless M-Bus behind an emulated iM871A on a pty, a wired M-Bus on a pty, a
Modbus TCP flow meter bank on 127.0.0.1; metergate/demo_fleet.py) -> the gateway (in this
process) -> the MQTT broker -> `metergate ingest run` -> PostgreSQL -> `metergate api serve`
with the dashboard. The database and the broker are found or started by
metergate/demo_services.py.

The history is backfilled first, faster than real time: the fleet's past frames go into the
gateway's pipeline with their own received_at and travel spool -> publisher -> broker -> ingest
like live ones. Once the ingest has stored the last of them, `metergate monthly fill` computes
the monthly readings and alerts, and the demo prints the dashboard's URL, an API token and a
curl line for the billing export; then it goes on live until Ctrl-C or SIGTERM, which stop
everything in order (gateway, simulators, API, ingest, then broker and database if it started
them). Everything lives in one folder (--data-dir): the state (which fleet, how far its history
reaches), the spool, logs, and a database cluster or broker of the demo's own. A second run in
that folder goes on from where the first stopped, and first stops what a killed run left.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from metergate.cli import Subparsers
from metergate.demo_process import Child, StoppedError, port_free, stop_leftovers
from metergate.errors import ConfigError, MetergateError

if TYPE_CHECKING:
    from gateway.pipeline import Item
    from metergate.demo_backfill import Backfill, Tracker
    from metergate.demo_fleet import DemoFleet, Plan
    from metergate.demo_live import Live

ZONE_NAME = "Europe/Riga"
TOKEN_NAME = "demo"
SEED = 7
HISTORY_DAYS = 92
TOKEN_SCOPES = ("billing:read", "readings:read")
# (fewest, most, default); the fewest wireless: one each to leak, be repaired, be replaced and
# be overdue (metergate/demo_fleet.py)
_COUNTS = {"wireless": (4, 200, 16), "wired": (1, 50, 4), "modbus": (1, 20, 2)}
_SESSION_EXPIRY_S = 600  # the ingest's broker session: long enough for a restart, no longer


def register(subparsers: Subparsers) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the whole chain on a simulated fleet: meters, gateway, broker, ingest, API",
        description="Simulated meters -> gateway -> MQTT -> ingest -> PostgreSQL -> API and"
        " dashboard, with months of history backfilled first; then live until Ctrl-C. Uses"
        " DATABASE_URL / MQTT_URL, else a PostgreSQL and a broker on 127.0.0.1:5432 / 1883,"
        " else starts its own.",
    )
    demo.add_argument("--data-dir", default="var/demo", help="its folder (default var/demo)")
    demo.add_argument("--api-port", type=int, default=8080, help="on 127.0.0.1 (default 8080)")
    demo.add_argument(
        "--history-days", type=int, help=f"days of history at first (default {HISTORY_DAYS})"
    )
    for name, (_, _, default) in _COUNTS.items():
        demo.add_argument(f"--{name}", type=int, help=f"{name} meters (default {default})")
    demo.add_argument("--seed", type=int, help=f"the fleet's seed (default {SEED})")
    demo.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        return Demo(args, os.environ).run()
    except ConfigError as error:
        print(f"metergate demo: {error}", file=sys.stderr)
        return 2
    except MetergateError as error:
        print(f"metergate demo: {error}", file=sys.stderr)
        return 1


def say(text: str) -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.environ = dict(environ)
        self.folder = Path(args.data_dir).expanduser().absolute()
        self.ident = hashlib.sha1(str(self.folder).encode()).hexdigest()[:8]
        self.stopping = threading.Event()
        self.database_url = ""

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        self._check_options()
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._locked())
            stopped = stop_leftovers(self.folder)
            if stopped:
                say(f"Stopped what a killed demo left running here: {', '.join(stopped)}")
            port = self.args.api_port
            if not port_free(port):
                raise ConfigError(
                    f"127.0.0.1:{port} is in use; pick another", location="--api-port"
                )
            stack.enter_context(self._signals())
            self._logging()
            with contextlib.suppress(StoppedError):
                self._run(stack)
            say("Stopping ...")
        say("Stopped.")
        return 0

    def _run(self, stack: contextlib.ExitStack) -> None:
        from ingest.migrate import migrate
        from metergate import demo_services
        from metergate.demo_backfill import Backfill, Tracker
        from metergate.demo_fleet import DemoFleet
        from metergate.demo_live import Live

        plan, covered_until = self._plan()
        fresh = covered_until is None
        now = datetime.now(UTC)
        since = (
            plan.start
            if covered_until is None
            else max(covered_until, now - timedelta(days=plan.history_days))
        )
        say(f"metergate demo in {self.folder}")
        db = demo_services.postgres(self.folder, self.environ, say)
        stack.callback(db.stop)
        say(f"  PostgreSQL: {db.origin}")
        mqtt = demo_services.broker(self.folder, self.environ, say)
        stack.callback(mqtt.stop)
        say(f"  MQTT broker: {mqtt.origin}")
        self.database_url = demo_services.demo_database(
            db, f"metergate_demo_{self.ident}", fresh=fresh
        )
        migrate(self.database_url)
        fleet = DemoFleet(plan)
        token = self._registry(fleet)
        self._save_state(plan, since)
        env = {**self.environ, "DATABASE_URL": self.database_url, "MQTT_URL": mqtt.url}
        stack.callback(self._start_ingest(env).stop)
        serve = ["api", "serve", "--host", "127.0.0.1", "--port", str(self.args.api_port)]
        api = self._child("api", [*serve, "--no-migrate"], env).start()
        stack.callback(api.stop)
        tracker = Tracker(now)
        backfill = Backfill(self.database_url, self.stopping, say)
        stack.callback(backfill.drain, tracker)
        live = Live(self.folder, fleet, self.ident, mqtt.url, self.environ)
        stack.callback(live.stop)
        live.start(tracker)
        self._wait_healthy(api)
        say(f"  Meters: {live.describe()}")
        if now - since > timedelta(minutes=1):
            self._backfill(backfill, live, fleet, (since, now), tracker)
        self._monthly_fill(env)
        self._ready(token)
        self._save_state(plan, now)
        while not self.stopping.wait(60):
            self._save_state(plan, datetime.now(UTC))
        self._save_state(plan, datetime.now(UTC))

    # --- before anything starts -------------------------------------------------------------

    def _check_options(self) -> None:
        args = self.args
        if not 1 <= args.api_port <= 65535:
            raise ConfigError(f"{args.api_port} is not a TCP port", location="--api-port")
        for name, (low, high, _) in _COUNTS.items():
            value = getattr(args, name)
            if value is not None and not low <= value <= high:
                raise ConfigError(f"from {low} to {high} meters", location=f"--{name}")
        if args.history_days is not None and not 1 <= args.history_days <= 730:
            raise ConfigError("from 1 to 730 days", location="--history-days")
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.folder} is not a folder", location="--data-dir")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "logs").mkdir(exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot make {self.folder}: {error.strerror}", location="--data-dir"
            ) from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{self.folder} is not writable", location="--data-dir")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One demo per folder: an flock, which the kernel drops when its holder dies."""
        with (self.folder / "demo.lock").open("a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "?"
                raise ConfigError(
                    f"another demo (pid {holder}) runs in {self.folder}", location="--data-dir"
                ) from None
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            yield

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def stop(signum: int, frame: object) -> None:
            self.stopping.set()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _logging(self) -> None:
        handler = logging.FileHandler(self.folder / "logs" / "demo.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    def _plan(self) -> tuple[Plan, datetime | None]:
        """The fleet of the state file, and how far its history reaches; or a new plan."""
        from metergate.demo_fleet import Plan

        state = self.folder / "state.json"
        if state.exists():
            data = json.loads(state.read_text())
            plan = Plan.from_json(data["plan"])
            given = {k: getattr(self.args, k) for k in (*_COUNTS, "seed", "history_days")}
            if any(v is not None and v != getattr(plan, k) for k, v in given.items()):
                say("This folder holds an earlier run's fleet; its options stay (another fleet"
                    " needs another --data-dir).")  # fmt: skip
            return plan, datetime.fromisoformat(data["covered_until"]).astimezone(UTC)
        days = self.args.history_days or HISTORY_DAYS
        first = datetime.now(ZoneInfo(ZONE_NAME)).date() - timedelta(days=days)
        start = datetime(first.year, first.month, first.day, tzinfo=ZoneInfo(ZONE_NAME))
        counts = {k: getattr(self.args, k) or default for k, (_, _, default) in _COUNTS.items()}
        seed = SEED if self.args.seed is None else self.args.seed
        return Plan(seed, start.astimezone(UTC), days, **counts), None

    def _save_state(self, plan: Plan, covered_until: datetime) -> None:
        state = {"plan": plan.to_json(), "covered_until": covered_until.isoformat()}
        temporary = self.folder / "state.json.new"
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(self.folder / "state.json")

    def _registry(self, fleet: DemoFleet) -> str:
        """Register the fleet's meters; a new API token in place of the last run's."""
        import psycopg

        from api.auth import create_token, list_tokens, revoke_token
        from api.meter_import import parse_meters_csv, upsert_meters

        meters = parse_meters_csv(fleet.registry_csv(datetime.now(ZoneInfo(ZONE_NAME)).date()))
        if meters.errors:
            raise MetergateError(f"the demo's meter list is wrong: {meters.errors[0]}")
        with psycopg.connect(self.database_url) as conn:
            upsert_meters(conn, meters)
            for info in list_tokens(conn):
                if info.name == TOKEN_NAME and info.revoked_at is None:
                    revoke_token(conn, info.id)
            _, token = create_token(conn, TOKEN_NAME, list(TOKEN_SCOPES))
        return token

    # --- the children -----------------------------------------------------------------------

    def _child(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        return Child(name, [sys.executable, "-m", "metergate", *argv], self.folder, environ=env)

    def _start_ingest(self, env: dict[str, str]) -> Child:
        """The ingest, subscribed before the gateway publishes (its session may be gone)."""
        from metergate.demo_live import demo_topic_root

        # A short engine delay: the demo's few meters cost nothing, and alerts show soon.
        ingest = self._child("ingest", [
            "ingest", "run", "--client-id", f"metergate-demo-{self.ident}",
            "--share-group", f"demo-{self.ident}", "--session-expiry", str(_SESSION_EXPIRY_S),
            "--topic-root", demo_topic_root(self.ident), "--engine-delay", "30",
        ], env)  # fmt: skip
        offset = ingest.log_path.stat().st_size if ingest.log_path.exists() else 0
        ingest.start()
        self._wait(
            lambda: "subscribed to" in ingest.log_path.read_text(errors="replace")[offset:],
            ingest,
            "the ingest did not subscribe",
        )
        return ingest

    def _wait_healthy(self, api: Child) -> None:
        url = f"http://127.0.0.1:{self.args.api_port}/healthz"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        self._wait(healthy, api, "the API did not come up")

    def _wait(self, done: Callable[[], bool], child: Child, failure: str) -> None:
        deadline = time.monotonic() + 60
        while not done():
            if self.stopping.is_set():
                raise StoppedError
            if child.exit_code is not None or time.monotonic() > deadline:
                raise MetergateError(f"{failure}; {child.log_path}:\n{child.log_tail()}")
            time.sleep(0.2)

    # --- history, monthly readings, ready ---------------------------------------------------

    def _backfill(self, backfill: Backfill, live: Live, fleet: DemoFleet,
                  span: tuple[datetime, datetime], tracker: Tracker) -> None:  # fmt: skip
        since, until = span
        hours = max(1, round((until - since) / timedelta(hours=1)))
        say(f"  Backfilling {since:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} UTC")
        started = time.monotonic()
        assert live.gateway is not None and live.gateway.pipeline is not None

        def history() -> Iterator[list[Item]]:
            for n, items in enumerate(fleet.history(since, until, live.endpoints), 1):
                if n % max(1, hours // 4) == 0 and n < hours:
                    say(f"    {n * 100 // hours}% ({time.monotonic() - started:.0f} s)")
                yield items

        count = backfill.run(live.gateway.pipeline, history(), tracker)
        stored = self._query("SELECT count(*) FROM readings")
        say(f"    {count} frames and polls, {stored} readings stored in"
            f" {time.monotonic() - started:.0f} s")  # fmt: skip

    def _query(self, text: str, *params: object) -> Any:
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            row = conn.execute(text, params).fetchone()
        return None if row is None else row[0]

    def _monthly_fill(self, env: dict[str, str]) -> None:
        say("  Filling the monthly readings and alerts (metergate monthly fill) ...")
        fill = self._child("monthly", ["monthly", "fill"], env).start()
        while fill.exit_code is None:
            if self.stopping.wait(0.3):
                fill.stop()
                raise StoppedError
        fill.stop()
        if fill.exit_code != 0:
            say(f"    it failed (exit {fill.exit_code}); see {fill.log_path}")

    def _ready(self, token: str) -> None:
        base = f"http://127.0.0.1:{self.args.api_port}"
        monthly = self._query("SELECT count(*) FROM monthly_readings")
        alerts = self._query(
            "SELECT string_agg(kind || ' ' || n, ', ' ORDER BY kind) FROM"
            " (SELECT kind, count(*) AS n FROM alerts GROUP BY kind) AS k"
        )
        today = datetime.now(ZoneInfo(ZONE_NAME)).date()
        period = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
        say(f"  {monthly} monthly readings; alerts: {alerts or 'none'}")
        say("")
        say(f"Dashboard:  {base}/dashboard/")
        say(f"API token:  {token}")
        say(f"Billing export of {period}:")
        say(f"  curl -H 'Authorization: Bearer {token}' '{base}/v1/billing/monthly"
            f"?period={period}&format=csv'")  # fmt: skip
        say(f"Database:   {_without_password(self.database_url)}")
        say("Live now. Ctrl-C stops everything.")


def _without_password(url: str) -> str:
    """A database URL or conninfo as it may be shown: the password (if any) left out."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(url)
    return f"{parts.get('dbname', '?')} on {parts.get('host', '?')}:{parts.get('port', 5432)}"
