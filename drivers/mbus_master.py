"""The wired M-Bus master: read meters by primary or secondary address, find every meter on a bus.

It speaks EN 13757-2 over a SerialPort (2400 Bd 8E1 by default): link reset, REQ_UD2 with the
FCB toggled after each good answer and repeated after a bad one, multi-telegram readouts that
go on while a telegram ends in DIF 1F, a primary scan, and the secondary search that narrows
wildcards digit by digit until each meter answers alone (PROTOCOL_NOTES §8; its strategy is in
mbus_search). Frames come from decoders.mbus_link; this module only moves them and judges what
comes back. Timeouts follow the standard (§8.5, mbus_timing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from decoders.decode import Decoder
from decoders.mbus_link import (
    ADDRESS_BROADCAST_REPLY,
    ADDRESS_NETWORK_LAYER,
    C_RSP_UD,
    Ack,
    Collision,
    ControlFrame,
    LongFrame,
    MbusFramer,
    NoReply,
    Reply,
    SecondaryAddress,
    ShortFrame,
    classify_reply,
    encode_frame,
    parse_frame,
    req_ud2,
    select_secondary,
    snd_nke,
)
from decoders.telegram import Address
from drivers.mbus_search import (
    ID_DIGITS,
    SecondaryScan,
    SecondarySearch,
    secondary_of,
    secondary_text,
)
from drivers.mbus_timing import BusStats, MbusTiming
from drivers.serial_port import SerialPort
from metergate.errors import (
    DecodeError,
    DeviceError,
    DeviceTimeout,
    MissingKeyError,
    TransportError,
)

MAX_FRAME = 261  # bytes of the longest long frame (PROTOCOL_NOTES §8.1)

KeyLookup = Callable[[Address], bytes | None]


class GarbledReplyError(TransportError):
    """Bytes came back that are not one valid frame: noise, a truncated frame, or several
    slaves answering at once. `data` holds what was received."""

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


@dataclass(frozen=True, slots=True)
class Readout:
    """All telegrams of one meter's answer, as received (RSP_UD long frames)."""

    primary_address: int
    secondary: SecondaryAddress | None
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PrimaryScan:
    found: tuple[int, ...]
    collisions: tuple[int, ...]  # addresses more than one slave answered to


def _is_frame(reply: Reply) -> bool:
    return isinstance(reply, (Ack, ShortFrame, ControlFrame, LongFrame))


def _is_rsp_ud(reply: Reply) -> bool:
    # C = 08, with ACD and DFC allowed (PROTOCOL_NOTES §8.2).
    return isinstance(reply, LongFrame) and reply.c & 0xCF == C_RSP_UD


class MbusMaster:
    """One bus. Not thread-safe: one conversation at a time, as on the wire."""

    def __init__(
        self,
        port: SerialPort,
        *,
        timing: MbusTiming | None = None,
        retries: int = 2,
        reopen_budget_s: float = 30.0,
        keys: KeyLookup | None = None,
        max_telegrams: int = 16,
    ) -> None:
        self.port = port
        self.timing = timing or MbusTiming(baud=port.baudrate)
        self.retries = retries
        self.reopen_budget_s = reopen_budget_s
        self.keys = keys
        self.max_telegrams = max_telegrams
        self.stats = BusStats()
        self._fcb: dict[int, bool] = {}
        self._decoder = Decoder()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        baud: int = 2400,
        timing: MbusTiming | None = None,
        retries: int = 2,
        reopen_budget_s: float = 30.0,
        keys: KeyLookup | None = None,
    ) -> MbusMaster:
        """A master on `url` (a device, `socket://host:port` or `rfc2217://host:port`)."""
        port = SerialPort(url, baudrate=baud)
        port.open()
        return cls(port, timing=timing, retries=retries, reopen_budget_s=reopen_budget_s, keys=keys)

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> MbusMaster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- one exchange -------------------------------------------------------------------

    def _transact(self, request: bytes, listen: bool) -> Reply:
        """Send `request`, collect the answer. With `listen`, keep listening a little after a
        complete frame: a second slave's answer shows up there as a collision."""
        port = self.port
        self._settle()
        port.write(request)
        timing = self.timing
        now = time.monotonic()
        deadline = now + timing.answer_timeout(len(request))
        hard_stop = deadline + (MAX_FRAME + len(request)) * timing.byte_s + timing.gap_s
        buffer = bytearray()
        echo = True
        while True:
            chunk = port.read(min(deadline, hard_stop))
            if not chunk:
                break
            buffer += chunk
            now = time.monotonic()
            if echo:
                # Some level converters echo the request (PROTOCOL_NOTES §8.5).
                if len(buffer) < len(request) and request.startswith(buffer):
                    continue
                echo = False
                if buffer.startswith(request):
                    del buffer[: len(request)]
                    self.stats.echoes += 1
                    deadline = now + timing.answer_timeout(0)
                    if not buffer:
                        continue
            framer = MbusFramer()
            framer.feed(bytes(buffer))
            if framer.pending:
                deadline = now + timing.gap_s
            elif listen or not _is_frame(classify_reply(bytes(buffer))):
                deadline = now + timing.quiet_s
            else:
                break
        reply = classify_reply(bytes(buffer))
        stats = self.stats
        stats.requests += 1
        stats.request_bytes += len(request)
        stats.reply_bytes += len(buffer)
        if isinstance(reply, NoReply):
            stats.silent += 1
        else:
            stats.answered += 1
        if isinstance(reply, Collision):
            stats.garbled += 1
        return reply

    def _settle(self) -> None:
        """Wait for a quiet line before sending. Bytes still arriving (the rest of an answer
        given up on) would run into the next answer and spoil it, and its repeat, in turn."""
        timing = self.timing
        stale = self.port.drain()
        give_up = time.monotonic() + MAX_FRAME * timing.byte_s + timing.gap_s
        while stale:
            self.stats.stale_bytes += len(stale)
            now = time.monotonic()
            if now >= give_up:
                return
            stale = self.port.read(min(now + timing.gap_s, give_up))

    def _recover(self) -> None:
        """The port failed or was closed: open it again, backing off, within the budget."""
        self.port.reopen(self.reopen_budget_s)
        self.stats.reopens += 1

    def exchange(self, request: bytes, *, listen: bool = False) -> Reply:
        """One request and what came back. A port that fails is reopened (backing off, for up
        to `reopen_budget_s`) and the request sent again, up to `retries` times: a replugged
        adapter costs one repeat, a vanished one a TransportError."""
        failures = 0
        while True:
            if not self.port.is_open:
                self._recover()
            try:
                return self._transact(request, listen)
            except TransportError:
                failures += 1
                if failures > self.retries:
                    raise

    def _request(self, request: bytes, accept: Callable[[Reply], bool], what: str) -> Reply:
        """Repeat `request` unchanged (same FCB) until an acceptable answer, then give up with
        DeviceTimeout (silence), GarbledReplyError (bad bytes) or DeviceError (a wrong answer)."""
        reply: Reply = NoReply()
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            reply = self.exchange(request)
            if accept(reply):
                return reply
        attempts = self.retries + 1
        if isinstance(reply, NoReply):
            raise DeviceTimeout(f"no answer to {what} after {attempts} attempts")
        if isinstance(reply, Collision):
            raise GarbledReplyError(
                f"no valid answer to {what} after {attempts} attempts: {reply.reason}",
                reply.data,
            )
        raise DeviceError(f"unexpected answer to {what}: {reply}")

    # --- reading ------------------------------------------------------------------------

    def link_reset(self, address: int) -> None:
        """SND_NKE: the slave's FCB and readout start over; the next REQ_UD2 has FCB = 1."""
        self._request(snd_nke(address), lambda r: isinstance(r, Ack), f"SND_NKE to {address}")
        self._fcb[address] = True

    def select(self, address: SecondaryAddress) -> None:
        """Select the one meter matching `address`; several matching is a GarbledReplyError."""
        text = secondary_text(address)
        try:
            self._request(select_secondary(address), lambda r: isinstance(r, Ack), f"select {text}")
        except GarbledReplyError as error:
            raise GarbledReplyError(
                f"select {text}: garbled answers, several meters match (or the line is noisy)",
                error.data,
            ) from error
        self._selected()

    def _selected(self) -> None:
        # The select went out as SND_UD with FCB = 1 (C = 73, PROTOCOL_NOTES §8.4) and was
        # acknowledged: the next message to the selected slave toggles it (§8.3).
        self._fcb[ADDRESS_NETWORK_LAYER] = False

    def read(self, address: int | SecondaryAddress) -> Readout:
        if isinstance(address, SecondaryAddress):
            self.select(address)
            return self._readout(ADDRESS_NETWORK_LAYER)
        if not 0 <= address <= 250 and address != ADDRESS_BROADCAST_REPLY:
            # 253 is reached through a select (a SecondaryAddress), 255 never answers.
            raise ValueError(f"primary addresses are 0-250 and 254, not {address}")
        self.link_reset(address)
        return self._readout(address)

    def _readout(self, address: int, first: LongFrame | None = None) -> Readout:
        frames: list[bytes] = []
        if first is not None:
            frames.append(encode_frame(first))
        while not frames or (self._more_follow(frames[-1]) and len(frames) < self.max_telegrams):
            fcb = self._fcb.get(address, True)
            reply = self._request(req_ud2(address, fcb), _is_rsp_ud, f"REQ_UD2 to {address}")
            assert isinstance(reply, LongFrame)
            self._fcb[address] = not fcb  # toggled after each good answer (PROTOCOL_NOTES §8.3)
            frames.append(encode_frame(reply))
        head = parse_frame(frames[0])
        primary = head.a if isinstance(head, LongFrame) else address
        return Readout(primary, secondary_of(frames[0]), tuple(frames))

    def _more_follow(self, frame: bytes) -> bool:
        """DIF 1F in the telegram: ask again with the FCB toggled. An encrypted telegram tells
        only with its key, so without one the readout stops there."""
        try:
            return self._decoder.decode(frame).more_records_follow
        except MissingKeyError as error:
            header = error.header
            address = getattr(header, "address", None)
            key = self.keys(address) if self.keys and isinstance(address, Address) else None
            if key is None:
                return False
            try:
                return self._decoder.decode(frame, key).more_records_follow
            except DecodeError:
                return False
        except DecodeError:
            return False

    def read_selected(
        self, *, complete: bool = False, what: str = "the selected meter"
    ) -> Readout | Collision | None:
        """The one meter that acknowledged a select: its first telegram, or all of them with
        `complete`.

        A Collision means several meters answered the select in step; None means the meter
        would not send data."""
        self._selected()
        try:
            reply = self._request(
                req_ud2(ADDRESS_NETWORK_LAYER, self._fcb[ADDRESS_NETWORK_LAYER]),
                lambda r: _is_rsp_ud(r) or isinstance(r, Collision),
                f"REQ_UD2 to {what}",
            )
        except (DeviceTimeout, DeviceError):
            return None
        if isinstance(reply, Collision):
            return reply
        assert isinstance(reply, LongFrame)
        self._fcb[ADDRESS_NETWORK_LAYER] = not self._fcb[ADDRESS_NETWORK_LAYER]
        if complete:
            return self._readout(ADDRESS_NETWORK_LAYER, reply)
        frame = encode_frame(reply)
        return Readout(reply.a, secondary_of(frame), (frame,))

    # --- finding meters ---------------------------------------------------------------------

    def scan_primary(self, addresses: Iterable[int] = range(0, 251)) -> PrimaryScan:
        """SND_NKE to each address: `E5` is a meter, garbage is several (a collision)."""
        found: list[int] = []
        collisions: list[int] = []
        for address in addresses:
            reply = self.exchange(snd_nke(address), listen=True)
            if isinstance(reply, Ack):
                found.append(address)
                self._fcb[address] = True
            elif not isinstance(reply, NoReply):
                collisions.append(address)
        return PrimaryScan(tuple(found), tuple(collisions))

    def scan_secondary(self, *, id_digits: str = ID_DIGITS, readout: bool = False) -> SecondaryScan:
        """Every meter on the bus, by secondary address: see mbus_search.SecondarySearch."""
        return SecondarySearch(self, id_digits=id_digits, readout=readout).run()
