"""The simulated bus on real ports: a pseudo-terminal and a TCP socket on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial  # type: ignore[import-untyped]

from decoders.mbus_link import LongFrame, classify_reply, req_ud2, snd_nke
from firmware_sim.fleet import Fleet
from firmware_sim.mbus_slave import SlaveBus
from firmware_sim.serve_mbus import MbusServer, PtyMbusServer, TcpMbusServer

FLEET = Fleet.generate(4, seed=9)


def read_until(read: object, want: int, timeout: float = 2.0) -> bytes:
    """Collect at least `want` bytes from a `read(n)` callable, or what came by the timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < want and time.monotonic() < deadline:
        data += read(want - len(data))  # type: ignore[operator]
    return data


def read_answer(read: object) -> bytes:
    """One E5 or one long frame, read by its length field."""
    first = read_until(read, 1)
    if first != b"\x68":
        return first
    head = first + read_until(read, 3)
    return head + read_until(read, head[1] + 2)


@pytest.fixture
def pty_server(tmp_path: Path) -> Iterator[PtyMbusServer]:
    server = PtyMbusServer(SlaveBus.from_fleet(FLEET), link=tmp_path / "ttyMBUS0")
    with server:
        yield server
    assert not server.errors
    assert not server._thread.is_alive()


@pytest.fixture
def tcp_server() -> Iterator[TcpMbusServer]:
    server = TcpMbusServer(SlaveBus.from_fleet(FLEET))
    with server:
        yield server
    assert not server.errors


def open_pty(server: MbusServer) -> serial.Serial:
    # A pty takes no parity (see drivers.serial_port): open it 8N1.
    return serial.Serial(server.url, 2400, timeout=0.05)


def test_a_pty_carries_requests_and_answers(pty_server: PtyMbusServer) -> None:
    assert Path(pty_server.url).is_symlink()
    assert os.path.realpath(pty_server.url) == pty_server.device
    with open_pty(pty_server) as port:
        port.write(snd_nke(2))
        assert read_until(port.read, 1) == b"\xe5"
        port.write(req_ud2(2, True))
        assert isinstance(classify_reply(read_answer(port.read)), LongFrame)
    # The port can be opened again: the simulator keeps its side of the pty open.
    with open_pty(pty_server) as port:
        port.write(snd_nke(3))
        assert read_until(port.read, 1) == b"\xe5"
    assert pty_server.requests == 3


def test_a_tcp_port_carries_requests_and_answers(tcp_server: TcpMbusServer) -> None:
    with socket.create_connection((tcp_server.host, tcp_server.port), timeout=2) as client:
        client.sendall(snd_nke(1) + req_ud2(1, True))
        assert read_answer(client.recv) == b"\xe5"
        assert isinstance(classify_reply(read_answer(client.recv)), LongFrame)
    assert tcp_server.url == f"socket://127.0.0.1:{tcp_server.port}"


def test_a_new_tcp_connection_replaces_the_old_one(tcp_server: TcpMbusServer) -> None:
    first = socket.create_connection((tcp_server.host, tcp_server.port), timeout=2)
    second = socket.create_connection((tcp_server.host, tcp_server.port), timeout=2)
    with first, second:
        second.sendall(snd_nke(1))
        assert read_until(second.recv, 1) == b"\xe5"
        assert first.recv(10) == b""  # closed by the server


def test_an_echoing_level_converter(tmp_path: Path) -> None:
    server = PtyMbusServer(SlaveBus.from_fleet(FLEET), link=tmp_path / "tty", echo=True)
    with server, open_pty(server) as port:
        port.write(snd_nke(1))
        assert read_until(port.read, 6) == snd_nke(1) + b"\xe5"


def test_unplugging_the_pty_fails_the_master_and_replugging_brings_it_back(
    pty_server: PtyMbusServer,
) -> None:
    port = open_pty(pty_server)
    port.write(snd_nke(1))
    assert read_until(port.read, 1) == b"\xe5"
    old_device = pty_server.device
    pty_server.unplug()
    assert not os.path.lexists(pty_server.url)
    with pytest.raises((serial.SerialException, OSError)):
        port.write(snd_nke(1))
        port.read(1)
    port.close()
    pty_server.replug()
    assert os.path.realpath(pty_server.url) == pty_server.device
    with open_pty(pty_server) as again:
        again.write(snd_nke(1))
        assert read_until(again.read, 1) == b"\xe5"
    assert old_device  # the old pty is gone; the link now names the new one


def test_unplugging_tcp_drops_the_connection_and_refuses_new_ones(
    tcp_server: TcpMbusServer,
) -> None:
    client = socket.create_connection((tcp_server.host, tcp_server.port), timeout=2)
    tcp_server.unplug()
    assert client.recv(10) == b""
    client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((tcp_server.host, tcp_server.port), timeout=2)
    tcp_server.replug()
    with socket.create_connection((tcp_server.host, tcp_server.port), timeout=2) as client:
        client.sendall(snd_nke(4))
        assert read_until(client.recv, 1) == b"\xe5"
