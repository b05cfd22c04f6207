"""The deployment files: the compose file passes `docker compose config`, and the gateway
configurations shipped in deploy/ load once their paths exist (they are checked at start)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config import load_config

REPO = Path(__file__).resolve().parents[1]


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], check=False, capture_output=True
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_the_compose_file_is_valid() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    done = subprocess.run(
        [*command, "config", "--services"], check=False, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {
        "timescaledb",
        "mosquitto",
        "migrate",
        "ingest",
        "api",
        "gateway",
    }


@pytest.mark.parametrize("name", ["gateway.toml", "gateway-compose.toml"])
def test_the_shipped_gateway_configurations_load(tmp_path: Path, name: str) -> None:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    (etc / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    for keys in (etc / "keys.toml", state / "keys.toml"):
        keys.write_text("[keys]\n")
        keys.chmod(0o600)
    text = (REPO / "deploy" / name).read_text()
    text = text.replace("/etc/metergate", str(etc)).replace("/var/lib/metergate", str(state))
    config_path = tmp_path / name
    config_path.write_text(text)
    config = load_config(config_path, environ={"METERGATE_MQTT_PASSWORD": "secret"})
    assert config.receivers and config.spool_path.parent == state
