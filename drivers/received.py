"""What every wM-Bus receiver framer hands out: one radio frame and what the receiver said of it.

The iM871A, the AMB8465 and rtl_wmbus all deliver frames with the link-layer CRCs already removed
(PROTOCOL_NOTES §1.7); the framers put the L-field back at offset 0 where a receiver leaves it
out, so `frame` is always the "stripped" form the decoders take.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from metergate.errors import FrameError

# L C M(2) A(6): the first block of every wM-Bus frame (EN 13757-4 §9.1.2, PROTOCOL_NOTES §1.1).
MIN_FRAME = 10
MAX_FRAME = 256  # L is one byte


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """A CRC-stripped wM-Bus frame, L at offset 0, with the receiver's side information.

    `rssi_dbm` is None when the receiver gives no signal level that converts to dBm (rtl_wmbus's
    levels do not: PROTOCOL_NOTES §9.3). `device_time` is receiver-specific: the iM871A's
    32-bit timestamp as sent, POSIX seconds (UTC) of the rtl_wmbus host for rtl_wmbus, None for
    the AMB8465. `link_mode` is the mode the receiver reports ("T1", "C1", "S1") or the mode it
    was configured for when the framer was told, else None.
    """

    frame: bytes
    rssi_dbm: Decimal | None
    device_time: int | float | None
    link_mode: str | None


def check_stripped(frame: bytes) -> None:
    """A stripped frame: the first block complete and L counting every byte after itself."""
    if not MIN_FRAME <= len(frame) <= MAX_FRAME:
        raise FrameError(
            f"a wM-Bus frame holds {MIN_FRAME} to {MAX_FRAME} bytes, not {len(frame)}",
            offset=0,
            data=frame,
        )
    if frame[0] != len(frame) - 1:
        raise FrameError(
            f"L = {frame[0]} but {len(frame) - 1} bytes follow it", offset=0, data=frame
        )
