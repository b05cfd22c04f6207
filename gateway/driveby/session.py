"""One drive-by (issue 4): the gateway daemon on one receiver, a GPS, the progress of a route,
on a live screen or as plain lines, and the report at the end.

The readings take the gateway's own road (gateway/daemon.py): decoded, spooled on disk and
published when a broker answers, so a van that is offline all day loses nothing and sends it
all at the next run with the same gateway id. The progress counts what was spooled (the
gateway's `on_spooled`), so the screen and the report show what the spool holds.

The spool is per gateway id, `$XDG_DATA_HOME/metergate/spool-{gateway_id}.sqlite` (that is
`~/.local/share/metergate/...` by default): one place per user whatever folder a drive starts
in, so the readings an offline drive left behind are sent by the next one.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from drivers.wmbus_receiver import parse_device
from drivers.wmbus_receiver_base import MODES
from gateway.broker import BrokerConfig
from gateway.config import GATEWAY_ID, GatewayConfig, ReceiverConfig
from gateway.daemon import Gateway
from gateway.driveby.gps import GpsReader
from gateway.driveby.progress import DrivebyEvent, DrivebyProgress, event_from_message
from gateway.driveby.report import ReportFiles, write_report
from gateway.driveby.route import Route
from gateway.driveby.view import DrivebyView
from gateway.messages import TOPIC_ROOT, topic_level
from gateway.spool import Spool
from metergate.errors import ConfigError, StorageError
from metergate.keys import KeyRing

log = logging.getLogger(__name__)

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_gateway_id(hostname: str | None = None) -> str:
    """`driveby-{host}`, the host name cut to what a gateway id may hold."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "-", hostname or socket.gethostname()).strip("-.")
    return f"driveby-{host or 'host'}"[:64]


def default_spool_path(gateway_id: str, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "metergate" / f"spool-{gateway_id}.sqlite"


def driveby_config(
    *,
    device: str,
    gateway_id: str,
    mqtt_url: str,
    spool_path: Path,
    mode: str = "C1T1",
    timezone: str = "Europe/Riga",
    topic_root: str = TOPIC_ROOT,
) -> GatewayConfig:
    """The gateway of a drive-by: one receiver, no metrics endpoint. ConfigError naming the
    option for any mistake; the spool's folder is made when missing."""
    parse_device(device)
    if mode not in MODES:
        raise ConfigError(f"{mode[:20]!r} is not one of {', '.join(MODES)}", location="--mode")
    if not GATEWAY_ID.fullmatch(gateway_id):
        raise ConfigError(
            f"{gateway_id[:70]!r} is not 1-64 of A-Z a-z 0-9 . _ -", location="--gateway-id"
        )
    broker = BrokerConfig.from_url(mqtt_url, path="", location="--mqtt-url")
    try:
        topic_level(topic_root, "the topic root")
    except ValueError as error:
        raise ConfigError(str(error), location="--topic-root") from None
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{timezone[:60]!r} is not an IANA time zone such as Europe/Riga",
            location="--timezone",
        ) from None
    if spool_path.is_dir():
        raise ConfigError(f"{spool_path} is a folder; name the spool file", location="--spool")
    writable_folder(spool_path.parent, "--spool")
    return GatewayConfig(
        path=Path("<driveby>"),
        gateway_id=gateway_id,
        broker=replace(broker, client_id=gateway_id),
        spool_path=spool_path,
        metrics_port=None,
        keys_file=None,
        timezone=zone,
        receivers=(ReceiverConfig(device, mode),),
        topic_root=topic_root,
    )


def writable_folder(folder: Path, option: str) -> None:
    """`folder`, made when missing; ConfigError when that fails or it is not writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot make {folder}: {error.strerror}", location=option) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder} is not writable by this user", location=option)


def event_line(event: DrivebyEvent, route: Route, zone: ZoneInfo) -> str:
    """One frame as a plain log line: time, meter, where, value or error, RSSI."""
    entry = route.get(event.meter_id) if event.meter_id else None
    if event.volume is not None:
        what = f"{event.volume:f} {event.unit}"
    else:
        what = event.error or "no volume"
    parts = [
        event.received_at.astimezone(zone).strftime("%H:%M:%S"),
        event.meter_id or "?",
        entry.address if entry else "(not on route)",
        what,
    ]
    if event.rssi_dbm is not None:
        parts.append(f"{event.rssi_dbm:f} dBm")
    return "  ".join(parts)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a drive-by ended: where the report went and what the spool still holds."""

    report: ReportFiles
    report_fallback: bool  # the report directory failed; the report went next to the spool
    spool_waiting: int | None  # None when the spool could not be read


class _Screen:
    """The drive-by view with a status line of the broker and the spool under it."""

    def __init__(self, view: DrivebyView, status: Text) -> None:
        self.view = view
        self.status = status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        inner = options.copy()
        if options.height is not None:
            inner = options.update(height=max(0, options.height - 1))
        else:
            inner.max_height = max(1, options.max_height - 1)
        yield from console.render(self.view, inner)
        yield self.status


class DrivebySession:
    """start(), then watch_live() (or with plain=True watch_plain()) until stop_soon(), then
    finish()."""

    def __init__(
        self,
        config: GatewayConfig,
        route: Route,
        keys: KeyRing,
        *,
        report_dir: Path,
        gps_url: str | None = None,
        plain: bool = False,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.route = route
        self.report_dir = report_dir
        self.zone = config.timezone
        self.progress = DrivebyProgress(route, clock=clock)
        self.gps = GpsReader(gps_url) if gps_url else None
        self.gateway = Gateway(
            config,
            keys,
            locate=self.gps.location if self.gps is not None else None,
            on_spooled=self._spooled,
        )
        # Frames for watch_plain's lines; None on the live screen, which needs no history.
        self._events: queue.SimpleQueue[DrivebyEvent] | None = (
            queue.SimpleQueue() if plain else None
        )
        self._stopped = threading.Event()

    def start(self) -> None:
        """GPS first, so the first readings have a place; StorageError when the spool fails."""
        if self.gps is not None:
            self.gps.start()
        try:
            self.gateway.start()
        except BaseException:
            if self.gps is not None:
                self.gps.stop()
            raise

    def stop_soon(self) -> None:
        """Ask for the end (a signal handler may)."""
        self.gateway.stop_soon()

    def _spooled(self, messages: Sequence[dict[str, Any]]) -> None:
        # The pipeline's thread: nothing slow here, printing is the main thread's.
        for message in messages:
            try:
                event = event_from_message(message)
            except ValueError as error:
                log.error("drive-by cannot count a spooled message: %s", error)
                continue
            self.progress.record(event)
            if self._events is not None:
                self._events.put(event)

    def watch_live(self, console: Console, *, refresh_per_second: float = 4.0) -> None:
        title = Path(self.route.path).name
        self._silence_offline_broker()

        def render() -> _Screen:
            gps = self.gps.status() if self.gps is not None else None
            view = DrivebyView(self.progress.snapshot(), gps, title=title, zone=self.zone)
            return _Screen(view, self._status_line())

        with Live(
            get_renderable=render,
            console=console,
            refresh_per_second=refresh_per_second,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ):
            while not self.gateway.wait(0.5):
                pass

    def watch_plain(self, out: TextIO) -> None:
        """A line per frame, and one whenever the collected count changes (plain=True)."""
        events = self._events
        if events is None:
            raise RuntimeError("a session shows plain lines when made with plain=True")
        collected = -1
        while True:
            stopping = self.gateway.wait(0.5)
            if stopping:
                # What the pipeline holds is spooled while the gateway stops.
                self._stop_gateway()
            lines: list[str] = []
            while not events.empty():
                lines.append(event_line(events.get(), self.route, self.zone))
            snap = self.progress.snapshot()
            if snap.collected != collected:
                collected = snap.collected
                lines.append(f"collected {collected}/{snap.expected} ({snap.percent}%)")
            if lines:
                out.write("\n".join(lines) + "\n")
                out.flush()
            if stopping:
                return

    def _silence_offline_broker(self) -> None:
        # The status line says when the broker is out of reach: a warning at each attempt
        # would scroll the screen all day in a van without a connection.
        logging.getLogger("gateway.publisher").setLevel(logging.ERROR)

    def _status_line(self) -> Text:
        broker = self.config.broker
        publisher = self.gateway.publisher
        online = publisher is not None and publisher.connected
        try:
            waiting = str(self.gateway.spool.depth()) if self.gateway.spool else "?"
        except StorageError:
            waiting = "?"
        return Text.assemble(
            ("MQTT ", "bold"),
            f"{broker.host}:{broker.port} ",
            ("online", "green") if online else ("offline, kept in the spool", "yellow"),
            f"   spool {waiting} waiting   gateway {self.config.gateway_id}",
            no_wrap=True,
            overflow="ellipsis",
        )

    def _stop_gateway(self) -> None:
        if not self._stopped.is_set():
            self._stopped.set()
            self.gateway.stop()
            if self.gps is not None:
                self.gps.stop()

    def finish(self) -> Ending:
        """Stop everything, then write the report (so it holds what the stop spooled)."""
        self._stop_gateway()
        snapshot = self.progress.snapshot()
        fallback = False
        try:
            report = write_report(snapshot, self.report_dir)
        except StorageError as error:
            log.error("%s; writing it next to the spool instead", error)
            report = write_report(snapshot, self.config.spool_path.parent)
            fallback = True
        return Ending(report, fallback, self._spool_waiting())

    def _spool_waiting(self) -> int | None:
        """What the next start sends first: the spool's rows not acknowledged."""
        try:
            with Spool(
                self.config.spool_path, self.config.gateway_id, topic_root=self.config.topic_root
            ) as spool:
                return spool.depth()
        except StorageError as error:
            log.error("cannot read the spool: %s", error)
            return None
