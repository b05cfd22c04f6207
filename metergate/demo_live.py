"""The demo's live part: the simulated devices on real ports, and the gateway reading them.

The devices serve the present: an emulated iM871A on a pty (`dev/ttyWMBUS0` in the demo's
folder), the wired bus on another pty (`dev/ttyMBUS0`, at the pace of 2400 baud) and the Modbus
units on a TCP port of 127.0.0.1. The gateway is configured as an operator would configure it: a
gateway.toml and a private keys file in `gateway/`, loaded by gateway.config, so its spool and
its message sequence live on from one run of the demo to the next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from firmware_sim.modbus_server import ModbusTcpSimulator
from firmware_sim.receivers import Im871aDevice
from firmware_sim.serve_mbus import PtyMbusServer
from firmware_sim.serve_wmbus import ReceiverServer
from gateway.config import load_config, load_gateway_keys
from gateway.daemon import Gateway
from metergate.demo_fleet import REGISTER_MAP, DemoFleet, Endpoints

SERIAL_FAULT_RATE = 0.005  # indications spoiled on the receiver's serial line
MBUS_BAUD = 2400
MBUS_INTERVAL_S = 300
MODBUS_INTERVAL_S = 60
PASSWORD_ENV = "METERGATE_DEMO_MQTT_PASSWORD"


def _toml(value: str) -> str:
    # A JSON string is a TOML basic string: same quotes, same escapes.
    return json.dumps(value)


def demo_topic_root(ident: str) -> str:
    """The demo's own first topic level: its ingest takes its gateway's readings and no other
    gateway's on a broker it shares."""
    return f"metergate-demo-{ident}"


class Live:
    """Start once, stop once (stop is safe after a failed start)."""

    def __init__(
        self,
        folder: Path,
        fleet: DemoFleet,
        ident: str,
        mqtt_url: str,
        environ: Mapping[str, str],
    ) -> None:
        self.folder = folder
        self.fleet = fleet
        self.gateway_id = f"demo-{ident}"
        self.topic_root = demo_topic_root(ident)
        self.mqtt_url = mqtt_url
        self.environ = environ
        self.gateway: Gateway | None = None
        self.receiver: ReceiverServer | None = None
        self.bus: PtyMbusServer | None = None
        self.modbus: ModbusTcpSimulator | None = None
        self.endpoints = Endpoints("", "", "")

    def start(self, on_spooled: Callable[[Sequence[dict[str, Any]]], None]) -> None:
        dev = self.folder / "dev"
        dev.mkdir(exist_ok=True)
        fleet = self.fleet
        self.receiver = ReceiverServer(
            Im871aDevice(),
            fleet.air,
            link=dev / "ttyWMBUS0",
            fault_rate=SERIAL_FAULT_RATE,
            seed=fleet.plan.seed,
        ).start()
        self.bus = PtyMbusServer(fleet.bus(), link=dev / "ttyMBUS0", baud=MBUS_BAUD).start()
        self.modbus = ModbusTcpSimulator(fleet.bank(), host="127.0.0.1").start()
        self.endpoints = Endpoints(f"im871a:{self.receiver.url}", self.bus.url, self.modbus.url)
        config_path, environ = self._write_config()
        config = load_config(config_path, environ=environ)
        self.gateway = Gateway(config, load_gateway_keys(config.keys_file), on_spooled=on_spooled)
        self.gateway.start()

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for device in (self.receiver, self.bus, self.modbus):
            if device is not None:
                device.stop()

    def describe(self) -> str:
        fleet, points = self.fleet, self.endpoints
        return (
            f"{len(fleet.air.meters)} wireless on {points.receiver},"
            f" {len(fleet.wired.meters)} wired on {points.bus},"
            f" {len(fleet.flow_meters)} Modbus on {points.modbus_url}"
        )

    def _write_config(self) -> tuple[Path, dict[str, str]]:
        """gateway/gateway.toml and gateway/keys.toml; the environment the config reads (a
        broker password travels there, not in the file)."""
        folder = self.folder / "gateway"
        folder.mkdir(exist_ok=True)
        keys = folder / "keys.toml"
        descriptor = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # the gateway refuses a keys file others can read
        with os.fdopen(descriptor, "w") as out:
            out.write("[keys]\n")
            for meter_id, key in sorted(self.fleet.keys().items()):
                out.write(f'"{meter_id}" = "{key.hex().upper()}"\n')
        parts = urlsplit(self.mqtt_url)
        environ = dict(self.environ)
        url = self.mqtt_url
        password_line = ""
        if parts.password is not None:
            environ[PASSWORD_ENV] = unquote(parts.password)
            host = parts.netloc.rsplit("@", 1)[1]
            url = parts._replace(netloc=f"{parts.username}@{host}").geturl()
            password_line = f"password_env = {_toml(PASSWORD_ENV)}\n"
        addresses = ", ".join(str(m.primary_address) for m in self.fleet.wired.meters)
        lines = [
            f"gateway_id = {_toml(self.gateway_id)}",
            'timezone = "Europe/Riga"',
            'spool_path = "spool.sqlite"',
            'keys_file = "keys.toml"',
            "",
            "[mqtt]",
            f"url = {_toml(url)}",
            f"topic_root = {_toml(self.topic_root)}",
            password_line,
            "[[receivers]]",
            f"device = {_toml(self.endpoints.receiver)}",
            'mode = "C1T1"',
            "",
            "[[mbus]]",
            f"port = {_toml(self.endpoints.bus)}",
            f"baud = {MBUS_BAUD}",
            f"addresses = [{addresses}]",
            f"interval_s = {MBUS_INTERVAL_S}",
        ]
        for unit, meter_id in enumerate(self.fleet.modbus_meter_ids(), 1):
            lines += [
                "",
                "[[modbus]]",
                f"url = {_toml(self.endpoints.modbus_url)}",
                f"unit_id = {unit}",
                f"profile = {_toml(REGISTER_MAP)}",
                f"interval_s = {MODBUS_INTERVAL_S}",
                f"meter_id = {_toml(meter_id)}",
            ]
        config = folder / "gateway.toml"
        config.write_text("\n".join(lines) + "\n")
        return config, environ
