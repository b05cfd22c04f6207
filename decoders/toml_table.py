"""Reading profile files (TOML) so that every error names the file and the key.

A profile is configuration: a mistake in it is a ConfigError with `path` the file and `location`
the key's full path (`fields[3].type`), or the line of a syntax error. Unknown keys are errors
too, so a typo is never silently ignored. Pure: the caller reads the file and passes its text.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal, InvalidOperation
from typing import NoReturn

from metergate.errors import ConfigError

_MISSING = object()
_SNAKE_CASE = re.compile(r"[a-z][a-z0-9_]*\Z")


def load_toml(text: str, source: str) -> TomlTable:
    """The document's top-level table; a syntax error names its line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError carries the position only in its message.
        line = re.search(r"line (\d+)", str(exc))
        location = f"line {line.group(1)}" if line else None
        raise ConfigError(f"not valid TOML: {exc}", path=source, location=location) from None
    return TomlTable(doc, source, "")


class TomlTable:
    """A TOML table being read; `where` is its own path inside the document."""

    def __init__(self, value: object, source: str, where: str) -> None:
        self.source = source
        self.where = where
        if not isinstance(value, dict):
            self.fail("", "must be a table")
        self.doc: dict[str, object] = value

    def at(self, key: str) -> str:
        return ".".join(part for part in (self.where, key) if part)

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(message, path=self.source, location=self.at(key))

    def known(self, allowed: frozenset[str]) -> None:
        for key in sorted(set(self.doc) - allowed):
            self.fail(key, f"unknown key {key!r}")

    def get(self, key: str, default: object = _MISSING) -> object:
        value = self.doc.get(key, default)
        if value is _MISSING:
            self.fail(key, f"missing {key!r}")
        return value

    def text(self, key: str, default: object = _MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"{key!r} must be a string")
        return value

    def choice(self, key: str, choices: frozenset[str], default: object = _MISSING) -> str:
        value = self.text(key, default)
        if value not in choices:
            self.fail(key, f"unknown {key} {value!r} (one of {', '.join(sorted(choices))})")
        return value

    def name(self, key: str) -> str:
        value = self.text(key)
        if not _SNAKE_CASE.match(value):
            self.fail(key, f"{value!r} is not a snake_case name")
        return value

    def integer(self, key: str, low: int, high: int, default: object = _MISSING) -> int:
        value = self.get(key, default)
        # TOML booleans load as bool, which Python counts as int.
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"{key!r} must be an integer from {low} to {high}")
        return value

    def decimal(self, key: str, default: object = _MISSING) -> Decimal:
        """A finite decimal written as a string: "0.001" stays exact, a TOML float would not."""
        value = self.get(key, default)
        if isinstance(value, float):
            self.fail(key, f'write {value!r} as a string ("{value!r}"): a TOML float is not exact')
        try:
            number = Decimal(value) if isinstance(value, str) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            self.fail(key, f'{value!r} is not a decimal string such as "0.001"')
        return number

    def array(self, key: str) -> list[object]:
        value = self.get(key, [])
        if not isinstance(value, list):
            self.fail(key, f"{key!r} must be a list")
        return value

    def tables(self, key: str) -> list[TomlTable]:
        """An array of tables (`[[key]]`), each knowing its path `key[i]`."""
        return [
            TomlTable(item, self.source, f"{self.at(key)}[{i}]")
            for i, item in enumerate(self.array(key))
        ]

    def table(self, key: str) -> TomlTable:
        """A sub-table; an absent one reads as empty."""
        return TomlTable(self.get(key, {}), self.source, self.at(key))
