"""Diehl / Sappel / Hydrometer IZAR and HYDRUS: PRIOS frames and scrambled "real data".

Known only by reverse engineering; the layout is PROTOCOL_NOTES.md §10.2, restated from
wmbusmeters src/manufacturer_specificities.cc, src/driver_izar.cc and drivers/src/izarv2.xmq.
Offsets are in the CRC-stripped frame, L-field at 0:

- CI A0-A7 (PRIOS; "SAP PRIOS" when the manufacturer is SAP) and B1-B3 (PRIOS_SCR): bytes
  11-13 are a clear alarm header, bytes 15 on a payload scrambled by a 32-bit LFSR whose first
  plain byte is 4B; then total volume and last month's volume in litres (uint32 LE) and that
  month's date (type G).
- CI 71, or CI 7A whose CFG security mode has bit 4 set ("real data"): an OMS record payload
  from byte 15 on, scrambled by the same LFSR and checked by a sum against CFG byte 14.
- Every other frame of these manufacturers is plain OMS and goes to the generic record parser.

The three clear alarm bytes come out as one 24-bit record (`03 FF 01`, little-endian as
izarv2.xmq reads them), so that profiles map its bits to status flags.

PRIOS and real-data frames put the meter's identity elsewhere in the A-field: bytes 6-9 are the
identification number and bytes 4-5 version and device type; SAP PRIOS keeps the identification
number in bytes 4-7 and is a water meter.
"""

from __future__ import annotations

from decimal import Decimal

from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import counted, manufacturer, standard
from decoders.manufacturer import decode_id, decode_manufacturer
from decoders.records import parse_records
from decoders.telegram import Address, DataRecord, SecurityInfo
from metergate.errors import DecodeError, DecryptionError, FrameError, UnsupportedError

DIEHL_MANUFACTURERS = frozenset({"DME", "EWT", "HYD", "SAP", "SPL"})
# The keys wmbusmeters uses when none is configured (PROTOCOL_NOTES.md §10.2).
DEFAULT_KEYS = (bytes.fromhex("39BC8A10E66D83F8"), bytes.fromhex("51728910E66D83F8"))
PRIOS_CHECK = 0x4B  # the first plain byte of every PRIOS payload
HEADER_SIZE = 15  # L C M(2) A(6) CI and four header bytes precede the scrambled bytes

PRIOS = "prios"
SAP_PRIOS = "sap_prios"
PRIOS_SCR = "prios_scr"
REAL_DATA = "real_data"
OMS = "oms"

_SND_NR_IR = (0x44, 0x46)
_WATER = 0x07


def frame_kind(frame: bytes) -> str:
    """How wmbusmeters' detectDiehlFrameInterpretation reads a frame (PROTOCOL_NOTES §10.2)."""
    if len(frame) < HEADER_SIZE or frame[1] not in _SND_NR_IR:
        return OMS
    if decode_manufacturer(frame[2] | frame[3] << 8) not in DIEHL_MANUFACTURERS:
        return OMS
    ci = frame[10]
    if ci == 0x71 or (ci == 0x7A and frame[14] & 0x10):
        return REAL_DATA
    if 0xA0 <= ci <= 0xA7:
        return SAP_PRIOS if decode_manufacturer(frame[2] | frame[3] << 8) == "SAP" else PRIOS
    if 0xB1 <= ci <= 0xB3:
        return PRIOS_SCR
    if 0xA8 <= ci <= 0xB7:
        raise UnsupportedError(f"Diehl CI {ci:02x} is not decoded", offset=10, data=frame)
    return OMS


def _seed(frame: bytes, key: bytes) -> int:
    """Key halves XORed, then XORed with frame bytes 2-5, 6-9 and 10-13 (all big-endian)."""
    if len(key) < 8:
        raise DecodeError("a PRIOS key has 8 bytes (or is the first half of an AES key)")
    state = int.from_bytes(key[0:4], "big") ^ int.from_bytes(key[4:8], "big")
    for start in (2, 6, 10):
        state ^= int.from_bytes(frame[start : start + 4], "big")
    return state


def keystream(seed: int, length: int) -> bytes:
    """Shift the 32-bit state 8 times per byte; each new bit is bit 1 ^ 2 ^ 11 ^ 31."""
    state = seed
    out = bytearray(length)
    for i in range(length):
        for _ in range(8):
            bit = (state >> 1 ^ state >> 2 ^ state >> 11 ^ state >> 31) & 1
            state = (state << 1 | bit) & 0xFFFFFFFF
        out[i] = state & 0xFF
    return bytes(out)


def descramble(frame: bytes, key: bytes) -> bytes:
    """The plain payload after byte 15 of `frame` under one 8-byte key."""
    body = frame[HEADER_SIZE:]
    stream = keystream(_seed(frame, key), len(body))
    return bytes(a ^ b for a, b in zip(body, stream, strict=True))


def scramble(head: bytes, plain: bytes, key: bytes = DEFAULT_KEYS[0]) -> bytes:
    """The frame whose first 15 bytes are `head` and whose payload descrambles to `plain`.

    The keystream depends only on the key and header bytes 2-13, so scrambling is the same XOR.
    """
    if len(head) != HEADER_SIZE:
        raise DecodeError(f"a PRIOS frame header has {HEADER_SIZE} bytes, not {len(head)}")
    return head + descramble(head + plain, key)


def _keys(key: bytes | None) -> tuple[bytes, ...]:
    """A configured key replaces the defaults; of an AES key the first 8 bytes count."""
    return (key[:8],) if key else DEFAULT_KEYS


def _diehl_address(frame: bytes, kind: str, dll: Address) -> Address:
    m_raw = frame[2] | frame[3] << 8
    if kind == SAP_PRIOS:
        return Address(dll.manufacturer, decode_id(frame[4:8]), 0, _WATER, m_raw)
    return Address(dll.manufacturer, decode_id(frame[6:10]), frame[4], frame[5], m_raw)


def prios_records(frame: bytes, plain: bytes) -> tuple[DataRecord, ...]:
    """Total, last month's total and date, battery life and transmit period of a PRIOS frame."""
    records = [
        counted(b"\x04\x13", int.from_bytes(plain[1:5], "little"), plain[1:5]),
        manufacturer(
            b"\x01\xff\x02",
            frame[12:13],
            "remaining_battery_life",
            "y",
            Decimal(frame[12] & 0x1F) / 2,
        ),
        manufacturer(
            b"\x01\xff\x03", frame[11:12], "transmit_period", "s", Decimal(4 << (frame[11] & 0x0F))
        ),
        manufacturer(
            b"\x03\xff\x01",
            frame[11:14],
            "alarms",
            "",
            Decimal(int.from_bytes(frame[11:14], "little")),
        ),
    ]
    if len(plain) >= 9:
        records.append(counted(b"\x44\x13", int.from_bytes(plain[5:9], "little"), plain[5:9]))
    if len(plain) >= 11:
        records.append(standard(b"\x42\x6c", plain[9:11]))
    return tuple(records)


def _prios(hook: HookInput, kind: str) -> HookResult:
    frame = hook.frame
    if len(frame) < HEADER_SIZE + 5:
        raise FrameError("PRIOS frame too short for its total volume", offset=HEADER_SIZE)
    for key in _keys(hook.key):
        plain = descramble(frame, key)
        if plain[0] == PRIOS_CHECK:
            return HookResult(
                records=prios_records(frame, plain),
                security=SecurityInfo(mode=0, encrypted=True, decrypted=True, layer="mfct"),
                address=_diehl_address(frame, kind, hook.address),
            )
    raise DecryptionError(
        "PRIOS payload does not start with 4B under any key", offset=HEADER_SIZE, data=frame
    )


def _real_data(hook: HookInput) -> HookResult:
    frame = hook.frame
    mode = frame[14] & 0x1F
    address = _diehl_address(frame, REAL_DATA, hook.address)
    for key in _keys(hook.key):
        plain = descramble(frame, key)
        if sum(plain) & 0xEF == frame[14] & 0xEF:
            try:
                records = parse_records(plain).records
            except DecodeError:
                continue  # a chance match of the 7-bit check sum: try the next key
            security = SecurityInfo(mode=mode, encrypted=True, decrypted=True)
            return HookResult(records, security=security, address=address)
    # wmbusmeters reads the payload as plain when no key descrambles it: stored telegrams
    # (simulations, test suites) were saved after descrambling.
    records = parse_records(frame[HEADER_SIZE:]).records
    return HookResult(records, address=address)


def decode(hook: HookInput) -> HookResult | None:
    """The hook: PRIOS and real-data frames here; every other frame (OMS records, compact
    frames, encrypted ones) goes the generic way, which also learns and expands compact
    formats."""
    kind = frame_kind(hook.frame)
    if kind in (PRIOS, SAP_PRIOS, PRIOS_SCR):
        return _prios(hook, kind)
    if kind == REAL_DATA:
        return _real_data(hook)
    return None


def _litres(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise DecodeError(f"{value} litres do not fit the 32-bit PRIOS register")
    return value.to_bytes(4, "little")


def encode_prios(
    *,
    m_field: int,
    a_field: bytes,
    ci: int,
    alarms: bytes,
    total_litres: int,
    last_month_litres: int | None = None,
    last_month_date: bytes | None = None,
    key: bytes = DEFAULT_KEYS[0],
    c_field: int = 0x44,
    spare: int = 0x00,
) -> bytes:
    """A PRIOS frame (CRC-stripped, L-field first) that `decode` reads back; for tests."""
    if len(a_field) != 6 or len(alarms) != 3:
        raise DecodeError("a PRIOS frame needs a 6-byte A-field and 3 alarm bytes")
    if not (0 <= c_field <= 0xFF and 0 <= ci <= 0xFF and 0 <= spare <= 0xFF):
        raise DecodeError("C-field, CI and spare byte are single bytes")
    if not 0 <= m_field <= 0xFFFF:
        raise DecodeError(f"M-field {m_field} does not fit 16 bits")
    plain = bytes((PRIOS_CHECK,)) + _litres(total_litres)
    if last_month_litres is not None:
        plain += _litres(last_month_litres)
        if last_month_date is not None:
            plain += last_month_date
    head = bytes((c_field,)) + m_field.to_bytes(2, "little") + a_field + bytes((ci,))
    head += alarms + bytes((spare,))
    return scramble(bytes((len(head) + len(plain),)) + head, plain, key)


def encode_real_data(head: bytes, records: bytes, key: bytes = DEFAULT_KEYS[0]) -> bytes:
    """A scrambled real-data frame from its first 14 bytes (L to CFG low byte) and plain records.

    CFG byte 14 carries the check: its bits 7-5 and 3-0 are those of the plain bytes' sum, bit 4
    marks real data (and is outside the check), so the security mode reads 16-31.
    """
    if len(head) != HEADER_SIZE - 1:
        raise DecodeError(
            f"a real-data frame header has {HEADER_SIZE - 1} bytes before CFG byte 14"
        )
    if len(head) + len(records) > 0xFF:
        raise DecodeError("a wM-Bus frame holds at most 255 bytes after its L-field")
    check = sum(records) & 0xEF | 0x10
    frame = bytes((len(head) + len(records),)) + head[1:] + bytes((check,))
    return scramble(frame, records, key)
