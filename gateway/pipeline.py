"""From frames to spooled messages: decode, drop repeats, build payloads, spool (issue 4).

Sources (gateway/sources.py) run one thread each and put what they receive on a bounded queue;
one pipeline thread takes it off in batches, turns each item into a reading/1 or raw/1 message
(DESIGN.md §3) and commits the batch to the spool in one transaction: a single fsync for many
messages is what lets a slow SD card keep up with thousands of telegrams a second. A full queue
blocks the sources, so a stalled disk slows reception instead of growing memory.

Nothing received is dropped (DESIGN.md §9): a frame that does not decode, or has no key, travels
as raw/1 with the error; only a repeat of a frame already spooled (gateway/dedup.py) is left out.
A spool that cannot be written (disk full) is retried with the batch held in memory; what is
still held when the gateway is stopped is logged with its count. A message the spool refuses
for what it is (MessageRefusedError: a bug upstream) is set aside in the spool's quarantine, so it
neither stalls the messages behind it nor vanishes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import tzinfo
from typing import Any

from decoders.decode import Decoder
from decoders.telegram import Status, Telegram, TplHeader
from decoders.wmbus_frame import Envelope
from decoders.wmbus_link import parse_dll
from drivers.modbus import ModbusReading
from gateway.dedup import DuplicateFilter, wmbus_repeat_key
from gateway.frames import Location, RawFrame
from gateway.messages import (
    DEFAULT_ZONE,
    Kind,
    raw_message,
    reading_message,
    records_message,
    undecoded_meter_id,
)
from gateway.metrics import GatewayMetrics
from gateway.spool import MessageRefusedError, Spool
from metergate.errors import DecodeError, MissingKeyError, StorageError

log = logging.getLogger(__name__)

QUEUE_SIZE = 20_000
BATCH_MAX = 1_000
_RETRY_S = 1.0
Outgoing = tuple[Kind, str | None, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Polled:
    """A Modbus poll, decoded by the unit's register map as it was read."""

    raw: RawFrame
    meter_id: str
    manufacturer: str
    reading: ModbusReading


Item = RawFrame | Polled


def decode_with_keys(
    decoder: Decoder, frame: bytes, keys: Mapping[str, bytes], *, protocol: str
) -> Telegram:
    """Decode with the key of the meter that sent the frame.

    A wM-Bus frame is first tried with the key of its link address; when the long TPL header
    names another meter (a repeater, a meter sending for a sub-meter), with that meter's key. A
    wired frame names its meter only in its TPL header, which MissingKeyError reports.
    """
    link_format = "none" if protocol == "wmbus" else None
    key = None
    if protocol == "wmbus":
        try:
            key = keys.get(parse_dll(frame)[1].meter_id)
        except DecodeError:
            key = None  # the decoder says what is wrong with the frame
    try:
        return decoder.decode(frame, key, link_format=link_format)
    except MissingKeyError as error:
        header = error.header
        if isinstance(header, Envelope):
            address = header.tpl.address
        elif isinstance(header, TplHeader):
            address = header.address
        else:
            raise
        other = keys.get(address.meter_id) if address is not None else None
        if other is None or other == key:
            raise
        return decoder.decode(frame, other, link_format=link_format)


def failure_reason(error: DecodeError) -> str:
    """The metrics label of a failed frame: the error's class in snake case."""
    name = type(error).__name__.removesuffix("Error") or "Decode"
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class Pipeline:
    """Turns items into messages and spools them; `submit` from any thread, `run` in one."""

    def __init__(
        self,
        gateway_id: str,
        spool: Spool,
        *,
        keys: Mapping[str, bytes],
        metrics: GatewayMetrics,
        zone: tzinfo = DEFAULT_ZONE,
        decoder: Decoder | None = None,
        dedup: DuplicateFilter | None = None,
        locations: Mapping[str, Location] | None = None,
        on_spooled: Callable[[Sequence[dict[str, Any]]], None] | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.gateway_id = gateway_id
        self.spool = spool
        self.keys = keys
        self.metrics = metrics
        self.zone = zone
        self.decoder = decoder or Decoder()
        self.dedup = dedup or DuplicateFilter()
        self.locations = locations or {}
        self.on_spooled = on_spooled
        self.counts = {"received": 0, "readings": 0, "raw": 0, "duplicates": 0}
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=queue_size)

    def submit(self, item: Item, stop: threading.Event | None = None) -> bool:
        """Queue one item, waiting while the queue is full; False if `stop` was set first."""
        while True:
            try:
                self._queue.put(item, timeout=0.2)
            except queue.Full:
                if stop is not None and stop.is_set():
                    return False
                continue
            return True

    def run(self, stop: threading.Event, *, wake: Callable[[], None] = lambda: None) -> None:
        """Spool batches until `stop` is set and the queue is empty."""
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._spool_batch(self.messages(batch), stop)
            wake()

    def messages(self, items: Sequence[Item]) -> list[Outgoing]:
        """The messages of `items`, in order, without repeats."""
        out: list[Outgoing] = []
        for item in items:
            message = self.message(item)
            if message is not None:
                out.append(message)
        return out

    def message(self, item: Item) -> Outgoing | None:
        """The message of one item; None for a repeat of a frame already seen."""
        raw = item.raw if isinstance(item, Polled) else item
        self.counts["received"] += 1
        self.metrics.frames_received(raw.source)
        if isinstance(item, Polled):
            raw = self._located(raw, item.meter_id)
            message = records_message(
                item.meter_id,
                item.manufacturer,
                "water",
                item.reading.records,
                raw,
                self.gateway_id,
                status=Status(0, item.reading.flags),
                zone=self.zone,
            )
            return self._reading(item.meter_id, message)
        if raw.protocol == "wmbus" and self._is_repeat(raw):
            self.counts["duplicates"] += 1
            self.metrics.duplicate()
            return None
        try:
            telegram = decode_with_keys(self.decoder, raw.data, self.keys, protocol=raw.protocol)
            address = telegram.address
            if address is not None:
                raw = self._located(raw, address.meter_id)
            message = reading_message(telegram, raw, self.gateway_id, zone=self.zone)
        except DecodeError as error:
            self.counts["raw"] += 1
            self.metrics.failed(failure_reason(error))
            meter_id = undecoded_meter_id(raw, error)
            if meter_id is not None:
                raw = self._located(raw, meter_id)
            return ("raw", meter_id, raw_message(raw, error, self.gateway_id, meter_id))
        return self._reading(message["meter_id"], message)

    def _reading(self, meter_id: str, message: dict[str, Any]) -> Outgoing:
        self.counts["readings"] += 1
        self.metrics.decoded()
        return ("reading", meter_id, message)

    def _located(self, raw: RawFrame, meter_id: str) -> RawFrame:
        """A meter's configured position where the frame brought none (no GPS)."""
        if raw.location is None and meter_id in self.locations:
            return replace(raw, location=self.locations[meter_id])
        return raw

    def _is_repeat(self, raw: RawFrame) -> bool:
        try:
            meter_id, access_no, payload = wmbus_repeat_key(raw.data)
        except DecodeError:
            return False  # decoding will say what is wrong and send it as raw
        return self.dedup.is_duplicate(meter_id, access_no, payload, raw.received_at)

    def _spool_batch(self, batch: list[Outgoing], stop: threading.Event) -> None:
        while batch:
            try:
                try:
                    self.spool.append_many(batch)
                except MessageRefusedError as refused:
                    # Retrying cannot help this one message, and holding it would stall the rest.
                    self.spool.set_aside(*batch[refused.index], str(refused))
                    del batch[refused.index]
                    self.metrics.failed("unspoolable")
                    continue
            except StorageError as error:
                self.metrics.failed("spool_error")
                if stop.is_set():
                    log.error("gateway stopped with %d messages not spooled: %s", len(batch), error)
                    return
                log.error("cannot spool %d messages, retrying: %s", len(batch), error)
                time.sleep(_RETRY_S)
                continue
            if self.on_spooled is not None:
                self.on_spooled([message for _, _, message in batch])
            return
