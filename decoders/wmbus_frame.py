"""The wireless M-Bus envelope: DLL, ELL, AFL and TPL opened down to the application bytes.

Layer order (EN 13757-4, EN 13757-7; PROTOCOL_NOTES §2.1, §4.5, §5): DLL, optional ELL (CI
8C-8F), optional AFL (CI 90), then the TPL (CI 72/73/7A/7B/78/79) whose payload is decrypted by
security mode 5 or 7. The application bytes are handed on with their 2F fillers; the record
parser skips them. Offsets in errors index the CRC-stripped frame (wired payloads: the bytes
from the CI on).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from decoders.afl import CI_AFL, Afl, parse_afl
from decoders.ell import ELL_LAYOUTS, ENC_AES_CTR, Ell, open_ell, parse_ell
from decoders.security import MARKER, open_tpl_security
from decoders.telegram import Address, SecurityInfo, TplHeader
from decoders.tpl import CI_LONG, COMPACT_CIS, TPL_CIS, parse_tpl
from decoders.wmbus_link import FIRST_BLOCK, parse_dll, strip_crcs
from metergate.errors import FrameError, MissingKeyError, UnsupportedError

CI_ALARM = 0x71
# PROTOCOL_NOTES §2.1: manufacturer-specific payloads (Diehl PRIOS, Techem, ...) and the alarm
# report go to a manufacturer hook as they are.
MANUFACTURER_CIS = frozenset(range(0xA0, 0xB8)) | {CI_ALARM}
CI_WIRED = frozenset({0x72, 0x78, 0x7A})  # PROTOCOL_NOTES §2.1: variable data on wired M-Bus
_NO_SECURITY = SecurityInfo(mode=0, encrypted=False, decrypted=False)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a wM-Bus frame holds around its application bytes.

    `apl` starts after the TPL header (after the CI when there is none); for compact CIs
    (73, 79, 7B) it starts at the format signature, after the 2F2F of a decrypted block. When
    the ELL hides the TPL and no key opens it, `tpl` holds the ELL's CI.
    """

    c_field: int
    link_address: Address
    ell: Ell | None
    afl: Afl | None
    tpl: TplHeader
    security: SecurityInfo
    apl: bytes
    compact: bool
    frame: bytes  # the CRC-stripped frame as sent, L at offset 0
    link_format: str  # "A", "B" or "none": the link CRCs the frame arrived with

    @property
    def address(self) -> Address:
        """The meter: a long TPL header's identity wins over the DLL's."""
        return self.tpl.address or self.link_address


def _with_ell(info: SecurityInfo, ell: Ell | None, ell_decrypted: bool) -> SecurityInfo:
    """Fold the ELL's AES-CTR (PROTOCOL_NOTES §5.2) into the TPL's security info."""
    if ell is None or ell.encryption != ENC_AES_CTR:
        return info
    if info.encrypted and ell_decrypted:
        return replace(info, layer="ell+tpl")
    if info.mode != 0:
        return info
    return SecurityInfo(mode=0, encrypted=ell_decrypted, decrypted=ell_decrypted, layer="ell")


MANUFACTURER_SECURITY_MODES = 16


def open_wmbus(frame: bytes, key: bytes | None, *, link_format: str | None = None) -> Envelope:
    """Open a frame from its L-field, with or without link CRCs, down to the APL bytes.

    `link_format` ("A", "B" or "none") skips the detection of strip_crcs when the source is
    known; a USB receiver's stripped frame then cannot be mistaken for format B (about one
    frame in 65536 ends with bytes that look like a format-B CRC).
    """
    stripped, found_format = strip_crcs(frame, expect=link_format)
    c_field, link_address = parse_dll(stripped)
    # `work` is the frame with any ELL-encrypted part replaced by its plaintext, so that the
    # offsets below stay those of the stripped frame.
    work = stripped
    pos = FIRST_BLOCK
    ell: Ell | None = None
    afl: Afl | None = None
    ell_decrypted = False

    def header(tpl: TplHeader, security: SecurityInfo) -> Envelope:
        """What is known without the key, for MissingKeyError (DESIGN.md §9: raw frames keep
        their meter)."""
        return Envelope(
            c_field, link_address, ell, afl, tpl, security, b"", False, stripped, found_format
        )

    if pos < len(work) and work[pos] in ELL_LAYOUTS:
        try:
            opened = open_ell(stripped, pos, key)
        except MissingKeyError as exc:
            ell = parse_ell(stripped, pos)[0]
            info = SecurityInfo(mode=0, encrypted=True, decrypted=False, layer="ell")
            raise MissingKeyError(
                exc.message,
                offset=exc.offset,
                data=stripped,
                header=header(TplHeader(ci=ell.ci), info),
            ) from None
        ell = opened.ell
        ell_decrypted = opened.encrypted
        work = stripped[: opened.offset] + opened.payload
        pos = opened.offset
    if pos < len(work) and work[pos] == CI_AFL:
        afl, pos = parse_afl(work, pos)
    if pos >= len(work):
        raise FrameError("frame ends before the TPL CI", offset=pos, data=stripped)
    ci = work[pos]
    if ci in MANUFACTURER_CIS:
        info = _with_ell(_NO_SECURITY, ell, ell_decrypted)
        return Envelope(
            c_field,
            link_address,
            ell,
            afl,
            TplHeader(ci=ci),
            info,
            work[pos + 1 :],
            False,
            stripped,
            found_format,
        )
    if ci not in TPL_CIS:
        raise UnsupportedError(f"CI {ci:02x} is not supported", offset=pos, data=stripped)
    tpl, payload_offset = parse_tpl(work, pos)
    if tpl.security_mode >= MANUFACTURER_SECURITY_MODES:
        # Modes 16-31 are the maker's own (EN 13757-7 Table 19): hand the payload on as it is,
        # so a profile hook can open it; the decoder refuses it when no hook does.
        info = SecurityInfo(mode=tpl.security_mode, encrypted=True, decrypted=False)
        if not work.startswith(MARKER, payload_offset):
            return Envelope(
                c_field,
                link_address,
                ell,
                afl,
                tpl,
                info,
                work[payload_offset:],
                False,
                stripped,
                found_format,
            )
    try:
        info, apl = open_tpl_security(
            work,
            tpl,
            tpl_offset=pos,
            payload_offset=payload_offset,
            address=tpl.address if ci in CI_LONG else link_address,
            key=key,
            afl=afl,
        )
    except MissingKeyError as exc:
        info = SecurityInfo(mode=tpl.security_mode, encrypted=True, decrypted=False)
        raise MissingKeyError(
            exc.message, offset=exc.offset, data=stripped, header=header(tpl, info)
        ) from None
    return Envelope(
        c_field,
        link_address,
        ell,
        afl,
        tpl,
        _with_ell(info, ell, ell_decrypted),
        apl,
        ci in COMPACT_CIS,
        stripped,
        found_format,
    )


def open_mbus_payload(
    ci: int, data: bytes, key: bytes | None
) -> tuple[TplHeader, SecurityInfo, bytes]:
    """The TPL header, security and APL bytes of a wired M-Bus long frame's user data.

    `data` is what follows the CI (PROTOCOL_NOTES §2.1: CI 72 with the long header, 7A short, 78
    none). Mode 5 takes M and A from the long header; without one it cannot build its IV. A
    MissingKeyError carries the TplHeader as its header.
    """
    if ci not in CI_WIRED:
        raise UnsupportedError(f"CI {ci:02x} is not supported on wired M-Bus", offset=0)
    tpdu = bytes([ci]) + bytes(data)
    tpl, payload_offset = parse_tpl(tpdu, 0)
    try:
        info, apl = open_tpl_security(
            tpdu,
            tpl,
            tpl_offset=0,
            payload_offset=payload_offset,
            address=tpl.address,
            key=key,
            afl=None,
        )
    except MissingKeyError as exc:
        raise MissingKeyError(exc.message, offset=exc.offset, data=tpdu, header=tpl) from None
    return tpl, info, apl
