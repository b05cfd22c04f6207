"""Transport layer headers: none, short and long, with the configuration field.

EN 13757-7 (TPL: CI 72/73 long, 7A/7B short, 78/79 none) and EN 13757-3 (wired M-Bus
variable data, CI 72); PROTOCOL_NOTES.md §2. The configuration field (CFG) carries the security
mode and the number of encrypted blocks; security mode 7 adds one CFG-extension byte.
"""

from __future__ import annotations

from decoders.manufacturer import decode_id, decode_manufacturer, encode_id
from decoders.telegram import Address, TplHeader
from decoders.wmbus_link import check_byte
from metergate.errors import DecodeError, FrameError, UnsupportedError

CI_LONG = frozenset({0x72, 0x73})
CI_SHORT = frozenset({0x7A, 0x7B})
CI_NONE = frozenset({0x78, 0x79})
TPL_CIS = CI_LONG | CI_SHORT | CI_NONE
# PROTOCOL_NOTES §2.1 and §6: these carry a compact APL (format signature first).
COMPACT_CIS = frozenset({0x73, 0x79, 0x7B})

SECURITY_MODE_CBC_IV = 5
SECURITY_MODE_CBC_KDF = 7
_LONG_HEADER = 12  # ID(4) M(2) version type ACC STS CFG(2)
_SHORT_HEADER = 4  # ACC STS CFG(2)
_BLOCKS_MASK = 0x00F0  # CFG bits 7-4: N encrypted blocks (PROTOCOL_NOTES §2.3)


def has_config_ext(config: int) -> bool:
    """Security mode 7 appends the CFG-extension byte (PROTOCOL_NOTES §2.3)."""
    return (config >> 8) & 0x1F == SECURITY_MODE_CBC_KDF


def with_blocks(config: int, blocks: int) -> int:
    """The CFG with its N field (encrypted 16-byte blocks) set."""
    if not 0 <= blocks <= 0x0F:
        raise DecodeError(f"CFG counts at most 15 encrypted blocks, not {blocks}")
    return (config & ~_BLOCKS_MASK) | blocks << 4


def _read_long_address(data: bytes, offset: int) -> Address:
    """Long header order: ID(4) M(2) version type; the DLL has M first (PROTOCOL_NOTES §1.1)."""
    m_raw = data[offset + 4] | data[offset + 5] << 8
    return Address(
        manufacturer=decode_manufacturer(m_raw),
        id=decode_id(data[offset : offset + 4]),
        version=data[offset + 6],
        device_type=data[offset + 7],
        m_raw=m_raw,
    )


def parse_tpl(data: bytes, offset: int) -> tuple[TplHeader, int]:
    """The TPL header whose CI is at `offset`, and the offset of the first byte after it."""
    if offset >= len(data):
        raise FrameError("frame ends before the TPL CI", offset=offset, data=data)
    ci = data[offset]
    if ci not in TPL_CIS:
        raise UnsupportedError(f"CI {ci:02x} is not a TPL header", offset=offset, data=data)
    pos = offset + 1
    if ci in CI_NONE:
        return TplHeader(ci=ci), pos
    size = _LONG_HEADER if ci in CI_LONG else _SHORT_HEADER
    if pos + size > len(data):
        raise FrameError(
            f"TPL header of CI {ci:02x} needs {size} bytes, {len(data) - pos} left",
            offset=offset,
            data=data,
        )
    address = None
    if ci in CI_LONG:
        address = _read_long_address(data, pos)
        pos += 8
    access_no, status = data[pos], data[pos + 1]
    config = data[pos + 2] | data[pos + 3] << 8
    pos += 4
    config_ext = None
    if has_config_ext(config):
        if pos >= len(data):
            raise FrameError("security mode 7 needs a CFG-extension byte", offset=pos, data=data)
        config_ext = data[pos]
        pos += 1
    header = TplHeader(
        ci=ci,
        access_no=access_no,
        status=status,
        config=config,
        config_ext=config_ext,
        address=address,
    )
    return header, pos


def encode_tpl(header: TplHeader) -> bytes:
    """CI and header bytes; the inverse of parse_tpl."""
    ci = header.ci
    if ci not in TPL_CIS:
        raise UnsupportedError(f"CI {ci:02x} is not a TPL header")
    if ci in CI_NONE:
        if (
            header.access_no is not None
            or header.status is not None
            or header.config
            or header.config_ext is not None
            or header.address is not None
        ):
            raise DecodeError(f"CI {ci:02x} has no TPL header to carry header fields")
        return bytes([ci])
    if header.access_no is None or header.status is None:
        raise DecodeError(f"CI {ci:02x} needs an access number and a status byte")
    check_byte(header.access_no, "access number")
    check_byte(header.status, "status")
    if not 0 <= header.config <= 0xFFFF:
        raise DecodeError(f"CFG {header.config} does not fit 16 bits")
    out = bytearray([ci])
    if ci in CI_LONG:
        address = header.address
        if address is None:
            raise DecodeError(f"CI {ci:02x} (long header) needs an address")
        if not 0 <= address.m_raw <= 0xFFFF:
            raise DecodeError(f"M-field {address.m_raw} does not fit 16 bits")
        check_byte(address.version, "version")
        check_byte(address.device_type, "device type")
        out += encode_id(address.id) + address.m_raw.to_bytes(2, "little")
        out += bytes((address.version, address.device_type))
    elif header.address is not None:
        raise DecodeError(f"CI {ci:02x} (short header) carries no address")
    out += bytes((header.access_no, header.status)) + header.config.to_bytes(2, "little")
    if has_config_ext(header.config):
        if header.config_ext is None:
            raise DecodeError("security mode 7 needs a CFG-extension byte")
        check_byte(header.config_ext, "CFG-extension")
        out.append(header.config_ext)
    elif header.config_ext is not None:
        raise DecodeError("only security mode 7 carries a CFG-extension byte")
    return bytes(out)
