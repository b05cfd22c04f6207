"""Meter keys from a TOML file: `[keys]` then `"KAM-12345678" = "32 HEX DIGITS"` per meter.

The file holds secrets, so it is refused when its group or others may read it (as ssh refuses
a private key), and no message, repr or log line ever shows a key's bytes, nor the text of a
value that failed to parse (it may be most of a real key). Errors are ConfigError with the
file as path and the table entry as location.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

from metergate.errors import ConfigError

KEY_SIZE = 16  # AES-128 (EN 13757-7 security modes 5 and 7)
# DESIGN.md §2: "{MFR}-{id}", three manufacturer letters and the 8 hex digits of the ID.
_METER_ID = re.compile(r"([A-Za-z]{3})-([0-9A-Fa-f]{8})", re.ASCII)
_HEX_KEY = re.compile(r"[0-9A-Fa-f]{32}", re.ASCII)


def canonical_meter_id(text: str) -> str | None:
    """`MFR-id` as the decoders print it (letters upper case, hex digits lower case), or None
    when `text` is not a meter id."""
    match = _METER_ID.fullmatch(text.strip())
    if match is None:
        return None
    return f"{match[1].upper()}-{match[2].lower()}"


class KeyRing(Mapping[str, bytes]):
    """meter_id -> AES key. Looks up any spelling of a meter id; shows no key in its repr."""

    def __init__(self, keys: Mapping[str, bytes] | None = None) -> None:
        self._keys: dict[str, bytes] = {}
        for meter_id, key in (keys or {}).items():
            canonical = canonical_meter_id(meter_id)
            if canonical is None or len(key) != KEY_SIZE:
                raise ValueError("a key ring maps MFR-ID meter ids to 16-byte keys")
            self._keys[canonical] = bytes(key)

    def __getitem__(self, meter_id: str) -> bytes:
        canonical = canonical_meter_id(meter_id)
        if canonical is None:
            raise KeyError(meter_id)
        return self._keys[canonical]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"


def parse_keys(text: str, *, path: str | None = None) -> KeyRing:
    """The keys of a keys file's text."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib names the position and the kind of error, never the text around it.
        raise ConfigError(f"not TOML: {error}", path=path) from None
    extra = sorted(set(document) - {"keys"})
    if extra:
        raise ConfigError(f"unknown entries {extra[:5]}; only [keys] belongs here", path=path)
    table = document.get("keys", {})
    if not isinstance(table, dict):
        raise ConfigError("'keys' must be a table", path=path, location="keys")
    keys: dict[str, bytes] = {}
    for name, value in table.items():
        meter_id = canonical_meter_id(name)
        where = f"keys.{name[:40]}"
        if meter_id is None:
            raise ConfigError("not a meter id (MFR-12345678)", path=path, location=where)
        if meter_id in keys:
            raise ConfigError(f"a second key for {meter_id}", path=path, location=where)
        if not isinstance(value, str) or _HEX_KEY.fullmatch(value.strip()) is None:
            raise ConfigError("a key is a string of 32 hex digits", path=path, location=where)
        keys[meter_id] = bytes.fromhex(value.strip())
    return KeyRing(keys)


def load_keys(path: str | os.PathLike[str]) -> KeyRing:
    """The keys file at `path`; refused when group or others can read it (chmod 600)."""
    name = str(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError("not a regular file", path=name)
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            raise ConfigError(
                f"readable by group or others (mode {stat.S_IMODE(mode):04o}); the keys are"
                " secret: chmod 600 it",
                path=name,
            )
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", path=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=name) from None
    return parse_keys(text, path=name)
