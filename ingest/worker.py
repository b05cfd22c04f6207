"""The ingest worker: MQTT in, committed rows out (DESIGN.md sections 3 and 9).

It subscribes to `reading` and `raw` topics with QoS 1, through a shared subscription so that
more workers split the load, with a persistent session (MQTT 5 clean start off, a session
expiry; MQTT 3.1.1 clean session off) under a fixed client id, so that the broker keeps what
arrives while the worker is down. Messages are batched by count and by time, validated, written
in one transaction per batch, and only then acknowledged (paho-mqtt manual acks): a crash or a
database outage before the commit leaves them unacknowledged, the broker delivers them again,
and the idempotent write makes that exactly-once in effect.

Shared subscriptions are MQTT 5 (clause 4.8.2). A broker tells an MQTT 5 client when it has
none, and the worker then subscribes plainly; MQTT 3.1.1 has no way to say so, and some brokers
(NATS, for one) grant `$share/...` as an ordinary filter that matches nothing, so a worker on
such a broker must be told (`--no-share`).

What never stops it: a bad payload (a dead letter), the database going away (the batch is
retried with backoff, unacknowledged; the broker sends no more than Receive Maximum
unacknowledged messages and queues the rest), the broker going away (paho reconnects with
backoff). A migration
that fails is the one error it stops for: that is a broken deployment, not a fault to ride out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.broker import BrokerConfig
from ingest.boundaries import DEFAULT_ZONE
from ingest.engine_loop import DEFAULT_DELAY_S, EngineLoop
from ingest.metrics import IngestMetrics
from ingest.migrate import migrate
from ingest.payload import DEFAULT_TOPIC_ROOT, InvalidMessage, parse_message
from ingest.store import BatchCounts, BatchRejected, DatabaseUnavailable, DeadLetter, Item, Store
from metergate.errors import ConfigError
from metergate.metrics_server import MetricsServer

log = logging.getLogger(__name__)

DEFAULT_SHARE_GROUP = "ingest"
_MAX_RECEIVE = 65535  # MQTT 5 Receive Maximum is a two-byte integer (clause 3.1.2.11.3)
_POLL_S = 0.25  # how often an idle worker looks at its stop flag


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How one worker connects and batches. `share_group` None: a plain subscription."""

    database_url: str
    broker: BrokerConfig
    client_id: str
    batch_size: int = 500
    batch_ms: int = 200
    topic_root: str = DEFAULT_TOPIC_ROOT
    share_group: str | None = DEFAULT_SHARE_GROUP
    session_expiry_s: int = 7 * 24 * 3600
    retry_max_s: float = 30.0
    # Seconds between engine runs for the meters that batches touched (None: no engines here),
    # and how long a meter's new data waits for more before its run (ingest/engine_marks.py).
    engine_interval_s: float | None = 5.0
    engine_delay_s: float = DEFAULT_DELAY_S
    zone: ZoneInfo = DEFAULT_ZONE
    metrics_port: int | None = None  # /metrics on 127.0.0.1 (0: any free port); None: none

    def __post_init__(self) -> None:
        if not self.database_url:
            raise ConfigError("no database URL (--database-url or DATABASE_URL)")
        if not 1 <= self.batch_size <= _MAX_RECEIVE // 2:
            raise ConfigError(f"the batch size is 1 to {_MAX_RECEIVE // 2} messages")
        if not 1 <= self.batch_ms <= 60_000:
            raise ConfigError("the batch time is 1 to 60000 ms")
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise ConfigError("the session expiry is 0 to 4294967295 s")
        if not self.retry_max_s > 0:
            raise ConfigError("the longest retry delay must be positive")
        if self.engine_interval_s is not None and not self.engine_interval_s > 0:
            raise ConfigError("the engine interval must be positive")
        if not 0 <= self.engine_delay_s <= 86_400:
            raise ConfigError("the engine delay is 0 to 86400 s")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError("the metrics port is 0 to 65535")
        for name, level in (
            ("client id", self.client_id),
            ("topic root", self.topic_root),
            ("share group", self.share_group),
        ):
            if level is not None and (not level or any(c in level for c in "/+#\0")):
                raise ConfigError(f"the {name} must be a non-empty topic level (no / + #)")

    def topics(self, *, shared: bool) -> list[str]:
        filters = [f"{self.topic_root}/+/+/reading", f"{self.topic_root}/+/+/raw"]
        if shared and self.share_group is not None:
            return [f"$share/{self.share_group}/{topic}" for topic in filters]
        return filters

    @property
    def receive_maximum(self) -> int:
        """Unacknowledged messages the broker may send: room for the batch being written and
        the next one filling up, and also the memory a worker holds during an outage."""
        return min(_MAX_RECEIVE, 2 * self.batch_size)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One MQTT message as it arrived, and what it is (`item`: the message, or the dead letter
    it makes). `generation` counts broker connections, because a message id is only worth
    acknowledging on the connection that delivered it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: datetime
    item: Item


class Worker:
    """`run()` until `stop()` (from a signal handler or another thread)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.totals = BatchCounts()
        self.metrics = IngestMetrics()
        self.metrics_server: MetricsServer | None = None
        self.subscribed = threading.Event()  # set while the subscriptions are in place
        self._stop = threading.Event()
        self._inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._subscribing: dict[int, bool] = {}  # SUBSCRIBE mid -> shared?
        self._client = self._make_client()
        self.engines: EngineLoop | None = None
        if config.engine_interval_s is not None:
            self.engines = EngineLoop(
                config.database_url,
                interval_s=config.engine_interval_s,
                delay_s=config.engine_delay_s,
                zone=config.zone,
                metrics=self.metrics,
            )

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Migrate, connect, and store batches until stopped. Raises StorageError only when a
        migration fails for a reason other than an unreachable database, ConfigError when the
        metrics port cannot be bound."""
        if self.config.metrics_port is not None:
            self.metrics_server = self.metrics.serve(self.config.metrics_port)
        try:
            self._run()
        finally:
            if self.metrics_server is not None:
                self.metrics_server()
                self.metrics_server = None

    def _run(self) -> None:
        if not self._migrate():
            return
        broker = self.config.broker
        properties = None
        if broker.protocol == 5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.config.session_expiry_s
            properties.ReceiveMaximum = self.config.receive_maximum
        with Store(self.config.database_url) as store:
            self._client.connect_async(
                broker.host,
                broker.port,
                broker.keepalive_s,
                clean_start=False if broker.protocol == 5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )
            self._client.loop_start()
            if self.engines is not None:
                self.engines.start()
            try:
                while not self._stop.is_set():
                    batch = self._collect()
                    if batch:
                        self._commit(store, batch)
            finally:
                self._client.disconnect()
                self._client.loop_stop()
                if self.engines is not None:
                    self.engines.stop()
        log.info("stopped: %s", self.totals)

    def _migrate(self) -> bool:
        attempt = 0
        while not self._stop.is_set():
            try:
                applied = migrate(self.config.database_url)
            except DatabaseUnavailable as exc:
                self._log_retry(attempt, "database unavailable for migrations", exc)
                if self._stop.wait(self._delay(attempt)):
                    return False
                attempt += 1
                continue
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
            return True
        return False

    def _make_client(self) -> mqtt.Client:
        broker = self.config.broker
        protocol = mqtt.MQTTv5 if broker.protocol == 5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=protocol,
            # MQTT 3.1.1 keeps the session when clean session is off (clause 3.1.2.4); MQTT 5
            # takes clean start with CONNECT instead.
            clean_session=False if protocol == mqtt.MQTTv311 else None,
            manual_ack=True,
        )
        if broker.tls:
            client.tls_set(
                ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file
            )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, round(self.config.retry_max_s)))
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # The callbacks run on paho's network thread.

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            hint = ""
            if reason_code == "Unsupported protocol version":
                hint = " (a broker of MQTT 3.1.1 only: run with --mqtt-protocol 3.1.1)"
            log.warning("the broker refused the connection: %s%s", reason_code, hint)
            return
        self.metrics.mqtt_connected(True)
        # MQTT 5 clause 3.2.2.3.15: a broker says in CONNACK when it has no shared subscriptions.
        shared = getattr(properties, "SharedSubscriptionAvailable", 1) != 0
        log.info("connected to the broker (session present: %s)", flags.session_present)
        self._subscribe(shared=shared and self.config.share_group is not None)

    def _subscribe(self, *, shared: bool) -> None:
        topics = self.config.topics(shared=shared)
        result, mid = self._client.subscribe([(topic, 1) for topic in topics])
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._subscribing[mid] = shared

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        shared = self._subscribing.pop(mid, False)
        if not any(code.is_failure for code in reason_codes):
            log.info("subscribed to %s", ", ".join(self.config.topics(shared=shared)))
            self.subscribed.set()
        elif shared:
            log.warning("the broker refused the shared subscription; subscribing plainly")
            self._subscribe(shared=False)
        else:
            log.error("the broker refused the subscription: %s", reason_codes)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._ack_lock:
            self._generation += 1
        self.metrics.mqtt_connected(False)
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Validation runs here, on the network thread, so that it overlaps the database's work
        # on the previous batch (psycopg releases the GIL while it waits for the server).
        topic, payload, received_at = message.topic, bytes(message.payload), datetime.now(UTC)
        item: Item
        try:
            item = parse_message(topic, payload, topic_root=self.config.topic_root)
        except InvalidMessage as exc:
            log.warning("dead letter from %s: %s", topic, exc.message)
            item = DeadLetter(topic, payload, exc.message, received_at)
        except Exception as exc:
            # A bug must not kill paho's network thread (nothing would arrive any more); the
            # message is kept whole, with what went wrong.
            log.exception("validating a message from %s failed", topic)
            item = DeadLetter(topic, payload, f"the ingest failed on it: {exc!r}", received_at)
        self._inbox.put(
            Delivery(topic, payload, message.mid, message.qos, self._generation, received_at, item)
        )

    # The rest runs on the thread that called run().

    def _collect(self) -> list[Delivery]:
        """The next batch: up to batch_size messages, or what came within batch_ms of the
        first one."""
        try:
            batch = [self._inbox.get(timeout=_POLL_S)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.config.batch_ms / 1000
        while len(batch) < self.config.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _commit(self, store: Store, batch: list[Delivery]) -> None:
        started = time.monotonic()
        if self._write(store, [delivery.item for delivery in batch], batch):
            self._ack(batch)
            self.metrics.committed(len(batch), time.monotonic() - started)

    def _write(self, store: Store, items: list[Item], batch: list[Delivery]) -> bool:
        """Write until committed (True) or the worker is stopped (False, nothing acknowledged).

        A batch the database refuses is written one message at a time, and a message it still
        refuses becomes a dead letter, so one bad row costs one message, not the batch.
        """
        attempt = 0
        while True:
            try:
                counts = store.write(items)
            except DatabaseUnavailable as exc:
                self._log_retry(attempt, f"batch of {len(items)} not written", exc)
                self.metrics.database_wait()
                if self._stop.wait(self._delay(attempt)):
                    return False
                attempt += 1
                continue
            except BatchRejected as exc:
                if len(items) > 1:
                    return all(
                        self._write(store, [item], [delivery])
                        for item, delivery in zip(items, batch, strict=True)
                    )
                if isinstance(items[0], DeadLetter):
                    # Cannot happen with the schema as it is; if it does, waiting (and saying
                    # so) loses nothing, where acknowledging would.
                    self._log_retry(attempt, "a dead letter was refused", exc)
                    if self._stop.wait(self._delay(attempt)):
                        return False
                    attempt += 1
                    continue
                delivery = batch[0]
                log.warning("dead letter from %s: %s", delivery.topic, exc)
                items = [
                    DeadLetter(delivery.topic, delivery.payload, str(exc), delivery.received_at)
                ]
                continue
            if attempt:
                log.info("database back; batch of %d written", len(items))
            self.totals += counts
            self.metrics.stored(counts)
            log.debug("batch of %d messages: %s", len(items), counts)
            return True

    def _ack(self, batch: list[Delivery]) -> None:
        # MQTT 5 clause 4.6: PUBACKs go in the order the PUBLISH packets came; batches do.
        with self._ack_lock:
            for delivery in batch:
                if delivery.generation == self._generation:
                    self._client.ack(delivery.mid, delivery.qos)

    def _delay(self, attempt: int) -> float:
        return float(min(self.config.retry_max_s, 0.5 * 2**attempt))

    @staticmethod
    def _log_retry(attempt: int, what: str, exc: Exception) -> None:
        # The first failure is a warning, the rest a quiet debug line: an outage of an hour
        # must not fill the log.
        level = logging.WARNING if attempt == 0 else logging.DEBUG
        log.log(level, "%s (%s); retrying", what, exc)
