"""Frames in, telegrams out: the one entry point of the decoders.

`Decoder` holds the state a collector keeps between telegrams (compact-frame formats learned
from full frames, the meter profiles it was given); it does no I/O. Wired M-Bus long frames
(`68 L L 68 ...`) and wireless M-Bus frames (from the L-field, with or without link CRCs) are told
apart by their framing.
"""

from __future__ import annotations

from decoders.compact import CompactFormats, expand_compact
from decoders.hooks import HOOKS, HookInput
from decoders.mbus_fixed import parse_fixed
from decoders.mbus_link import LongFrame, parse_frame
from decoders.profile import MeterProfile, ProfileSet
from decoders.records import parse_records
from decoders.telegram import Address, DataRecord, SecurityInfo, Status, Telegram, TplHeader
from decoders.wmbus_frame import Envelope, open_mbus_payload, open_wmbus
from metergate.errors import DecryptionError, FrameError, MissingKeyError, UnsupportedError

# EN 13757-3 §6.2 / EN 13757-7 §7.5.6: the status byte's standard bits.
_STATUS_BITS = ((0x04, "low_battery"), (0x08, "permanent_error"), (0x10, "temporary_error"))
_STATUS_CODES = {1: "busy", 2: "application_error", 3: "alarm"}

CI_APPLICATION_ERROR = 0x70
CI_FIXED_DATA = (0x73, 0x77)  # EN 13757-3 (1999 and earlier): fixed data structure


def is_wired_long_frame(frame: bytes) -> bool:
    return (
        len(frame) >= 9
        and frame[0] == 0x68
        and frame[3] == 0x68
        and frame[1] == frame[2]
        and frame[-1] == 0x16
    )


def standard_flags(status: int | None) -> set[str]:
    if not status:
        return set()
    flags = {name for bit, name in _STATUS_BITS if status & bit}
    if status & 0x03:
        flags.add(_STATUS_CODES[status & 0x03])
    return flags


class Decoder:
    def __init__(
        self,
        profiles: ProfileSet | None = None,
        compact_formats: CompactFormats | None = None,
    ) -> None:
        self.profiles = profiles or ProfileSet()
        self.compact_formats = compact_formats or CompactFormats()
        for profile in self.profiles.profiles:
            for fmt in profile.compact_formats:
                for manufacturer in profile.manufacturers:
                    self.compact_formats.declare(manufacturer, fmt)

    def decode(
        self, frame: bytes, key: bytes | None = None, *, link_format: str | None = None
    ) -> Telegram:
        """Decode one frame. `link_format` ("A", "B" or "none") says which link CRCs a wM-Bus
        frame carries when the source knows it (USB receivers deliver "none"); without it they
        are detected, and a format-B frame with a broken CRC cannot be told from a stripped one.
        """
        if not frame:
            raise FrameError("empty frame", offset=0, data=frame)
        if link_format is None and is_wired_long_frame(frame):
            return self._decode_mbus(frame, key)
        return self._decode_wmbus(frame, key, link_format)

    def _decode_wmbus(self, frame: bytes, key: bytes | None, link_format: str | None) -> Telegram:
        envelope = self._open_wmbus(frame, key, link_format)
        address = envelope.tpl.address or envelope.link_address
        profile = self.profiles.find(address)
        tpl = envelope.tpl
        security = envelope.security
        link_address = envelope.link_address
        flags: set[str] = set()
        result = None
        if profile is not None and profile.hook is not None:
            result = HOOKS[profile.hook](
                HookInput(envelope.frame, tpl.ci, envelope.apl, address, key)
            )
        if result is not None:
            records, more = result.records, False
            flags |= result.flags
            security = result.security or security
            link_address = result.address or link_address
        elif 0xA0 <= tpl.ci <= 0xB7 or tpl.ci == 0x71:
            raise UnsupportedError(
                f"CI {tpl.ci:02x} carries a manufacturer-specific payload and no profile for"
                f" {address.meter_id} (version {address.version}, type {address.device_type})"
                " knows it",
                data=frame,
            )
        elif security.encrypted and not security.decrypted:
            raise UnsupportedError(
                f"security mode {security.mode} is manufacturer specific and no profile for"
                f" {address.meter_id} (version {address.version}, type {address.device_type})"
                " opens it",
                data=frame,
            )
        else:
            apl = envelope.apl
            if envelope.compact:
                apl = expand_compact(apl, self.compact_formats, address)
            block = parse_records(apl)
            if not envelope.compact:
                self.compact_formats.learn(address, block.format_bytes)
            records, more = block.records, block.more_records_follow
        return self._finish(
            "wmbus",
            envelope.c_field,
            link_address=link_address,
            primary_address=None,
            tpl=tpl,
            security=security,
            records=records,
            more=more,
            profile=profile,
            flags=flags,
        )

    def _open_wmbus(self, frame: bytes, key: bytes | None, link_format: str | None) -> Envelope:
        """Open the envelope; without a key, try the keys the meter's profile says its maker
        ships by default (publicly known, e.g. Diehl's), as a collector would."""
        try:
            return open_wmbus(frame, key, link_format=link_format)
        except MissingKeyError as missing:
            header = missing.header
            if key is not None or not isinstance(header, Envelope):
                raise
            profile = self.profiles.find(header.address)
            for default_key in profile.default_keys if profile else ():
                try:
                    return open_wmbus(frame, default_key, link_format=link_format)
                except DecryptionError:
                    continue
            raise

    def _decode_mbus(self, frame: bytes, key: bytes | None) -> Telegram:
        parsed = parse_frame(frame)
        if not isinstance(parsed, LongFrame):
            raise UnsupportedError("a link-layer frame without application data", data=frame)
        ci = parsed.ci
        if ci == CI_APPLICATION_ERROR:
            code = parsed.data[0] if parsed.data else 0
            return self._finish(
                "mbus",
                parsed.c,
                link_address=None,
                primary_address=parsed.a,
                tpl=TplHeader(ci=ci),
                security=SecurityInfo(mode=0, encrypted=False, decrypted=False),
                records=(),
                more=False,
                profile=None,
                flags={"application_error"},
                application_error=code,
            )
        if ci in CI_FIXED_DATA:
            fixed = parse_fixed(parsed.data, msb_first=ci == 0x77)
            # The fixed structure names no manufacturer: "@@@" is what an M-field of 0 decodes to.
            identity = Address("@@@", fixed.id, 0, fixed.device_type or 0x0F, 0)
            return self._finish(
                "mbus",
                parsed.c,
                link_address=identity,
                primary_address=parsed.a,
                tpl=TplHeader(ci=ci, access_no=fixed.access_no, status=fixed.status),
                security=SecurityInfo(mode=0, encrypted=False, decrypted=False),
                records=fixed.records,
                more=False,
                profile=None,
                flags=set(),
                status_is_standard=False,  # bits 0-1 there mean binary and stored counters
            )
        tpl, security, apl = open_mbus_payload(ci, parsed.data, key)
        block = parse_records(apl)
        profile = self.profiles.find(tpl.address) if tpl.address else None
        return self._finish(
            "mbus",
            parsed.c,
            link_address=None,
            primary_address=parsed.a,
            tpl=tpl,
            security=security,
            records=block.records,
            more=block.more_records_follow,
            profile=profile,
            flags=set(),
        )

    @staticmethod
    def _finish(
        protocol: str,
        c_field: int,
        *,
        link_address: Address | None,
        primary_address: int | None,
        tpl: TplHeader,
        security: SecurityInfo,
        records: tuple[DataRecord, ...],
        more: bool,
        profile: MeterProfile | None,
        flags: set[str],
        application_error: int | None = None,
        status_is_standard: bool = True,
    ) -> Telegram:
        if status_is_standard:
            flags |= standard_flags(tpl.status)
        if profile is not None:
            records = profile.apply(records)
            flags |= profile.status_flags(tpl.status, records)
        return Telegram(
            protocol=protocol,
            c_field=c_field,
            link_address=link_address,
            primary_address=primary_address,
            tpl=tpl,
            security=security,
            status=Status(tpl.status or 0, tuple(sorted(flags))),
            records=records,
            more_records_follow=more,
            application_error=application_error,
            profile=profile.model if profile else None,
        )
