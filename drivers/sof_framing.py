"""Splitting a byte stream into frames that open with a start byte, resynchronising on junk.

The USB receivers' serial protocols (iM871A HCI, AMB8465 command mode) frame alike: a start
byte, a header that gives the length, a payload, a checksum. A serial line loses and garbles
bytes, and the start byte may occur inside a frame, so a framer cannot trust the first start
byte it sees: a candidate whose header is impossible, or whose checksum fails, costs one byte,
and the search for the next start byte goes on from the byte after it. A real frame hidden
behind a false start is so still found.
"""

from __future__ import annotations

from typing import Generic, TypeVar

M = TypeVar("M")


class SofFramer(Generic[M]):
    """Subclasses give the start byte, the header size and how to read a header, check a
    frame and make a message of it. Counters: `frames` found, `discarded_bytes` skipped while
    resynchronising, `bad_checksums` among the candidates."""

    sof: int
    header: int

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.frames = 0
        self.discarded_bytes = 0
        self.bad_checksums = 0

    def _frame_size(self, header: bytes) -> int | None:
        """The whole frame's size by its header (start byte included); None: a false start."""
        raise NotImplementedError

    def _checksum_ok(self, frame: bytes) -> bool:
        raise NotImplementedError

    def _message(self, frame: bytes) -> M:
        raise NotImplementedError

    def feed(self, data: bytes) -> list[M]:
        """The messages completed by `data`; an incomplete frame waits for the next feed."""
        buf = self._buffer
        buf += data
        out: list[M] = []
        pos = 0
        while True:
            start = buf.find(self.sof, pos)
            if start < 0:
                self.discarded_bytes += len(buf) - pos
                pos = len(buf)
                break
            self.discarded_bytes += start - pos
            pos = start
            if len(buf) - pos < self.header:
                break
            total = self._frame_size(bytes(buf[pos : pos + self.header]))
            if total is None:
                self.discarded_bytes += 1
                pos += 1
                continue
            if len(buf) - pos < total:
                break
            frame = bytes(buf[pos : pos + total])
            if not self._checksum_ok(frame):
                self.bad_checksums += 1
                self.discarded_bytes += 1
                pos += 1
                continue
            out.append(self._message(frame))
            self.frames += 1
            pos += total
        del buf[:pos]
        return out
