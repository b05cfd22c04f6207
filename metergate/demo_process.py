"""The processes `metergate demo` starts, and what a killed demo left behind (issue 7).

A child runs in a session of its own, so Ctrl-C at the terminal reaches the demo alone, which
then stops its children in order (gateway first, database last). Each child's pid sits in
`run/NAME.pid` under the demo's folder while it runs, and its environment carries
METERGATE_DEMO_DIR; a demo that was killed leaves both, and the next run in that folder stops
such leftovers before it starts anything. The environment, not the command line, tells a
leftover from a stranger that got the same pid: it cannot be faked by another folder's demo.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

MARKER = "METERGATE_DEMO_DIR"
_STOP_S = 15.0


class StoppedError(Exception):
    """Ctrl-C or SIGTERM came before the demo was up."""


def port_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:`port` now (as servers bind, with SO_REUSEADDR:
    connections of a listener that just stopped, in TIME_WAIT, do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (ended, not yet reaped by its parent) holds nothing any more.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def _terminate(pid: int, timeout_s: float = _STOP_S) -> None:
    """SIGTERM, then SIGKILL when `pid` has not ended within `timeout_s`."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                return
            time.sleep(0.05)


class Child:
    """One process of the demo's: started once, stopped once (SIGTERM, SIGKILL after a while)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        folder: Path,
        *,
        environ: Mapping[str, str],
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.folder = folder
        self.log_path = folder / "logs" / f"{name}.log"
        self.pid_path = folder / "run" / f"{name}.pid"
        self.environ = {**environ, MARKER: str(folder), "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environ,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self.process.pid}\n")
        return self

    @property
    def exit_code(self) -> int | None:
        """None while it runs."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = _STOP_S) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pid_path.unlink(missing_ok=True)


def _is_ours(pid: int, folder: Path) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{MARKER}={folder}".encode() in environ


def stop_leftovers(folder: Path) -> list[str]:
    """Stop the processes a killed demo in `folder` left running; the names of those stopped."""
    stopped = []
    for pid_path in sorted((folder / "run").glob("*.pid")):
        try:
            pid = int(pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _alive(pid) and _is_ours(pid, folder):
            _terminate(pid)
            stopped.append(pid_path.stem)
        pid_path.unlink(missing_ok=True)
    return stopped
