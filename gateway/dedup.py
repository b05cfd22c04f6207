"""Dropping repeated wireless M-Bus transmissions (issue 4: the duplicate filter).

One telegram can reach the gateway several times: several receivers hear it, a repeater relays
it, a meter repeats itself. The copies carry the same meter, the same access number and the same
bytes after the link header; a repeater may change the C-field and sets the hop and repeated
bits of the ELL communication control (EN 13757-4 §13.2.12.4: H and R are the bits repeaters
handle), so those are no part of the comparison.

Polled data has no such copies: a wired M-Bus or Modbus answer is the reply to one request of
ours, and two polls that return the same bytes are two readings at two times. Callers pass
`access_no=None` for them, and the filter then never calls a frame a duplicate and keeps no
entry for it. The same goes for a wM-Bus frame that carries no access number (no ELL and a TPL
without header, CI 78/79): nothing tells a repeat from a meter saying the same thing again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime, timedelta

from decoders.afl import CI_AFL, parse_afl
from decoders.ell import ELL_LAYOUTS
from decoders.tpl import CI_LONG, CI_SHORT, parse_tpl
from decoders.wmbus_link import parse_dll
from metergate.errors import DecodeError

DEFAULT_WINDOW = timedelta(minutes=5)
# About 180 bytes an entry (18 MB for 100,000, measured with tracemalloc): 10,000 meters
# sending every 30 s fill a 5-minute window with 100,000.
DEFAULT_MAX_ENTRIES = 100_000
_FIRST_BLOCK = 10  # L C M(2) A(6): the link header of a stripped frame (EN 13757-4 §9.1.2)
_REPEATER_CC_BITS = 0x12  # ELL CC bits H (hop) and R (repeated access), EN 13757-4 §13.2.12.4
_DIGEST_SIZE = 16


def wmbus_repeat_key(frame: bytes) -> tuple[str, int | None, bytes]:
    """The link meter id, access number and repeat-invariant payload of a CRC-stripped wM-Bus
    frame, for DuplicateFilter.is_duplicate.

    The access number is the ELL's when there is an ELL (Kamstrup's compact frames carry no
    other), else the TPL header's (after an AFL, if any), else None. Raises DecodeError when the
    frame is too short to have a link header.
    """
    _, address = parse_dll(frame)
    payload = frame[_FIRST_BLOCK:]
    ci = payload[0] if payload else None
    if ci in ELL_LAYOUTS and len(payload) >= 3:
        cc = payload[1] & ~_REPEATER_CC_BITS
        return address.meter_id, payload[2], payload[:1] + bytes([cc]) + payload[2:]
    return address.meter_id, _tpl_access_no(frame), payload


def _tpl_access_no(frame: bytes) -> int | None:
    pos = _FIRST_BLOCK
    try:
        if frame[pos] == CI_AFL:
            pos = parse_afl(frame, pos)[1]
        if frame[pos] in CI_SHORT or frame[pos] in CI_LONG:
            return parse_tpl(frame, pos)[0].access_no
    except (DecodeError, IndexError):
        return None
    return None


class DuplicateFilter:
    """Remembers what it was shown for `window` and says whether a frame is a repeat.

    Memory is bounded: beyond `max_entries` the oldest entries go first (a repeat of an evicted
    frame then passes as new, which costs a redundant message, never a lost one). Times are the
    caller's clock; a repeat is one within `window` of the first copy either way, so a clock
    stepped back does not hold frames back for long.
    """

    def __init__(
        self, window: timedelta = DEFAULT_WINDOW, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if window <= timedelta(0):
            raise ValueError(f"the duplicate window must be positive, not {window}")
        if max_entries < 1:
            raise ValueError(f"the duplicate filter needs room for an entry, not {max_entries}")
        self.window = window
        self.max_entries = max_entries
        self.evicted = 0  # entries dropped for room before their window ended
        self._window_s = window.total_seconds()
        # digest -> POSIX time of the first copy, oldest first
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def is_duplicate(
        self, meter_id: str, access_no: int | None, frame_payload: bytes, now: datetime
    ) -> bool:
        """True for a repeat within the window of a frame already seen; records a first copy.

        `frame_payload` is what follows the link header (wmbus_repeat_key gives it);
        `access_no` None (polls) is never a duplicate.
        """
        if access_no is None:
            return False
        at = now.timestamp()
        self._expire(at)
        digest = hashlib.blake2b(
            b"%s\x00%d\x00%s" % (meter_id.encode(), access_no, frame_payload),
            digest_size=_DIGEST_SIZE,
        ).digest()
        first = self._seen.get(digest)
        if first is not None and abs(at - first) <= self._window_s:
            return True
        self._seen[digest] = at
        self._seen.move_to_end(digest)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
            self.evicted += 1
        return False

    def _expire(self, at: float) -> None:
        """Drop entries whose window has passed, from the oldest until one has not."""
        seen = self._seen
        while seen:
            oldest, first = next(iter(seen.items()))
            if at - first <= self._window_s:
                return
            del seen[oldest]
