"""Reading a meter's register map over Modbus TCP or RTU, through pymodbus's sync clients.

One adapter for both transports: `ModbusReader(url, unit_id, register_map)` reads the map's
blocks (ReadBlock, function 03 or 04) and returns the decoded records and flags. It raises only
metergate's errors (DESIGN.md §8):

- an exception response: DeviceError (ModbusExceptionError, with the codes), except the two
  gateway codes of Modbus Application Protocol V1.1b3 §7, which say that the device itself was
  not reached: 0A "gateway path unavailable" is a TransportError, 0B "gateway target device
  failed to respond" a DeviceTimeout;
- no answer within the timeout: DeviceTimeout;
- an answer that is garbled, cut short or does not fit the request: TransportError;
- a port or connection that cannot be opened or fails: TransportError. The reader then opens it
  again on the next attempt, waiting longer after each failure (exponential backoff) up to a
  budget; the clock and the sleep are arguments, so tests do not wait.

URLs: `tcp://host[:port]` (Modbus TCP, port 502 by default) and, for RTU, a device path
(`/dev/ttyUSB0`) or `rtu://PATH?baudrate=19200&parity=E&stopbits=1`: 9600 8N1 unless the URL or
the arguments say otherwise (the URL wins). RTU characters always have 8 data bits (MODBUS over
Serial Line V1.02 §2.5.1), whose default would be 19200 8E1; 9600 8N1 is what many meters ship.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from decoders.modbus_map import ReadBlock, RegisterMap, decode_registers, status_flags
from decoders.telegram import DataRecord
from drivers.serial_port import Backoff, line_parity
from metergate.errors import (
    ConfigError,
    DeviceError,
    DeviceTimeout,
    TransportError,
)

DEFAULT_TCP_PORT = 502  # Modbus Messaging on TCP/IP Implementation Guide V1.0b §4.1
MAX_UNIT = 247  # MODBUS over Serial Line V1.02 §2.2: 0 is broadcast, 248-255 reserved
PARITIES = frozenset({"N", "E", "O"})
EXCEPTION_NAMES = {  # Modbus Application Protocol V1.1b3 §7
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_NO_RESPONSE = 0x0B


@dataclass(frozen=True, slots=True)
class ModbusEndpoint:
    """Where a reader connects: a TCP host and port, or a serial port and its settings."""

    transport: Literal["tcp", "rtu"]
    address: str  # host name or address (tcp), device path (rtu)
    port: int = DEFAULT_TCP_PORT
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1


def parse_modbus_url(
    url: str, *, baudrate: int = 9600, parity: str = "N", stopbits: int = 1
) -> ModbusEndpoint:
    """The endpoint a URL names; ConfigError if it names none."""

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"bad Modbus URL {url!r}: {reason}")

    serial = ModbusEndpoint("rtu", url, 0, baudrate, parity.upper(), stopbits)
    if "://" not in url:
        if not url.strip():
            raise bad("empty")
        return _serial(serial, {}, bad)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise bad(str(error)) from None
    if parts.scheme == "tcp":
        if not parts.hostname:
            raise bad("no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise bad("tcp://host[:port] takes nothing else")
        if port == 0:
            raise bad("port 0")
        return ModbusEndpoint("tcp", parts.hostname, port or DEFAULT_TCP_PORT)
    if parts.scheme == "rtu":
        device = parts.netloc + parts.path
        if not device or parts.fragment:
            raise bad("rtu://DEVICE[?baudrate=&parity=&stopbits=]")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return _serial(replace(serial, address=device), query, bad)
    raise bad("the scheme is tcp:// or rtu://, or give a device path")


def _serial(
    defaults: ModbusEndpoint, query: dict[str, str], bad: Callable[[str], ConfigError]
) -> ModbusEndpoint:
    """The serial settings of the URL's query over the defaults, checked."""
    unknown = set(query) - {"baudrate", "parity", "stopbits"}
    if unknown:
        raise bad(f"unknown settings {', '.join(sorted(unknown))}")
    try:
        settings = replace(
            defaults,
            baudrate=int(query.get("baudrate", defaults.baudrate)),
            parity=query.get("parity", defaults.parity).upper(),
            stopbits=int(query.get("stopbits", defaults.stopbits)),
        )
    except ValueError as error:
        raise bad(str(error)) from None
    if settings.baudrate <= 0 or settings.stopbits not in (1, 2) or settings.parity not in PARITIES:
        raise bad(f"serial settings {settings.baudrate} 8{settings.parity}{settings.stopbits}")
    return settings


def check_unit_id(unit_id: int) -> int:
    if isinstance(unit_id, bool) or not isinstance(unit_id, int) or not 1 <= unit_id <= MAX_UNIT:
        raise ConfigError(f"unit id {unit_id!r} is not in 1..{MAX_UNIT}")
    return unit_id


def _closed(client: ModbusTcpClient | ModbusSerialClient) -> bool:
    """Close; False if that failed (a port that is already gone may fail to close)."""
    try:
        client.close()  # type: ignore[no-untyped-call]  # pymodbus leaves close() unannotated
    except Exception:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ModbusReading:
    """One read of a unit: the map's records in its order, its flags, the registers as read."""

    unit_id: int
    records: tuple[DataRecord, ...]
    flags: tuple[str, ...]
    registers: tuple[tuple[tuple[str, int], int], ...]


class ModbusExceptionError(DeviceError):
    """The device answered a request with an exception response."""

    def __init__(self, message: str, *, function_code: int, exception_code: int) -> None:
        super().__init__(message)
        self.function_code = function_code
        self.exception_code = exception_code


class ModbusReader:
    """Reads one register map from units on one port; not thread-safe (one bus, one master)."""

    def __init__(
        self,
        url: str,
        unit_id: int,
        register_map: RegisterMap,
        *,
        timeout_s: float = 1.0,
        retries: int = 1,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        backoff: Backoff | None = None,
        connect_budget_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.endpoint = parse_modbus_url(url, baudrate=baudrate, parity=parity, stopbits=stopbits)
        self.unit_id = check_unit_id(unit_id)
        self.register_map = register_map
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff = backoff or Backoff()
        self.connect_budget_s = connect_budget_s
        self._sleep = sleep
        self._clock = clock
        self._client: ModbusTcpClient | ModbusSerialClient | None = None
        self._lost = False  # a connection failed; the next successful one is a reconnect
        self._heard = False  # bytes arrived during the current exchange
        self.reads = 0
        self.reconnects = 0

    # --- the connection ------------------------------------------------------------------

    def _new_client(self) -> ModbusTcpClient | ModbusSerialClient:
        end = self.endpoint
        # retries=0: this class retries, and tells a silent device from a garbled answer.
        if end.transport == "tcp":
            return ModbusTcpClient(
                end.address,
                port=end.port,
                timeout=self.timeout_s,
                retries=0,
                trace_packet=self._trace_packet,
            )
        return ModbusSerialClient(
            end.address,
            baudrate=end.baudrate,
            bytesize=8,
            parity=line_parity(end.address, end.parity),
            stopbits=end.stopbits,
            timeout=self.timeout_s,
            retries=0,
            trace_packet=self._trace_packet,
        )

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending and data:
            self._heard = True
        return data

    def _connected(self) -> ModbusTcpClient | ModbusSerialClient:
        """The open client; opening it waits by the backoff between attempts, up to the
        budget, then raises TransportError."""
        client = self._client
        if client is not None and client.connected:
            return client
        if client is None:
            client = self._client = self._new_client()
        delays = self.backoff.delays()
        give_up = self._clock() + self.connect_budget_s
        attempts = 0
        while True:
            attempts += 1
            try:
                opened = bool(client.connect())  # pymodbus logs the reason, returns False
            except Exception:  # whatever pyserial or the socket layer raise underneath
                opened = False
            if opened:
                if self._lost:
                    self.reconnects += 1
                    self._lost = False
                return client
            self._lost = True
            delay = next(delays)
            if self._clock() + delay > give_up:
                raise TransportError(f"{self.url}: cannot connect ({attempts} attempts)")
            self._sleep(delay)

    def _drop(self) -> None:
        """Close after a failure: the next exchange opens the port again."""
        self._lost = True
        if self._client is not None and not _closed(self._client):
            self._client = None  # a client that cannot close is not used again

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _closed(client)

    def __enter__(self) -> ModbusReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------

    def read(self, unit_id: int | None = None) -> ModbusReading:
        """Every block of the map from one unit (default: the reader's), decoded."""
        unit = self.unit_id if unit_id is None else check_unit_id(unit_id)
        registers: dict[tuple[str, int], int] = {}
        for block in self.register_map.blocks:
            for offset, word in enumerate(self._read_block(unit, block)):
                registers[(block.table, block.start + offset)] = word
        # The blocks cover every field and every word was checked: decoding cannot fail here.
        records = decode_registers(self.register_map, registers)
        self.reads += 1
        return ModbusReading(
            unit,
            records,
            status_flags(self.register_map, records),
            tuple(sorted(registers.items())),
        )

    def _read_block(self, unit_id: int, block: ReadBlock) -> list[int]:
        """One request, tried `retries` more times on a timeout or a transport failure."""
        error: TransportError | None = None
        for _ in range(self.retries + 1):
            client = self._connected()
            try:
                return self._exchange(client, unit_id, block)
            except TransportError as failure:  # DeviceTimeout too
                error = failure
        assert error is not None
        raise error

    def _exchange(
        self, client: ModbusTcpClient | ModbusSerialClient, unit_id: int, block: ReadBlock
    ) -> list[int]:
        where = f"{self.url}: unit {unit_id}, {block.table} {block.start}+{block.count}"
        self._heard = False
        try:
            if block.function_code == 3:
                response = client.read_holding_registers(
                    block.start, count=block.count, device_id=unit_id
                )
            else:
                response = client.read_input_registers(
                    block.start, count=block.count, device_id=unit_id
                )
        except ConnectionException as error:
            self._drop()
            raise TransportError(f"{where}: connection failed") from error
        except ModbusIOException as error:
            if not self._heard:
                raise DeviceTimeout(f"{where}: no answer in {self.timeout_s} s") from error
            self._garbled()
            raise TransportError(f"{where}: garbled or incomplete answer") from error
        except Exception as error:  # pyserial, socket and pymodbus internals: the line failed
            self._drop()
            raise TransportError(f"{where}: {type(error).__name__}: {error}") from error
        return self._registers(response, where, block)

    def _garbled(self) -> None:
        # A TCP stream that lost its framing stays out of step; a new connection starts clean.
        # An RTU master flushes what is waiting before each request (pymodbus does).
        if self.endpoint.transport == "tcp":
            self._drop()

    def _registers(self, response: ModbusPDU, where: str, block: ReadBlock) -> list[int]:
        if response.isError():
            code = response.exception_code
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            message = f"{where}: exception {code:02X} ({name})"
            if code == GATEWAY_NO_RESPONSE:
                raise DeviceTimeout(message)
            if code == GATEWAY_PATH_UNAVAILABLE:
                raise TransportError(message)
            raise ModbusExceptionError(
                message, function_code=block.function_code, exception_code=code
            )
        words = list(response.registers)
        if len(words) != block.count or not all(0 <= word <= 0xFFFF for word in words):
            self._garbled()
            raise TransportError(f"{where}: the answer has {len(words)} registers")
        return words
