"""Simulated Modbus flow meters on real ports: Modbus TCP on 127.0.0.1 and RTU on a pty.

Each simulator runs one asyncio loop in one thread, started and stopped with it (a context
manager); stop() joins the thread. The meters and their values are a FlowMeterBank
(firmware_sim.modbus_meters).

- TCP: pymodbus's ModbusTcpServer with one SimDevice per unit, whose action fills the
  registers from the bank on every read. A unit that is not there gets exception 0B, "gateway
  target device failed to respond" (Modbus Application Protocol V1.1b3 §7), as from a Modbus
  TCP gateway in front of a serial bus.
- RTU: a pseudo-terminal. pymodbus's serial server opens a port by its path, and the master side
  of a pty has none, so the simulator reads the master itself through drivers.modbus_rtu_framing.
  The pty is reached through a symlink, as udev names a USB adapter: unplug() takes the device
  away (the reader's port fails, the link vanishes), replug() brings a new pty behind the same
  link. A unit that is not on the bus stays silent, as on a real line.

`faults` mangles the next answers on either transport, for tests of the reader's errors.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_rtu_framing import (
    BROADCAST,
    RtuFrame,
    RtuFramer,
    exception_response,
    read_response,
)
from firmware_sim.modbus_meters import FlowMeterBank
from firmware_sim.pty_link import PtyLink

FAULTS = ("silent", "garbage", "truncate", "bad_crc", "noise")


class Faults:
    """What happens to the next answers, in order: each injected fault spoils one answer.

    silent: no answer; garbage: random bytes instead; truncate: the first half only; bad_crc:
    the last byte flipped (on TCP that is a wrong value, so RTU only); noise: random bytes, then
    the answer.
    """

    def __init__(self, seed: int = 0) -> None:
        self._queue: deque[str] = deque()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def inject(self, kind: str, count: int = 1) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(FAULTS)}")
        with self._lock:
            self._queue.extend([kind] * count)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def apply(self, answer: bytes) -> bytes:
        with self._lock:
            kind = self._queue.popleft() if self._queue else None
            noise = self._rng.randbytes(max(4, len(answer)))
        if kind == "silent":
            return b""
        if kind == "garbage":
            return noise
        if kind == "truncate":
            return answer[: len(answer) // 2]
        if kind == "bad_crc":
            return answer[:-1] + bytes((answer[-1] ^ 0xFF,))
        if kind == "noise":
            return noise[:7] + answer
        return answer


class _LoopServer:
    """One asyncio loop in one thread; subclasses open and close their endpoint in it."""

    def __init__(self, bank: FlowMeterBank, faults: Faults | None) -> None:
        self.bank = bank
        self.faults = faults or Faults()
        self.errors: list[BaseException] = []  # what went wrong inside the loop, for tests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("a simulator starts once")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        try:
            self._call(self._open)
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._loop_error)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:  # pymodbus's handler tasks of connections that were cut
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        finally:
            loop.close()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A callback failed: a bug of the simulator; it keeps serving, the tests see it."""
        self.errors.append(context.get("exception") or RuntimeError(context.get("message")))

    def _call(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` in the loop and wait for it."""
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("the simulator is not running")

        async def run() -> None:
            await action()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        try:
            self._call(self._close)
        except Exception as error:  # the loop must stop all the same; the tests see the error
            self.errors.append(error)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def unplug(self) -> None:
        """Take the device away until replug()."""
        self._call(self._close)

    def replug(self) -> None:
        self._call(self._open)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ModbusTcpSimulator(_LoopServer):
    """The bank behind a Modbus TCP port; port 0 picks a free one (kept over unplug/replug)."""

    def __init__(
        self,
        bank: FlowMeterBank,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(bank, faults)
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def _open(self) -> None:
        if self._server is not None:
            return
        devices = [self._device(unit_id) for unit_id in sorted(self.bank.units)]
        devices.append(self._device(0))  # pymodbus's catch-all id: the units not there
        server = ModbusTcpServer(
            devices, address=(self.host, self.port), trace_packet=self._trace_packet
        )
        await server.serve_forever(background=True)
        listener = cast(asyncio.Server, server.transport)
        self.port = listener.sockets[0].getsockname()[1]
        self._server = server

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # unannotated in pymodbus

    def _device(self, unit_id: int) -> SimDevice:
        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        tables = []
        for table in ("holding", "input"):
            served = self.bank.served[table] if unit_id else frozenset(range(0x10000))
            tables.append(_runs(served))
        action = functools.partial(self._action, unit_id)
        return SimDevice(unit_id, simdata=(bits, list(bits), tables[0], tables[1]), action=action)

    async def _action(  # noqa: PLR0917 - pymodbus passes six positional arguments
        self,
        unit_id: int,
        function: int,
        block_start: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before it answers from `registers` (the whole table)."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # the meter's values are measured, not written
        answer = self.bank.read(unit_id, function, address, count)
        if answer is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if isinstance(answer, int):
            return ExcCodes(answer)
        offset = address - block_start
        registers[offset : offset + count] = answer
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        return self.faults.apply(data) if sending and data else data


def _runs(addresses: frozenset[int]) -> list[SimData]:
    """The served addresses as runs of registers; pymodbus marks the gaps invalid (exception
    02). A table without any is one invalid register."""
    runs: list[SimData] = []
    start = previous = None
    for address in [*sorted(addresses), None]:
        if start is not None and previous is not None and address != previous + 1:
            runs.append(SimData(start, count=previous - start + 1, datatype=DataType.REGISTERS))
            start = None
        if start is None:
            start = address
        previous = address
    return runs or [SimData(0, datatype=DataType.INVALID)]


class ModbusRtuSimulator(_LoopServer):
    """The bank behind a pseudo-terminal; `link` is the stable name to open (default: a
    temporary directory's ttyMODBUS0). `silence_s` is how long a quiet line ends a frame."""

    def __init__(
        self,
        bank: FlowMeterBank,
        *,
        link: str | Path | None = None,
        faults: Faults | None = None,
        silence_s: float = 0.02,
    ) -> None:
        super().__init__(bank, faults)
        self.pty = PtyLink(link, prefix="metergate-modbus-", name="ttyMODBUS0")
        self.link = self.pty.link
        self.silence_s = silence_s
        self.answers = 0
        self._framer = RtuFramer("request")
        self._timer: asyncio.TimerHandle | None = None

    @property
    def url(self) -> str:
        return str(self.link)

    @property
    def device(self) -> str:
        """The pty's own path while plugged in (the link leads there)."""
        return self.pty.device

    async def _open(self) -> None:
        if self.pty.master is not None:
            return
        master = self.pty.plug()
        self._framer = RtuFramer("request")
        asyncio.get_running_loop().add_reader(master, self._readable)

    async def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.pty.master is None:
            return
        asyncio.get_running_loop().remove_reader(self.pty.master)
        self.pty.unplug()

    def stop(self) -> None:
        super().stop()
        self.pty.remove()

    def write_noise(self, data: bytes) -> None:
        """Put bytes on the line from the meters' side, between answers."""

        async def write() -> None:
            self._send(data)

        self._call(write)

    def _readable(self) -> None:
        data = self.pty.read()
        if not data:
            return
        self._answer(self._framer.feed(data))
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.silence_s, self._silent)

    def _silent(self) -> None:
        self._timer = None
        self._answer(self._framer.silence())

    def _answer(self, frames: list[RtuFrame]) -> None:
        for frame in frames:
            if frame.unit_id == BROADCAST:
                continue  # MODBUS over Serial Line V1.02 §2.1: a broadcast gets no reply
            start = count = 0
            if frame.function in (3, 4):
                start = int.from_bytes(frame.data[:2], "big")
                count = int.from_bytes(frame.data[2:4], "big")
            result = self.bank.read(frame.unit_id, frame.function, start, count)
            if result is None:
                continue
            if isinstance(result, int):
                wire = exception_response(frame.unit_id, frame.function, result)
            else:
                wire = read_response(frame.unit_id, frame.function, result)
            self.answers += 1
            self._send(self.faults.apply(wire))

    def _send(self, data: bytes) -> None:
        # A full buffer means nobody reads: the line keeps no backlog, the rest is lost.
        self.pty.write(data)
