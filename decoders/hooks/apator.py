"""Apator water meters whose payload is Apator's own: AT-WMBUS-16-2 ("apator162") and NA-1.

Layouts learned from wmbusmeters drivers/src/apator162.xmq, src/driver_apator162.cc and
drivers/src/apatorna1.xmq (the reverse-engineered grammars), restated here in our words.

apator162: a mode-5 TPL frame whose plaintext after 2F2F is a register list. One lead byte
(often 0F) and 7 status bytes, then registers, each an id byte followed by a length fixed by the
id; FF bytes pad to the AES block and the last 2 bytes are a check word. Register 10 is the
total volume in litres (uint32 LE).

NA-1: CI A0/A1 with no TPL; after the CI an access number and a clear frame-status byte, then
one AES-128-CBC block (IV as in mode 5: M, A and the access number 8 times) holding a pad byte,
the packed total, the meter's clock (seconds since 2000-01-01, uint32 LE), the age and volume
delta of the last historic reading, and current and historic status bytes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import counted, manufacturer, standard
from decoders.security import BLOCK, cbc_decrypt, cbc_encrypt, mode5_iv
from decoders.telegram import Address, DataRecord
from metergate.errors import DecodeError, FrameError, MissingKeyError, UnsupportedError

REGISTER_TOTAL = 0x10
_STATUS_BYTES = 7
_CHECK_WORD = 2
_PAD = 0xFF

# Register id -> data bytes after it (apator162.xmq grammar).
_REGISTER_SIZES: dict[int, int] = {
    0x00: 4,  # date
    0x01: 3,  # faults
    0x10: 4,  # total volume
    0x11: 2,  # flow
    0x40: 6,  # detectors
    0x41: 2,  # voltage
    0x42: 4,  # energy
    0x43: 2,  # days
    0x44: 3,
    0x8A: 9,
    0x8B: 6,
    0x8C: 6,
    0x8E: 7,
    0xA0: 4,
    0xA1: 4,
    0xA2: 1,
    0xA3: 7,
    0xA4: 4,
    0xA5: 1,
    0xA6: 3,
    0xA9: 1,
    0xAF: 1,
    0xB0: 5,
    0xB1: 8,
    0xB2: 16,
    0xB3: 8,
    0xB4: 2,
    0xB5: 16,
    0xD0: 3,
    0xD3: 3,
    0xF0: 4,
}
# History registers 71-7C: one byte and (id - 6F) volumes of 4 bytes.
_REGISTER_SIZES.update({rid: 1 + 4 * (rid - 0x6F) for rid in range(0x71, 0x7D)})
_REGISTER_SIZES.update(dict.fromkeys((0x80, 0x81, 0x82, 0x83, 0x84, 0x86, 0x87), 10))
_REGISTER_SIZES.update(dict.fromkeys((0x85, 0x88, 0x8F), 11))
_REGISTER_SIZES.update(dict.fromkeys((0xA7, 0xA8, 0xAA, 0xAB, 0xAC, 0xAD), 2))
_REGISTER_SIZES.update(dict.fromkeys(range(0xB6, 0xC8), 3))


def _strip_fillers(payload: bytes) -> bytes:
    start = 0
    while start < len(payload) and payload[start] == 0x2F:
        start += 1
    return payload[start:]


def apator162_registers(payload: bytes) -> list[tuple[int, bytes]]:
    """The registers of an apator162 plaintext (2F fillers, lead byte and status skipped)."""
    data = _strip_fillers(payload)
    pos = 1 + _STATUS_BYTES
    if pos + _CHECK_WORD > len(data):
        raise FrameError("apator162 payload too short for its status", offset=len(data))
    end = len(data) - _CHECK_WORD
    registers = []
    while pos < end and data[pos] != _PAD:
        rid = data[pos]
        size = _REGISTER_SIZES.get(rid)
        if size is None:
            raise UnsupportedError(f"apator162 register {rid:02x} of unknown size", offset=pos)
        if pos + 1 + size > end:
            raise FrameError(f"apator162 register {rid:02x} runs past the payload", offset=pos)
        registers.append((rid, data[pos + 1 : pos + 1 + size]))
        pos += 1 + size
    return registers


def apator162(hook: HookInput) -> HookResult:
    records = [
        counted(b"\x04\x13", int.from_bytes(raw, "little"), raw)
        for rid, raw in apator162_registers(hook.payload)
        if rid == REGISTER_TOTAL
    ]
    return HookResult(tuple(records))


def encode_apator162(
    registers: list[tuple[int, bytes]], status: bytes = bytes(_STATUS_BYTES), lead: int = 0x0F
) -> bytes:
    """The plaintext after 2F2F for these registers, FF-padded so that 2F2F + it fills whole
    AES blocks, with a zero check word (its algorithm is not known); for tests."""
    if len(status) != _STATUS_BYTES or not 0 <= lead <= 0xFF:
        raise DecodeError("apator162 needs a lead byte and 7 status bytes")
    body = bytearray((lead,)) + status
    for rid, raw in registers:
        if _REGISTER_SIZES.get(rid) != len(raw):
            raise DecodeError(f"apator162 register {rid:02x} does not take {len(raw)} bytes")
        body += bytes((rid,)) + raw
    used = 2 + len(body) + _CHECK_WORD
    body += bytes((_PAD,)) * (-used % BLOCK)
    return bytes(body) + bytes(_CHECK_WORD)


# NA-1 -----------------------------------------------------------------------------------------

_NA1_EPOCH = datetime(2000, 1, 1)
_NA1_CLEAR = 2  # access number and frame status precede the encrypted block


def apatorna1_plain(hook: HookInput) -> bytes:
    payload = hook.payload
    if len(payload) < _NA1_CLEAR + BLOCK:
        raise FrameError("NA-1 payload shorter than its encrypted block", offset=len(payload))
    if hook.key is None:
        raise MissingKeyError("NA-1 payload is encrypted and no key was given", offset=11)
    iv = mode5_iv(hook.address, payload[0])
    return cbc_decrypt(hook.key, iv, payload[_NA1_CLEAR : _NA1_CLEAR + BLOCK])


def apatorna1_records(status: int, plain: bytes) -> tuple[DataRecord, ...]:
    """Records of one decrypted NA-1 block; `status` is the clear frame-status byte."""
    packed = int.from_bytes(plain[1:5], "little")
    # Bits 5-4 give the power of ten of litres; bits 3-0 and 31-8 the count.
    power = (packed >> 4) & 0x03
    count = (packed >> 8) << 4 | packed & 0x0F
    seconds = int.from_bytes(plain[5:9], "little")
    age_low, age_meta = plain[9], plain[10]
    age_hours = (age_meta >> 2) << 8 | age_low
    delta = plain[13] << 18 | plain[12] << 10 | plain[11] << 2 | age_meta & 0x03
    clock = _NA1_EPOCH + timedelta(seconds=seconds)
    volume_vif = 0x13 + power
    return (
        counted(bytes((0x04, volume_vif)), count, plain[1:5]),
        manufacturer(b"\x04\xff\x01", plain[5:9], "datetime", "datetime", clock),
        counted(bytes((0x44, volume_vif)), count - delta, plain[10:14]),
        manufacturer(
            b"\x42\xff\x01", plain[9:11], "datetime", "datetime", clock - timedelta(hours=age_hours)
        ),
        manufacturer(b"\x02\xff\x02", plain[9:11], "historic_age", "h", Decimal(age_hours)),
        standard(b"\x01\xfd\x17", plain[14:15]),
        standard(b"\x41\xfd\x17", plain[15:16]),
        manufacturer(b"\x01\xff\x03", bytes((status,)), "frame_status", "", Decimal(status)),
    )


def apatorna1(hook: HookInput) -> HookResult:
    if hook.ci not in (0xA0, 0xA1):
        raise UnsupportedError(f"NA-1 with CI {hook.ci:02x} is not decoded")
    plain = apatorna1_plain(hook)
    return HookResult(apatorna1_records(hook.payload[1], plain))


def encode_apatorna1(
    *,
    address: Address,
    key: bytes,
    access_no: int,
    frame_status: int,
    plain: bytes,
) -> bytes:
    """The bytes after CI A0 for one plain 16-byte NA-1 block; for tests."""
    if len(plain) != BLOCK or not (0 <= access_no <= 0xFF and 0 <= frame_status <= 0xFF):
        raise DecodeError("NA-1 needs a 16-byte block, an access number and a status byte")
    cipher = cbc_encrypt(key, mode5_iv(address, access_no), plain)
    return bytes((access_no, frame_status)) + cipher
