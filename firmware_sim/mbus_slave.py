"""Wired M-Bus slaves on one bus, as a pure state machine: request bytes in, wire bytes out.

Each MbusSlave is a meter of the fleet behind EN 13757-2's link layer: it answers SND_NKE with
`E5`, REQ_UD2 with RSP_UD (CI 72, EN 13757-3 variable data), follows the FCB rules (a repeated
FCB gets the last telegram again, a toggled one the next), splits its data over several
telegrams ending in DIF 1F, and takes part in secondary selection (PROTOCOL_NOTES §8.2-8.4).
SlaveBus puts them on one pair of wires: every slave hears every request, and when several
answer, the master hears their answers superimposed (wire_and). The clock comes in with each
request; the I/O (pty, TCP, byte timing) is serve_mbus's business.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from decoders.mbus_link import (
    ACK,
    ADDRESS_BROADCAST,
    ADDRESS_BROADCAST_REPLY,
    ADDRESS_NETWORK_LAYER,
    C_FCB,
    C_FCV,
    CI_APPLICATION_RESET,
    CI_DATA_SEND,
    CI_SELECT_SECONDARY,
    CI_SET_BAUD_RATE,
    Ack,
    ControlFrame,
    Frame,
    LongFrame,
    MbusFramer,
    ShortFrame,
    frame_length,
    rsp_ud,
    secondary_matches,
)
from decoders.record_encoder import encode_records
from decoders.security import cbc_encrypt, mode5_iv
from decoders.telegram import RecordValue, TplHeader
from decoders.tpl import SECURITY_MODE_CBC_IV, encode_tpl, with_blocks
from decoders.wmbus_seal import plaintext_block
from firmware_sim.fleet import Fleet
from firmware_sim.meter import LOCAL_ZONE, Meter

CI_RESPONSE_LONG = 0x72  # EN 13757-3 §6: variable data with the long header
_FUNCTION = 0x4F  # C field without FCB and FCV: PRM and the function code
_SND_NKE = 0x40
_SND_UD = 0x43
_REQ_UD2 = 0x4B
_REQ_UD1 = 0x4A
DIF_MORE_FOLLOWS = b"\x1f"  # EN 13757-3 §6.3.4: more records follow in the next telegram
STATUS_TEMPORARY_ERROR = 0x10  # EN 13757-3 §6.2, status byte bit 4
# The simulator's error-flag word (VIF FD 17): its bits are the maker's to define.
ERROR_BITS = {"leak": 0x01, "burst": 0x02, "backflow": 0x04, "dry": 0x08}
RECORD_BUDGET = 128  # user-data bytes per telegram: a small slave's buffer

Fault = Literal["silent", "truncate", "garbage", "corrupt"]


def _storage_dif(data_field: int, storage: int) -> bytes:
    """DIF (and DIFE) for `storage` (EN 13757-3 §6.3: bit 6 of the DIF, then 4 bits a DIFE)."""
    dif = data_field | (storage & 1) << 6
    if storage < 2:
        return bytes((dif,))
    return bytes((dif | 0x80, (storage >> 1) & 0x0F))


def _records(meter: Meter, now: datetime, history_months: int) -> list[bytes]:
    """The meter's records, each coded on its own: current values, then the month ends."""
    identity = meter.identity_at(now)
    local = meter.clock_at(now).astimezone(LOCAL_ZONE).replace(tzinfo=None, microsecond=0)
    flags = meter.flags_at(now)
    current: list[tuple[bytes, RecordValue]] = []
    if identity.id.isdigit():
        current.append((bytes.fromhex("0C78"), Decimal(int(identity.id))))
    current += [
        (bytes.fromhex("046D"), local.replace(second=0)),
        (bytes.fromhex("0413"), meter.index_at(now)),
        (bytes.fromhex("04933C"), meter.backward_at(now)),
        (bytes.fromhex("023B"), meter.flow_at(now)),
        (bytes.fromhex("02FD17"), Decimal(sum(ERROR_BITS[f] for f in flags))),
    ]
    out = [encode_records([record]) for record in current]
    for storage, (day, index) in enumerate(meter.month_end_indexes(now, history_months), 1):
        out.append(
            encode_records([(_storage_dif(0x02, storage) + b"\x6c", day)])
            + encode_records([(_storage_dif(0x04, storage) + b"\x13", index)])
        )
    return out


def pack_telegrams(records: Sequence[bytes], budget: int = RECORD_BUDGET) -> list[bytes]:
    """Records into telegram payloads of at most `budget` bytes; all but the last end in 1F.

    The current values (everything before the first stored value) stay in the first telegram.
    """
    payloads: list[bytes] = []
    chunk = b""
    for record in records:
        if chunk and len(chunk) + len(record) + 1 > budget:
            payloads.append(chunk + DIF_MORE_FOLLOWS)
            chunk = b""
        chunk += record
    payloads.append(chunk)
    return payloads


class MbusSlave:
    """One meter's link layer. `faults` spoils its next answers, one entry per answer, for
    tests: "silent" (lost), "truncate", "garbage", "corrupt" (a flipped byte) or None (this
    one arrives intact); the slave's state moves on as if the answer had arrived, as a real
    slave's does."""

    def __init__(
        self,
        meter: Meter,
        *,
        primary_address: int | None = None,
        history_months: int = 12,
        record_budget: int = RECORD_BUDGET,
        encrypted: bool = False,
    ) -> None:
        self.meter = meter
        self.primary_address = meter.primary_address if primary_address is None else primary_address
        self.history_months = history_months
        self.record_budget = record_budget
        self.encrypted = encrypted
        self.selected = False
        self.faults: deque[Fault | None] = deque()
        self.telegrams_sent = 0
        self._access_no = meter.access_no
        self._payloads: list[bytes] = []  # the readout in progress, fixed when it started
        self._position = -1
        self._last_frame = b""
        self._last_fcb: bool | None = None

    def secondary(self, now: datetime) -> bytes:
        return self.meter.identity_at(now).secondary

    def reset_link(self, fcb: bool | None = None) -> None:
        """SND_NKE (or a select): FCB state and readout start over (PROTOCOL_NOTES §8.3).
        `fcb` is the FCB of the message that reset the link, when it carried one."""
        self._payloads = []
        self._position = -1
        self._last_frame = b""
        self._last_fcb = fcb

    def _telegram(self, payload: bytes, now: datetime) -> bytes:
        meter = self.meter
        identity = meter.identity_at(now)
        self._access_no = (self._access_no + 1) % 256
        status = STATUS_TEMPORARY_ERROR if meter.flags_at(now) else 0
        key = meter.key_at(now)
        config = 0
        if self.encrypted and key is not None:
            # EN 13757-7 security mode 5 on the wire: the long header's M and ID build the IV.
            plain = plaintext_block(payload, CI_RESPONSE_LONG)
            config = with_blocks(SECURITY_MODE_CBC_IV << 8, len(plain) // 16)
            payload = cbc_encrypt(key, mode5_iv(identity.address, self._access_no), plain)
        header = TplHeader(
            ci=CI_RESPONSE_LONG,
            access_no=self._access_no,
            status=status,
            config=config,
            address=identity.address,
        )
        body = encode_tpl(header)[1:] + payload
        return rsp_ud(self.primary_address, CI_RESPONSE_LONG, body)

    def _read(self, c: int, now: datetime) -> bytes:
        """REQ_UD2: the next telegram, or the last one again when the FCB did not toggle."""
        fcb = bool(c & C_FCB) if c & C_FCV else None
        repeat = fcb is not None and fcb == self._last_fcb and self._last_frame
        if not repeat:
            if not self._payloads or fcb is None or self._position + 1 >= len(self._payloads):
                records = _records(self.meter, now, self.history_months)
                self._payloads = pack_telegrams(records, self.record_budget)
                self._position = 0
            else:
                self._position += 1
            self._last_frame = self._telegram(self._payloads[self._position], now)
            self.telegrams_sent += 1
        self._last_fcb = fcb
        return self._last_frame

    def _addressed(self, address: int) -> bool:
        return address in (self.primary_address, ADDRESS_BROADCAST, ADDRESS_BROADCAST_REPLY) or (
            address == ADDRESS_NETWORK_LAYER and self.selected
        )

    def answer(self, frame: Frame, now: datetime) -> bytes | None:
        """What this slave sends back for `frame`; None when it stays silent."""
        reply = self._answer(frame, now)
        if reply is None or not self.faults:
            return reply
        fault = self.faults.popleft()
        if fault is None:
            return reply
        if fault == "silent":
            return None
        if fault == "truncate":
            return reply[: max(1, len(reply) // 2)]
        if fault == "garbage":
            return bytes((0x68, 0x55, 0xAA, 0x10, 0x13))
        spoiled = bytearray(reply)
        spoiled[len(spoiled) // 2] ^= 0x04
        return bytes(spoiled)

    def _answer(self, frame: Frame, now: datetime) -> bytes | None:
        if isinstance(frame, Ack):
            return None
        if isinstance(frame, (ControlFrame, LongFrame)) and frame.ci == CI_SELECT_SECONDARY:
            if frame.a != ADDRESS_NETWORK_LAYER or not isinstance(frame, LongFrame):
                return None
            if len(frame.data) != 8:
                return None
            # EN 13757-2 secondary addressing: a match selects, anything else deselects.
            self.selected = secondary_matches(frame.data, self.secondary(now))
            if not self.selected:
                return None
            self.reset_link(bool(frame.c & C_FCB) if frame.c & C_FCV else None)
            return bytes((ACK,))
        if not self._addressed(frame.a):
            return None
        function = frame.c & _FUNCTION
        silent = frame.a == ADDRESS_BROADCAST  # everyone listens, nobody answers
        if isinstance(frame, ShortFrame):
            if function == _SND_NKE:
                self.reset_link()
                if frame.a == ADDRESS_NETWORK_LAYER:
                    self.selected = False
                return None if silent else bytes((ACK,))
            if function == _REQ_UD2:
                return None if silent else self._read(frame.c, now)
            if function == _REQ_UD1:
                return None if silent else bytes((ACK,))  # no class 1 (alarm) data
            return None
        if function != _SND_UD:
            return None
        if frame.ci == CI_APPLICATION_RESET:
            self.reset_link()
        elif frame.ci != CI_DATA_SEND and not CI_SET_BAUD_RATE <= frame.ci <= 0xBF:
            return None
        return None if silent else bytes((ACK,))


def _uart_bits(data: bytes, offset: int, line: list[int]) -> None:
    """AND the 8E1 character frames of `data` into `line` from bit time `offset` on: start bit
    0, 8 data bits LSB first, even parity, stop bit 1 (PROTOCOL_NOTES §8.5)."""
    pos = offset
    for byte in data:
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [byte.bit_count() & 1, 1]
        for bit in bits:
            line[pos] &= bit
            pos += 1


def wire_and(answers: Sequence[bytes], skew_bits: int = 1) -> bytes:
    """What a master's UART reads when several slaves answer at once.

    A slave sends a 0 (space) by drawing extra current, so on the wire a 0 wins: the line is the
    bit-wise AND of the answers. Their turnaround times differ, so answer k starts k*skew_bits
    bit times after the first. The master's receiver re-frames the result into characters
    (a framing error reads as 00, as a Linux tty without PARMRK delivers it); parity errors
    cannot reach it through a pty or most USB adapters, so collisions show as wrong bytes.
    Answers of one kind (E5s, RSP_UDs) always garble; in general a frame whose zeros cover
    another's can hide it, on a real bus too.
    """
    answers = [a for a in answers if a]
    if len(answers) <= 1:
        return answers[0] if answers else b""
    length = max(len(a) * 11 + k * skew_bits for k, a in enumerate(answers)) + 11
    line = [1] * length
    for k, answer in enumerate(answers):
        _uart_bits(answer, k * skew_bits, line)
    out = bytearray()
    pos = 0
    while pos + 11 <= length:
        if line[pos]:
            pos += 1
            continue
        value = sum(line[pos + 1 + i] << i for i in range(8))
        framing_error = not line[pos + 10]
        out.append(0 if framing_error else value)
        pos += 11
        if framing_error:  # the receiver waits for the line to go idle before the next start
            while pos < length and not line[pos]:
                pos += 1
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request as the bus saw it, and what the master gets back (b"" for silence)."""

    request: Frame
    request_length: int
    responders: int
    wire: bytes


class SlaveBus:
    """Slaves sharing one pair of wires, fed the master's bytes as they come."""

    def __init__(self, slaves: Iterable[MbusSlave], *, skew_bits: int = 1) -> None:
        self.slaves = list(slaves)
        self.skew_bits = skew_bits
        self.framer = MbusFramer()

    @classmethod
    def from_fleet(
        cls,
        fleet: Fleet,
        *,
        history_months: int = 12,
        record_budget: int = RECORD_BUDGET,
        encrypted: bool = False,
        skew_bits: int = 1,
    ) -> SlaveBus:
        slaves = (
            MbusSlave(
                meter,
                history_months=history_months,
                record_budget=record_budget,
                encrypted=encrypted,
            )
            for meter in fleet.meters
        )
        return cls(slaves, skew_bits=skew_bits)

    def handle(self, frame: Frame, now: datetime | None = None) -> Exchange:
        moment = now or datetime.now(UTC)
        answers = [a for s in self.slaves if (a := s.answer(frame, moment)) is not None]
        wire = wire_and(answers, self.skew_bits)
        return Exchange(frame, frame_length(frame), len(answers), wire)

    def receive(self, data: bytes, now: datetime | None = None) -> list[Exchange]:
        """Bytes from the master; one exchange per complete request. Line noise that forms no
        valid frame is dropped, as a slave's link layer drops it."""
        return [self.handle(frame, now) for frame in self.framer.feed(data)]
