"""Secondary addresses: their printed form, and the search that finds every meter on a bus.

A secondary address is the 8 bytes a long header starts with, ID, M-field, version and medium
(EN 13757-3 §6, CI 72); a select frame compares them with a mask in which F digits match
anything (PROTOCOL_NOTES §8.4). The search narrows wildcards digit by digit until each meter
answers alone; MbusMaster.scan_secondary runs it, MbusMaster holds the conversation (the
exchanges, FCB and readouts) and this module the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from decoders.mbus_link import (
    ADDRESS_BROADCAST,
    ADDRESS_NETWORK_LAYER,
    Ack,
    Collision,
    LongFrame,
    NoReply,
    Reply,
    SecondaryAddress,
    parse_frame,
    select_secondary,
    snd_nke,
)
from metergate.errors import DecodeError

if TYPE_CHECKING:
    from drivers.mbus_master import MbusMaster, Readout

ID_DIGITS = "0123456789"  # identification numbers are BCD
HEX_DIGITS = "0123456789ABCDE"  # F is the wildcard: it cannot be asked for on its own
# The order in which the search fixes the 16 digits of a secondary address (positions in its
# printed form: ID, M-field, version, medium). The ID's last digits first: meters of one
# batch have consecutive serials, so its first digits tell them apart last.
SEARCH_ORDER = (7, 6, 5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 13, 12, 15, 14)


def secondary_text(address: SecondaryAddress) -> str:
    """The 16 hex digits M-Bus tools print: ID, M-field, version, medium (F = any)."""
    raw = address.to_bytes()
    return f"{address.id}{int.from_bytes(raw[4:6], 'little'):04X}{raw[6]:02X}{raw[7]:02X}".upper()


def parse_secondary(text: str) -> SecondaryAddress:
    """An ID of 8 digits, or the 16 digits of secondary_text; F or ? are wildcard digits."""
    digits = text.strip().upper().replace("?", "F")
    if len(digits) == 8:
        digits += "F" * 8
    if len(digits) != 16 or any(c not in "0123456789ABCDEF" for c in digits):
        raise DecodeError(f"a secondary address is 8 or 16 hex digits, not {text!r}")
    return SecondaryAddress(
        digits[:8], int(digits[8:12], 16), int(digits[12:14], 16), int(digits[14:16], 16)
    )


def secondary_of(frame: bytes) -> SecondaryAddress | None:
    """The long header's ID, M-field, version and medium: the same 8 bytes, in the same order,
    as a select frame's mask (EN 13757-3 §6, CI 72)."""
    parsed = parse_frame(frame)
    if isinstance(parsed, LongFrame) and parsed.ci == 0x72 and len(parsed.data) >= 8:
        return SecondaryAddress.from_bytes(parsed.data[:8])
    return None


@dataclass(slots=True)
class SecondaryScan:
    found: list[Readout] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # masks that stayed ambiguous
    probes: int = 0


class SecondarySearch:
    """Every meter on `master`'s bus, by secondary address (PROTOCOL_NOTES §8.4); run() once.

    Selects with a wildcard mask; where several meters answer, fixes the next digit to each
    value in turn: 0-9 on the ID (`id_digits` adds A-E for non-BCD serials), 0-E on the
    M-field, version and medium, which use A-F as ordinary digits. A meter that answers alone
    is read once (REQ_UD2 to 253) for its full address, or completely with `readout`. Meters
    that stay colliding with every digit fixed (identical addresses) are reported in
    `unresolved`.
    """

    def __init__(
        self, master: MbusMaster, *, id_digits: str = ID_DIGITS, readout: bool = False
    ) -> None:
        self.master = master
        self.id_digits = id_digits
        self.readout = readout
        self.scan = SecondaryScan()

    def run(self) -> SecondaryScan:
        master = self.master
        master.exchange(snd_nke(ADDRESS_BROADCAST), listen=True)
        master.exchange(snd_nke(ADDRESS_NETWORK_LAYER), listen=True)
        mask = "F" * 16
        self._resolve(mask, 0, self._probe(mask))
        master.exchange(snd_nke(ADDRESS_NETWORK_LAYER), listen=True)
        return self.scan

    def _probe(self, mask: str) -> Reply:
        self.scan.probes += 1
        return self.master.exchange(select_secondary(parse_secondary(mask)), listen=True)

    def _resolve(self, mask: str, depth: int, reply: Reply) -> None:
        scan = self.scan
        if isinstance(reply, NoReply):
            return
        if isinstance(reply, Ack):
            identified = self.master.read_selected(
                complete=self.readout, what=f"the meter selected by {mask}"
            )
            if identified is None:
                scan.unresolved.append(mask)
                return
            if not isinstance(identified, Collision):
                scan.found.append(identified)
                return
        if depth == len(SEARCH_ORDER):
            scan.unresolved.append(mask)
            return
        position = SEARCH_ORDER[depth]
        answered = False
        for digit in self.id_digits if position < 8 else HEX_DIGITS:
            child = mask[:position] + digit + mask[position + 1 :]
            child_reply = self._probe(child)
            answered = answered or not isinstance(child_reply, NoReply)
            self._resolve(child, depth + 1, child_reply)
        if not answered:
            # Several meters answer the mask but none a digit here: they all have F (or a digit
            # not tried) in this place. Keep it open and narrow down on the next one.
            self._resolve(mask, depth + 1, reply)
