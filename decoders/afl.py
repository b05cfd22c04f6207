"""Authentication and fragmentation layer (AFL, CI 90), single fragments only.

EN 13757-7 (AFL); PROTOCOL_NOTES.md §4.1. Field order follows EN 13757-7:2018 as quoted by
the exmbus parser: FCL, MCL, KI, MCR, MAC, ML; the notes list ML before the MAC, but
wmbusmeters never parses ML, so neither order is checked by a test vector (the sensostar vector
of §4.5 has neither KI nor ML).
"""

from __future__ import annotations

from dataclasses import dataclass

from metergate.errors import DecodeError, FrameError, UnsupportedError

CI_AFL = 0x90

# FCL bits (EN 13757-7 §6.3.2)
FCL_FRAGMENT_ID = 0x00FF
FCL_KI = 1 << 9
FCL_MAC = 1 << 10
FCL_MCR = 1 << 11
FCL_ML = 1 << 12
FCL_MCL = 1 << 13
FCL_MORE_FRAGMENTS = 1 << 14

# MCL bits 3-0: authentication type -> MAC length (EN 13757-7 Table 6)
MAC_LENGTHS = {3: 2, 4: 4, 5: 8, 6: 12, 7: 16, 8: 12, 9: 16}


@dataclass(frozen=True, slots=True)
class Afl:
    """One AFL; a field is None exactly when its FCL presence bit is clear."""

    fcl: int
    mcl: int | None = None
    key_info: int | None = None
    counter: int | None = None  # MCR, the message counter (KDF-A input)
    mac: bytes | None = None
    length: int | None = None  # ML

    @property
    def fragment_id(self) -> int:
        return self.fcl & FCL_FRAGMENT_ID

    @property
    def more_fragments(self) -> bool:
        return bool(self.fcl & FCL_MORE_FRAGMENTS)

    @property
    def auth_type(self) -> int:
        return (self.mcl or 0) & 0x0F

    @property
    def mac_length(self) -> int:
        return MAC_LENGTHS.get(self.auth_type, 0)


def _need(data: bytes, pos: int, size: int, end: int, name: str) -> None:
    if pos + size > end:
        raise FrameError(f"AFL ends inside its {name}", offset=pos, data=data)


def parse_afl(data: bytes, offset: int) -> tuple[Afl, int]:
    """The AFL whose CI (90) is at `offset`, and the offset of the CI after it."""
    if offset + 2 > len(data):
        raise FrameError("AFL truncated before its length", offset=offset, data=data)
    end = offset + 2 + data[offset + 1]
    if end > len(data):
        raise FrameError("AFL length runs past the frame", offset=offset + 1, data=data)
    pos = offset + 2
    _need(data, pos, 2, end, "FCL")
    fcl = data[pos] | data[pos + 1] << 8
    pos += 2
    # EN 13757-7 §6.3.2: a message in several fragments needs reassembly, which we do not do.
    if fcl & FCL_MORE_FRAGMENTS or fcl & FCL_FRAGMENT_ID > 1:
        raise UnsupportedError(
            "fragmented AFL message (reassembly is not implemented)", offset=offset, data=data
        )
    mcl = key_info = counter = length = None
    mac = None
    if fcl & FCL_MCL:
        _need(data, pos, 1, end, "MCL")
        mcl = data[pos]
        pos += 1
    if fcl & FCL_KI:
        _need(data, pos, 2, end, "KI")
        key_info = data[pos] | data[pos + 1] << 8
        pos += 2
    if fcl & FCL_MCR:
        _need(data, pos, 4, end, "MCR")
        counter = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
    if fcl & FCL_MAC:
        if mcl is None:
            raise FrameError("AFL MAC without the MCL that sizes it", offset=pos, data=data)
        size = MAC_LENGTHS.get(mcl & 0x0F)
        if size is None:
            raise UnsupportedError(
                f"AFL authentication type {mcl & 0x0F} has no known MAC length",
                offset=pos,
                data=data,
            )
        _need(data, pos, size, end, "MAC")
        mac = data[pos : pos + size]
        pos += size
    if fcl & FCL_ML:
        _need(data, pos, 2, end, "ML")
        length = data[pos] | data[pos + 1] << 8
        pos += 2
    if pos != end:
        raise FrameError(
            f"AFL length says {end - offset - 2} bytes, its fields take {pos - offset - 2}",
            offset=offset + 1,
            data=data,
        )
    return Afl(fcl, mcl, key_info, counter, mac, length), end


def _check_presence(afl: Afl) -> None:
    fields = (
        (FCL_MCL, afl.mcl, "MCL"),
        (FCL_KI, afl.key_info, "KI"),
        (FCL_MCR, afl.counter, "MCR"),
        (FCL_MAC, afl.mac, "MAC"),
        (FCL_ML, afl.length, "ML"),
    )
    for bit, value, name in fields:
        if bool(afl.fcl & bit) != (value is not None):
            raise DecodeError(f"AFL {name} must be given exactly when its FCL bit is set")
    if afl.mac is not None and len(afl.mac) != afl.mac_length:
        raise DecodeError(
            f"AFL MAC of authentication type {afl.auth_type} has {afl.mac_length} bytes,"
            f" not {len(afl.mac)}"
        )


def _fits(value: int | None, size: int, name: str) -> bytes:
    if value is None:
        return b""
    if not 0 <= value < 1 << (8 * size):
        raise DecodeError(f"AFL {name} {value} does not fit {size} bytes")
    return value.to_bytes(size, "little")


def encode_afl(afl: Afl) -> bytes:
    """CI 90, AFLL and the fields; the inverse of parse_afl."""
    _check_presence(afl)
    if afl.more_fragments or afl.fragment_id > 1:
        raise UnsupportedError("fragmented AFL messages are not implemented")
    body = (
        _fits(afl.fcl, 2, "FCL")
        + _fits(afl.mcl, 1, "MCL")
        + _fits(afl.key_info, 2, "KI")
        + _fits(afl.counter, 4, "MCR")
        + (afl.mac or b"")
        + _fits(afl.length, 2, "ML")
    )
    return bytes((CI_AFL, len(body))) + body


def mac_input(afl: Afl, tpdu: bytes) -> bytes:
    """What the AFL MAC covers: MCL ‖ {KI} ‖ {MCR} ‖ {ML} ‖ TPDU from its CI to the frame end.

    EN 13757-7 as quoted by exmbus; PROTOCOL_NOTES §4.3 omits KI (wmbusmeters).
    """
    return (
        _fits(afl.mcl, 1, "MCL")
        + _fits(afl.key_info, 2, "KI")
        + _fits(afl.counter, 4, "MCR")
        + _fits(afl.length, 2, "ML")
        + tpdu
    )
