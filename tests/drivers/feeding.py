"""Ways of handing a byte stream to a framer: whole, byte by byte, in given chunks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class Framer(Protocol[T_co]):
    def feed(self, data: bytes) -> Sequence[T_co]: ...


def whole(framer: Framer[T_co], data: bytes) -> list[T_co]:
    return list(framer.feed(data))


def byte_by_byte(framer: Framer[T_co], data: bytes) -> list[T_co]:
    out: list[T_co] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    return out


def in_chunks(framer: Framer[T_co], data: bytes, cuts: Sequence[int]) -> list[T_co]:
    """Feeds `data` split at the positions in `cuts` (any order, out-of-range ones ignored)."""
    out: list[T_co] = []
    last = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        out += framer.feed(data[last:cut])
        last = cut
    out += framer.feed(data[last:])
    return out


Feed = Callable[[Any, bytes], list[Any]]
FEEDERS: tuple[Feed, ...] = (whole, byte_by_byte)
