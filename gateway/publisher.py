"""Publishes the spool to the MQTT broker: QoS 1, in `seq` order, deleted after PUBACK.

One thread owns the paho-mqtt client, the in-flight window and the spool reads and deletes. It
drives paho through its external-loop calls (`loop_read`, `loop_write`, `loop_misc`) around its
own `select`, so every paho callback runs in this thread and nothing here needs a lock; another
thread only calls `wake()` (a byte on a socket pair) and `stop()`.

Order and duplicates. Messages go out in `seq` order (so in order per meter) with at most
`window` unacknowledged, never more than the broker's Receive Maximum (MQTT 5 section 3.2.2.3.3).
A row leaves the spool only on its PUBACK. paho keeps unacknowledged QoS 1 messages and sends
them again itself after a reconnect (MQTT 3.1.1 section 4.4 asks that of a persistent
session); if both paho and the spool resent, every message in flight at a disconnect would go
out twice. So the spool is the only source of resends: on each CONNACK, before paho's resend
pass, the publisher drops paho's queue (`drop_out_messages`) and starts again from the oldest
row still in the spool. The session is clean (clean start, no session expiry): the broker
keeps no state of an inbound QoS 1 message that a resend would need.

A PUBACK with a failure reason (MQTT 5 section 3.4.2.1, e.g. 0x87 not authorized) leaves the
row in the spool. The publisher then sends nothing new, waits for the answers to what is in
flight (so nothing the broker accepted goes out twice), backs off, and sends again from the
oldest row: a broker that refuses for a while (an ACL being fixed) delays messages but loses
none. An ACL refuses every message of a topic, so a meter's messages still arrive in order; a
refusal of one message only (0x97 quota exceeded) can let a later message of the same meter,
already in flight, overtake it. MQTT 3.1.1 has no way to refuse a PUBLISH: a broker drops it
and acknowledges it anyway (Mosquitto does, for an ACL), so use MQTT 5 where ACLs can bite.

Reconnects back off exponentially (doubling from `backoff_initial_s` to `backoff_max_s`) with
jitter (a delay is drawn between half and all of the step), so a fleet of gateways does not
reconnect in step after a broker restart. The back-off starts again from the bottom once a
connection has proved itself (a reading acknowledged, or nothing left to send), not at the
CONNACK: a broker that accepts the connection and drops it at the first reading (Mosquitto
before 2.0.22 does that after an ACL refusal when `max_queued_messages` is 0) is retried ever
more slowly. Nothing a broker or the network does ends the thread.

Status: on each connect and every `status_interval_s`, a retained JSON document on
`metergate/{gateway_id}/status` with `"state": "online"` and what the `status` callable gives
(uptime, counts, spool depth). The Last Will on the same topic is the retained JSON
`{"schema": "status/1", "gateway_id": ..., "state": "offline", "reason": "connection lost"}`:
JSON like every other status document, so a reader parses one format and reads `state`. A
graceful `stop()` publishes `"state": "offline"` with `"reason": "stopped"` itself, since the
broker discards the Will on a normal DISCONNECT.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.broker import BrokerConfig
from gateway.messages import status_topic, utc_text
from gateway.metrics import GatewayMetrics
from gateway.spool import Spool, SpooledMessage
from metergate.errors import ConfigError

log = logging.getLogger(__name__)

STATUS_SCHEMA = "status/1"
_RECEIVE_MAXIMUM_DEFAULT = 65535  # MQTT 5 section 3.2.2.3.3: absent means 65,535
# Status and the final offline message may be in flight beside the spool's window.
_STATUS_SLOTS = 2
_TICK_S = 1.0  # keep-alive checks and metric updates need at least this often


class Publisher:
    """Publishes `spool` to `broker` from its own thread; see the module notes."""

    def __init__(
        self,
        spool: Spool,
        broker: BrokerConfig,
        gateway_id: str,
        *,
        metrics: GatewayMetrics,
        status: Callable[[], dict[str, Any]],
        window: int = 100,
        status_interval_s: float = 60.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("the in-flight window holds at least one message")
        self._spool = spool
        self._broker = broker
        self._gateway_id = gateway_id
        self._metrics = metrics
        self._status = status
        self._window_limit = window
        self._window = window
        self._status_interval_s = status_interval_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._status_topic = status_topic(gateway_id, spool.topic_root)  # the spool's root
        self._client = self._make_client()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop_requested = threading.Event()
        self._stop_deadline = 0.0
        self._drain_deadline = 0.0
        self._thread: threading.Thread | None = None
        # Owned by the publisher thread from start() on.
        self._connected = False
        self._in_flight: dict[int, SpooledMessage] = {}
        self._acked: list[SpooledMessage] = []
        self._cursor = 0
        self._attempts = 0
        self._retry_at = 0.0
        self._refused_seq: int | None = None  # the oldest row refused in this round
        self._blocked_seq: int | None = None  # ... and in the last round, until it gets through
        self._refusals = 0  # rounds refused in a row, for the back-off
        self._hold_until = 0.0
        self._status_due = 0.0
        self._offline_mid: int | None = None
        self._offline_acked = False
        self._disconnecting = False
        self._gauges_due = 0.0

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of that connection."""
        return self._connected

    @property
    def in_flight(self) -> int:
        """Spool messages handed to the broker and not acknowledged yet."""
        return len(self._in_flight)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a Publisher is started once")
        self._thread = threading.Thread(
            target=self._run, name=f"publisher-{self._gateway_id}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Say that the spool has new rows (any thread)."""
        # OSError: the pipe is full (a wake-up is pending anyway) or closed after stop().
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def stop(self, timeout: float = 10.0) -> None:
        """Wait up to half of `timeout` for PUBACKs of the messages in flight, publish the
        retained offline status, disconnect, and end the thread. Rows not acknowledged stay
        in the spool for the next start."""
        now = time.monotonic()
        self._drain_deadline = now + timeout / 2
        self._stop_deadline = now + timeout
        self._stop_requested.set()
        self.wake()
        if self._thread is not None:
            # A connect attempt in progress may add paho's connect timeout.
            self._thread.join(timeout + self._client.connect_timeout + 1.0)
            if self._thread.is_alive():
                log.error("publisher %s did not stop in time", self._gateway_id)
                return
        self._wake_r.close()
        self._wake_w.close()

    # -- the publisher thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    self._close_socket()
                    return
            except Exception:  # the thread must outlive any surprise; the spool keeps the data
                log.exception("publisher %s: unexpected error, reconnecting", self._gateway_id)
                self._metrics.failed("publisher_error")
                try:
                    self._reset_connection()
                except Exception:
                    log.exception("publisher %s: cannot close the connection", self._gateway_id)
                    self._schedule_retry()

    def _step(self) -> bool:
        """One turn of the loop; True when the thread is done."""
        client = self._client
        sock = client.socket()
        now = time.monotonic()
        if sock is None:
            self._set_connected(False)
            if self._stop_requested.is_set():
                return True
            if now < self._retry_at:
                self._wait(self._retry_at - now)
            else:
                self._connect()
            return False
        if self._stop_requested.is_set():
            if self._stopping(now):
                return True
        else:
            self._fill()
            if self._connected and now >= self._status_due:
                self._publish_status("online")
                self._status_due = now + self._status_interval_s
        sock = client.socket()  # what was done above may have closed it
        if sock is None:
            return False
        timeout = 0.0 if _tls_pending(sock) else self._timeout(now)
        writers = [sock] if client.want_write() else []
        readable, _, _ = select.select([sock, self._wake_r], writers, [], timeout)
        if self._wake_r in readable:
            self._drain_wake()
        # Read before writing: when the broker has closed the connection, a write fails and
        # paho drops the socket, and PUBACKs still unread in it would be lost (their messages
        # then sent twice). paho writes only here (see _make_client).
        if sock in readable or _tls_pending(sock):
            client.loop_read()
        if client.socket() is not None and client.want_write():
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()
        self._apply_acks()
        if self._refused_seq is not None and not self._in_flight:
            self._retry_refused()
        return False

    def _retry_refused(self) -> None:
        """Every answer of the round is in: send again from the oldest row, after a back-off."""
        self._blocked_seq, self._refused_seq = self._refused_seq, None
        self._cursor = 0
        self._hold_until = time.monotonic() + self._backoff(self._refusals)
        self._refusals += 1

    def _timeout(self, now: float) -> float:
        moments = [now + _TICK_S]
        if now < self._hold_until:
            moments.append(self._hold_until)
        if self._connected:
            moments.append(self._status_due)
        if self._stop_requested.is_set():
            moments.append(self._stop_deadline)
        return max(0.0, min(moments) - now)

    def _fill(self) -> None:
        """Hand the next spool rows to paho, up to the window."""
        if not self._connected or self._refused_seq is not None:
            return
        if time.monotonic() < self._hold_until:
            return
        # After a refusal, the refused row goes alone until the broker takes it: a change of
        # mind (an ACL fixed) can then not let a later reading of its meter overtake it.
        window = self._window if self._blocked_seq is None else 1
        free = window - len(self._in_flight)
        if free <= 0:
            return
        batch = self._spool.pending(free, after_seq=self._cursor)
        if self._blocked_seq is not None and batch and batch[0].seq != self._blocked_seq:
            self._blocked_seq = None  # the row is gone (quarantined): nothing to wait for
        if not batch and not self._in_flight:
            self._attempts = 0  # all caught up: this connection works
        for message in batch:
            info = self._client.publish(message.topic, message.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # The connection went under us; the next CONNACK starts again from the spool.
                break
            self._in_flight[info.mid] = message
            self._cursor = message.seq

    def _apply_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self._spool.ack_many([m.seq for m in acked])
            self._attempts = 0  # readings get through: this connection works
            now = self._clock()
            for message in acked:
                self._metrics.publish_latency(now - message.spooled_at)
        if time.monotonic() >= self._gauges_due:
            self._metrics.spool_depth(self._spool.depth())
            self._metrics.spool_quarantined(self._spool.quarantined())
            self._gauges_due = time.monotonic() + _TICK_S

    def _stopping(self, now: float) -> bool:
        """The steps of a graceful stop; True when the thread should end now."""
        if self._disconnecting:
            # The DISCONNECT cannot be written (a broker that reads nothing): give up on it.
            return now >= self._stop_deadline + _TICK_S
        if self._connected and now < self._stop_deadline:
            if self._in_flight and now < self._drain_deadline:
                return False
            if self._offline_mid is None:
                self._offline_mid = self._publish_status("offline", reason="stopped")
                return False
            if not self._offline_acked:
                return False
        self._disconnecting = True
        self._client.disconnect()
        return False

    def _close_socket(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            sock.close()

    def _connect(self) -> None:
        broker = self._broker
        try:
            if broker.protocol == 5:
                self._client.connect(broker.host, broker.port, broker.keepalive_s, clean_start=True)
            else:
                self._client.connect(broker.host, broker.port, broker.keepalive_s)
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake, timeout
            log.warning(
                "publisher %s: cannot connect to %s:%d: %s",
                self._gateway_id,
                broker.host,
                broker.port,
                exc,
            )
            self._metrics.mqtt_connect_failed()
            self._schedule_retry()

    def _reset_connection(self) -> None:
        """Close the connection (it comes back after a back-off, scheduled by _on_disconnect);
        rows stay in the spool."""
        if self._client.socket() is None:
            self._schedule_retry()
        else:
            self._client.disconnect()

    def _schedule_retry(self) -> None:
        self._retry_at = time.monotonic() + self._backoff(self._attempts)
        self._attempts += 1

    def _backoff(self, attempts: int) -> float:
        """Doubling steps, capped; the delay is drawn from the upper half of the step."""
        step = min(self._backoff_max_s, self._backoff_initial_s * 2.0**attempts)
        return step / 2 + self._rng.uniform(0.0, step / 2)

    def _wait(self, seconds: float) -> None:
        readable, _, _ = select.select([self._wake_r], [], [], seconds)
        if readable:
            self._drain_wake()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _set_connected(self, up: bool) -> None:
        if up != self._connected:
            self._connected = up
            self._metrics.mqtt_connected(up)

    def _publish_status(self, state: str, *, reason: str | None = None) -> int:
        document: dict[str, Any] = {
            "schema": STATUS_SCHEMA,
            "gateway_id": self._gateway_id,
            "state": state,
            "at": utc_text(datetime.fromtimestamp(self._clock(), UTC)),
        }
        if reason is not None:
            document["reason"] = reason
        try:
            extra = self._status()
        except Exception:  # a status callable's bug must not stop publishing readings
            log.exception("publisher %s: the status callable failed", self._gateway_id)
            self._metrics.failed("status_callable")
        else:
            document.update({k: v for k, v in extra.items() if k not in document})
        payload = json.dumps(document, separators=(",", ":"), default=str)
        return self._client.publish(self._status_topic, payload, qos=1, retain=True).mid

    # -- paho callbacks (run inside loop_read / loop_write / loop_misc, in this thread) ----

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            # paho closes the socket next, and _on_disconnect schedules the retry.
            log.warning(
                "publisher %s: the broker refused the connection: %s",
                self._gateway_id,
                reason_code,
            )
            return
        client.drop_out_messages()
        self._in_flight.clear()
        self._cursor = 0
        receive_maximum = getattr(properties, "ReceiveMaximum", _RECEIVE_MAXIMUM_DEFAULT)
        self._window = max(1, min(self._window_limit, receive_maximum - _STATUS_SLOTS))
        self._refused_seq = None
        self._blocked_seq = None
        self._refusals = 0
        self._hold_until = 0.0
        self._status_due = 0.0
        self._offline_mid = None
        self._offline_acked = False
        self._set_connected(True)
        log.info(
            "publisher %s: connected to %s:%d (window %d)",
            self._gateway_id,
            self._broker.host,
            self._broker.port,
            self._window,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._set_connected(False)
        if self._stop_requested.is_set():
            return
        log.warning("publisher %s: disconnected: %s", self._gateway_id, reason_code)
        self._metrics.mqtt_connect_failed()
        self._schedule_retry()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if mid == self._offline_mid:
            self._offline_acked = True
        message = self._in_flight.pop(mid, None)
        if message is None:
            return
        if reason_code.is_failure:
            log.error(
                "publisher %s: the broker refused seq %d on %s: %s; it stays in the spool",
                self._gateway_id,
                message.seq,
                message.topic,
                reason_code,
            )
            self._metrics.failed("puback_refused")
            if self._refused_seq is None or message.seq < self._refused_seq:
                self._refused_seq = message.seq
            return
        if message.seq == self._blocked_seq:
            self._blocked_seq = None
            self._refusals = 0
        self._acked.append(message)

    def _make_client(self) -> mqtt.Client:
        broker = self._broker
        v5 = broker.protocol == 5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=broker.client_id or f"metergate-{self._gateway_id}",
            clean_session=None if v5 else True,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        # The window bounds what paho holds; paho itself must neither queue nor refuse.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            try:
                client.tls_set(
                    ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot load the broker's TLS files: {exc}", location="broker"
                ) from None
        will = {
            "schema": STATUS_SCHEMA,
            "gateway_id": self._gateway_id,
            "state": "offline",
            "reason": "connection lost",
        }
        client.will_set(
            self._status_topic, json.dumps(will, separators=(",", ":")), qos=1, retain=True
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        # With these set, paho no longer writes inside publish() but leaves it to _step, which
        # reads first; the loop polls want_write() itself, so they have nothing to do.
        client.on_socket_register_write = _nothing
        client.on_socket_unregister_write = _nothing
        return client


def _nothing(*_: object) -> None:
    pass


def _tls_pending(sock: object) -> bool:
    """A TLS socket can hold decrypted bytes that select() cannot see."""
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())
