"""Extended link layer (ELL, CI 8C/8D/8E/8F) and its AES-128-CTR payload encryption.

EN 13757-4 (ELL I-IV); PROTOCOL_NOTES.md §5. 8D and 8F carry a session number whose ENC
bits select AES-128-CTR, and a payload CRC over everything after it, computed on the plaintext:
with encryption it is the only key check.
"""

from __future__ import annotations

from dataclasses import dataclass

from decoders.crc import crc16_en13757
from decoders.security import ctr_crypt
from decoders.telegram import Address
from decoders.wmbus_link import check_byte, link_address_bytes, read_link_address
from metergate.errors import (
    ChecksumError,
    DecodeError,
    DecryptionError,
    FrameError,
    MissingKeyError,
    UnsupportedError,
)

# CI -> (carries the receiver address M2/A2, carries SN and payload CRC); EN 13757-4 Tables 44-47
ELL_LAYOUTS = {0x8C: (False, False), 0x8D: (False, True), 0x8E: (True, False), 0x8F: (True, True)}
ENC_NONE = 0
ENC_AES_CTR = 1
# EN 13757-4 §13.2.12.4: the repeater-handled CC bits H (0x10) and R (0x02) are zero in the
# initial counter block.
_CC_COUNTER_MASK = 0xFF & ~0x12


@dataclass(frozen=True, slots=True)
class Ell:
    ci: int
    cc: int  # communication control: B D S H P A R from bit 7 down
    access_no: int
    session: int | None = None  # SN as a 32-bit LE value (8D/8F)
    receiver: Address | None = None  # M2/A2 (8E/8F)

    @property
    def encryption(self) -> int:
        """SN bits 31-29 (ENC): 0 none, 1 AES-128-CTR."""
        return 0 if self.session is None else self.session >> 29

    @property
    def session_no(self) -> int | None:
        return None if self.session is None else self.session & 0x0F


@dataclass(frozen=True, slots=True)
class EllPayload:
    """An ELL with the plaintext of what follows it."""

    ell: Ell
    offset: int  # where the payload starts in the frame, after the payload CRC if any
    payload: bytes  # the plaintext, to the end of the frame
    encrypted: bool  # the payload was encrypted on air and has been decrypted


def parse_ell(frame: bytes, offset: int) -> tuple[Ell, int]:
    """The ELL whose CI is at `offset`, and the offset of its payload CRC (8D/8F, still as
    sent) or of its payload (8C/8E)."""
    ci = frame[offset] if offset < len(frame) else -1
    layout = ELL_LAYOUTS.get(ci)
    if layout is None:
        raise UnsupportedError(f"CI {ci:02x} is not an ELL", offset=offset, data=frame)
    has_receiver, has_session = layout
    size = 3 + 8 * has_receiver + 4 * has_session
    if offset + size > len(frame):
        raise FrameError(f"ELL of CI {ci:02x} truncated", offset=offset, data=frame)
    pos = offset + 3
    receiver = None
    if has_receiver:
        receiver = read_link_address(frame, pos)
        pos += 8
    session = None
    if has_session:
        session = int.from_bytes(frame[pos : pos + 4], "little")
        pos += 4
    return Ell(ci, frame[offset + 1], frame[offset + 2], session, receiver), pos


def counter_block(link_address: bytes, ell: Ell) -> bytes:
    """M(2) A(6) of the DLL ‖ CC without H and R ‖ SN ‖ FN 00 00 ‖ BC 00 (PROTOCOL_NOTES §5.2).

    For 8E/8F wmbusmeters also takes the DLL address, not M2/A2 (not checked with a vector).
    """
    session = (ell.session or 0).to_bytes(4, "little")
    return link_address + bytes([ell.cc & _CC_COUNTER_MASK]) + session + b"\x00\x00\x00"


def open_ell(frame: bytes, offset: int, key: bytes | None) -> EllPayload:
    """Parse the ELL at `offset` of a stripped frame and decrypt and check what follows."""
    ell, pos = parse_ell(frame, offset)
    if ell.session is None:
        return EllPayload(ell, pos, frame[pos:], False)
    if pos + 2 > len(frame):
        raise FrameError("ELL ends before its payload CRC", offset=pos, data=frame)
    body = frame[pos:]
    encryption = ell.encryption
    if encryption not in (ENC_NONE, ENC_AES_CTR):
        raise UnsupportedError(
            f"ELL encryption {encryption} is not implemented", offset=offset, data=frame
        )
    if encryption == ENC_AES_CTR:
        if key is None:
            # A stored plaintext of a CTR frame still has a valid CRC as sent; decode it as
            # plain only without a key, like the 2F2F rule of the TPL (PROTOCOL_NOTES §3).
            if _crc_of(body) == _sent_crc(body):
                return EllPayload(ell, pos + 2, body[2:], False)
            raise MissingKeyError(
                "ELL payload is encrypted (AES-CTR) and no key was given",
                offset=pos,
                data=frame,
            )
        body = ctr_crypt(key, counter_block(frame[2:10], ell), body)
    if _crc_of(body) != _sent_crc(body):
        error = DecryptionError if encryption == ENC_AES_CTR else ChecksumError
        raise error(
            "ELL payload CRC does not match"
            + (" after decryption (wrong key?)" if encryption else ""),
            offset=pos,
            data=frame,
        )
    return EllPayload(ell, pos + 2, body[2:], encryption == ENC_AES_CTR)


def _crc_of(body: bytes) -> int:
    return crc16_en13757(body[2:])


def _sent_crc(body: bytes) -> int:
    """The payload CRC is sent LE, unlike the DLL block CRCs (PROTOCOL_NOTES §1.3)."""
    return body[0] | body[1] << 8


def encode_ell(ell: Ell, link_address: Address, payload: bytes, key: bytes | None) -> bytes:
    """The ELL followed by its payload: with the payload CRC for 8D/8F, encrypted by AES-CTR
    when the session number's ENC bits say so. `link_address` is the DLL's (counter block)."""
    layout = ELL_LAYOUTS.get(ell.ci)
    if layout is None:
        raise UnsupportedError(f"CI {ell.ci:02x} is not an ELL")
    has_receiver, has_session = layout
    check_byte(ell.cc, "CC")
    check_byte(ell.access_no, "ELL access number")
    out = bytearray((ell.ci, ell.cc, ell.access_no))
    if has_receiver != (ell.receiver is not None):
        raise DecodeError(f"ELL CI {ell.ci:02x} {'needs' if has_receiver else 'has no'} M2/A2")
    if ell.receiver is not None:
        out += link_address_bytes(ell.receiver)
    if has_session != (ell.session is not None):
        raise DecodeError(
            f"ELL CI {ell.ci:02x} {'needs' if has_session else 'has no'} session number"
        )
    if ell.session is None:
        return bytes(out) + payload
    if not 0 <= ell.session <= 0xFFFFFFFF:
        raise DecodeError(f"ELL session number {ell.session} does not fit 32 bits")
    out += ell.session.to_bytes(4, "little")
    body = crc16_en13757(payload).to_bytes(2, "little") + payload
    if ell.encryption == ENC_AES_CTR:
        if key is None:
            raise MissingKeyError("ELL AES-CTR encryption needs a key")
        body = ctr_crypt(key, counter_block(link_address_bytes(link_address), ell), body)
    elif ell.encryption != ENC_NONE:
        raise UnsupportedError(f"ELL encryption {ell.encryption} is not implemented")
    return bytes(out) + body
