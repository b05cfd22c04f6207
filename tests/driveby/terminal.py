"""A terminal for tests that use metergate as a person does: a tmux pane of a fixed size, and
the `metergate sim ...` processes behind it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
METERGATE = [sys.executable, "-m", "metergate"]


@contextmanager
def simulator(*args: str) -> Iterator[dict[str, Any]]:
    """A `metergate sim ...` process; its first line of JSON, then SIGTERM at the end."""
    process = subprocess.Popen(
        [*METERGATE, "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


class Tmux:
    """A tmux server of this test's own (its own socket, no config file) with one session
    running an interactive shell in a pane of a fixed size."""

    def __init__(self, binary: str, width: int, height: int) -> None:
        self.binary = binary
        self.socket = f"metergate-test-{uuid.uuid4().hex[:12]}"
        self.session = "driveby"
        # COLUMNS and LINES would override the pane's size for rich; a bare prompt keeps the
        # screen readable.
        shell = "env -u COLUMNS -u LINES PS1='$ ' bash --norc --noprofile -i"
        self.tmux(
            "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
            "-c", str(ROOT), shell,
        )  # fmt: skip
        self.socket_path = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            [self.binary, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return done.stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", self.session, "-l", line)
        self.tmux("send-keys", "-t", self.session, "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def size(self) -> str:
        return self.tmux(
            "display-message", "-p", "-t", self.session, "#{pane_width}x#{pane_height}"
        )

    def wait_for(self, seen: Callable[[str], object], timeout_s: float, what: str) -> str:
        """The screen once `seen(screen)` is true; a failure shows the last screen."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.screen()
            if seen(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout_s} s waiting for {what}:\n{text}")
            time.sleep(0.25)

    def close(self) -> None:
        subprocess.run(
            [self.binary, "-L", self.socket, "kill-server"], capture_output=True, check=False
        )
        self.socket_path.unlink(missing_ok=True)  # kill-server leaves it
