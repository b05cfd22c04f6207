"""What paho-mqtt itself costs the ingest per received message: the floor under bench/ingest.py.

A private Mosquitto (deploy/mosquitto.conf's queue settings) holds QoS 1 messages queued for a
persistent session; a paho client then connects and takes them all, with a handler that does
nothing or that validates each payload as the worker does (ingest.payload.parse_message), over
MQTT 5 and MQTT 3.1.1. The figure is the CPU time of paho's network thread per message
(reading, PUBLISH decoding, the PUBACK), beside the rate. One received message at a time is
how MQTT delivers; a worker can store no faster than this thread takes messages in.

    .venv/bin/python bench/mqtt_receive.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.payload import parse_message
from tests.ingest.messages import encode, reading
from tests.ingest.services import PrivateBroker, Publisher

Handler = Callable[[mqtt.MQTTMessage], object]


def client(protocol: MQTTProtocolVersion, client_id: str) -> mqtt.Client:
    if protocol == mqtt.MQTTv5:
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    return mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=False
    )


def connect(c: mqtt.Client, port: int, protocol: MQTTProtocolVersion, *, first: bool) -> None:
    if protocol == mqtt.MQTTv5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        c.connect("127.0.0.1", port, clean_start=first, properties=properties)
    else:
        c.connect("127.0.0.1", port)


def receive(
    broker: PrivateBroker,
    messages: list[tuple[str, bytes]],
    protocol: MQTTProtocolVersion,
    handler: Handler,
) -> tuple[float, float]:
    """(CPU microseconds of the network thread per message, messages per second)."""
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    # Subscribe once, leave: the broker keeps the session and queues what comes.
    first = client(protocol, client_id)
    subscribed = threading.Event()
    first.on_connect = lambda c, *_: c.subscribe("metergate/+/+/reading", qos=1)
    first.on_subscribe = lambda *_: subscribed.set()
    connect(first, broker.port, protocol, first=True)
    first.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("the broker did not confirm the subscription")
    first.disconnect()
    first.loop_stop()
    publisher = Publisher(broker.url)
    try:
        publisher.publish(messages, timeout_s=600)
    finally:
        publisher.close()

    taker = client(protocol, client_id)
    state: dict[str, float] = {"count": 0}
    done = threading.Event()

    def on_connect(*_: object) -> None:
        state["cpu"] = time.thread_time()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        handler(message)
        state["count"] += 1
        if state["count"] == len(messages):
            state["cpu"] = time.thread_time() - state["cpu"]
            done.set()

    taker.on_connect = on_connect
    taker.on_message = on_message
    started = time.perf_counter()
    connect(taker, broker.port, protocol, first=False)
    taker.loop_start()
    try:
        if not done.wait(600):
            raise SystemExit(f"only {state['count']:.0f} of {len(messages)} messages arrived")
        elapsed = time.perf_counter() - started
    finally:
        taker.disconnect()
        taker.loop_stop()
    return state["cpu"] / len(messages) * 1e6, len(messages) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    messages = [encode(reading(seq, count=4)) for seq in range(args.messages)]
    handlers: dict[str, Handler] = {
        "nothing": lambda _: None,
        "parse_message": lambda m: parse_message(m.topic, bytes(m.payload)),
    }
    print(f"{args.messages:,} queued QoS 1 messages of {len(messages[0][1])} bytes each")
    with tempfile.TemporaryDirectory(prefix="metergate-bench-") as scratch:
        broker = PrivateBroker(Path(scratch))
        try:
            for name, protocol in (("MQTT 5", mqtt.MQTTv5), ("MQTT 3.1.1", mqtt.MQTTv311)):
                for label, handler in handlers.items():
                    cpu, rate = receive(broker, messages, protocol, handler)
                    print(
                        f"  {name:10s} handler {label:13s}: {cpu:5.1f} us CPU a message on"
                        f" paho's thread, {rate:8,.0f} messages/s"
                    )
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
