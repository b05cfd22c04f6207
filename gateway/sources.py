"""The gateway's inputs: one thread per wM-Bus receiver, wired M-Bus bus and Modbus unit.

Each source turns what its driver delivers into RawFrame or Polled items for the pipeline and
never ends on its own while the gateway runs: a receiver unplugged, a bus that stops answering
or a Modbus unit gone away is logged, counted (`failed{reason=...}`) and retried with a growing
delay (from 1 s to 60 s), because an edge collector has nobody to restart it. A stop request
is honoured within about a second, or at the end of a poll in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from drivers.mbus_master import MbusMaster, Readout
from drivers.mbus_search import parse_secondary
from drivers.modbus import ModbusReader
from drivers.serial_port import Backoff
from drivers.wmbus_receiver import open_receiver
from gateway.config import (
    MAX_PRIMARY_ADDRESS,
    MbusAddresses,
    MbusBusConfig,
    ModbusUnitConfig,
    ReceiverConfig,
)
from gateway.frames import Location, RawFrame
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Item, Pipeline, Polled
from metergate.errors import DeviceError, DeviceTimeout, MetergateError, TransportError

log = logging.getLogger(__name__)

_IDLE_S = 1.0  # how often a quiet receiver looks at the stop flag
# The driver's own reconnect loop does not look at the stop flag; past this the source's
# retry (which does) takes over.
_RECONNECT_BUDGET_S = 5.0
# A source that ran this long before failing was healthy: its next wait starts short again.
_HEALTHY_S = 60.0
RETRY = Backoff(initial_s=1.0, factor=2.0, maximum_s=60.0)


def _no_location() -> Location | None:
    return None


def _no_key(meter_id: str) -> bytes | None:
    return None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What every source shares: where items go, what stops it, where the gateway is (GPS on
    a drive-by, else nothing), how long to wait after a failure, and the meters' keys."""

    pipeline: Pipeline
    metrics: GatewayMetrics
    stop: threading.Event
    locate: Callable[[], Location | None] = _no_location
    retry: Backoff = RETRY
    key_of: Callable[[str], bytes | None] = _no_key


class Source:
    """A thread feeding the pipeline until the context's `stop` is set."""

    def __init__(self, name: str, context: SourceContext) -> None:
        self.name = name
        self.context = context
        self.stop = context.stop
        self.metrics = context.metrics
        self.thread = threading.Thread(target=self._guarded, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _guarded(self) -> None:
        delays: Iterator[float] = self.context.retry.delays()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.run()
            except (TransportError, DeviceError) as error:
                self._trouble("source_unavailable", error)
            except MetergateError as error:
                self._trouble("source_error", error)
            except Exception as error:  # the gateway outlives a driver's surprise
                log.exception("%s: unexpected error", self.name)
                self._trouble("source_error", error)
            else:
                return  # a replayed file has ended
            if time.monotonic() - started > _HEALTHY_S:
                delays = self.context.retry.delays()
            self.stop.wait(next(delays))

    def _trouble(self, reason: str, error: BaseException) -> None:
        log.warning("%s: %s; trying again", self.name, error)
        self.metrics.failed(reason)

    def run(self) -> None:
        raise NotImplementedError

    def submit(self, item: Item) -> bool:
        """Queue `item`; False when the source should end. Busy air never lets a receiver go
        idle, so the stop flag is looked at after every item, not only on a quiet second."""
        return self.context.pipeline.submit(item, self.stop) and not self.stop.is_set()

    def raw(self, data: bytes, protocol: str, source: str, rssi: Decimal | None = None) -> RawFrame:
        return RawFrame(data, _now(), source, protocol, rssi, self.context.locate())


class ReceiverSource(Source):
    """A wM-Bus USB receiver or rtl_wmbus (drivers.wmbus_receiver)."""

    def __init__(self, config: ReceiverConfig, context: SourceContext) -> None:
        super().__init__(f"receiver {config.device}", context)
        self.config = config

    def run(self) -> None:
        receiver = open_receiver(
            self.config.device, mode=self.config.mode, reconnect_budget_s=_RECONNECT_BUDGET_S
        )
        try:
            while not self.stop.is_set():
                try:
                    for received in receiver.frames(idle_timeout_s=_IDLE_S):
                        raw = self.raw(
                            received.frame, "wmbus", self.config.device, received.rssi_dbm
                        )
                        if not self.submit(raw):
                            return
                    return  # the end of a replayed file
                except DeviceTimeout:
                    continue  # quiet air: look at the stop flag
        finally:
            receiver.close()


class MbusSource(Source):
    """A wired M-Bus: every `interval_s`, read each configured meter or scan for them."""

    def __init__(self, config: MbusBusConfig, context: SourceContext) -> None:
        super().__init__(f"mbus {config.port}", context)
        self.config = config

    def run(self) -> None:
        key_of = self.context.key_of
        master = MbusMaster.open(
            self.config.port, baud=self.config.baud, keys=lambda address: key_of(address.meter_id)
        )
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                for readout in self._poll(master):
                    for frame in readout.frames:
                        if not self.submit(self.raw(frame, "mbus", self.config.port)):
                            return
                self.stop.wait(max(0.0, started + self.config.interval_s - time.monotonic()))
        finally:
            master.close()

    def _poll(self, master: MbusMaster) -> Iterator[Readout]:
        addresses = self.config.addresses
        if addresses == "scan-secondary":
            yield from master.scan_secondary(readout=True).found
            return
        for target in self._targets(master, addresses):
            if self.stop.is_set():
                return
            address = parse_secondary(target) if isinstance(target, str) else target
            try:
                yield master.read(address)
            except (TransportError, DeviceError) as error:
                # One silent meter must not cost the others their reading.
                log.warning("%s: meter %s: %s", self.name, target, error)
                self.metrics.failed("meter_no_answer")

    def _targets(self, master: MbusMaster, addresses: MbusAddresses) -> Iterator[int | str]:
        if addresses != "scan":
            yield from addresses
            return
        # Address by address, so a stop need not wait for the whole scan (minutes at 300 baud).
        for address in range(MAX_PRIMARY_ADDRESS + 1):
            if self.stop.is_set():
                return
            scan = master.scan_primary([address])
            if scan.collisions:
                log.warning("%s: several meters answer at address %d", self.name, address)
                self.metrics.failed("address_collision")
            yield from scan.found


class ModbusSource(Source):
    """One Modbus unit, read with its register map every `interval_s`."""

    def __init__(self, config: ModbusUnitConfig, context: SourceContext) -> None:
        super().__init__(f"modbus {config.url} unit {config.unit_id}", context)
        self.config = config

    def run(self) -> None:
        config = self.config
        with ModbusReader(config.url, config.unit_id, config.register_map) as reader:
            while not self.stop.is_set():
                started = time.monotonic()
                reading = reader.read()
                registers = b"".join(word.to_bytes(2, "big") for _, word in reading.registers)
                raw = self.raw(registers, "modbus", f"{config.url}#{config.unit_id}")
                item = Polled(raw, config.meter_id, config.register_map.manufacturer, reading)
                if not self.submit(item):
                    return
                self.stop.wait(max(0.0, started + config.interval_s - time.monotonic()))
