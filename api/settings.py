"""What the API is configured with: database, time zone, customers' reading window, limits."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ingest.boundaries import DEFAULT_ZONE
from metergate.errors import ConfigError

_WINDOW = re.compile(r"(\d{1,2})-(\d{1,2})")

# JSON bodies are small; a meters CSV of a whole utility is not.
MAX_BODY_BYTES = 64 * 1024
MAX_IMPORT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReadingWindow:
    """The days of the month on which customers report their readings (Latvian utilities: the
    25th to the 28th), inclusive, in the utility's time zone."""

    first_day: int = 25
    last_day: int = 28

    def __post_init__(self) -> None:
        # 28 is the last day every month has, so the window exists in February too.
        if not 1 <= self.first_day <= self.last_day <= 28:
            raise ValueError("a reading window is days 1-28 of the month, first <= last")

    def contains(self, day: int) -> bool:
        return self.first_day <= day <= self.last_day

    def __str__(self) -> str:
        return f"{self.first_day}-{self.last_day}"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    zone: ZoneInfo = DEFAULT_ZONE
    reading_window: ReadingWindow = field(default_factory=ReadingWindow)
    max_body_bytes: int = MAX_BODY_BYTES
    max_import_bytes: int = MAX_IMPORT_BYTES
    pool_min_size: int = 1
    pool_max_size: int = 10
    # A request waits this long for a database connection before it is answered 503.
    pool_timeout_s: float = 10.0
    # A manual reading that rises more than this many times the meter's usual consumption for
    # the days since its last reading needs a person's confirmation.
    manual_rise_factor: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from DATABASE_URL, METERGATE_TZ, METERGATE_READING_WINDOW ("25-28"),
        METERGATE_API_MAX_BODY and METERGATE_API_MAX_IMPORT (bytes)."""
        env = os.environ if environ is None else environ
        url = env.get("DATABASE_URL", "").strip()
        if not url:
            raise ConfigError("DATABASE_URL is not set", location="DATABASE_URL")
        zone_name = env.get("METERGATE_TZ", DEFAULT_ZONE.key)
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {zone_name[:60]!r}", location="METERGATE_TZ"
            ) from None
        return cls(
            database_url=url,
            zone=zone,
            reading_window=_window(env.get("METERGATE_READING_WINDOW", "25-28")),
            max_body_bytes=_size(env, "METERGATE_API_MAX_BODY", MAX_BODY_BYTES),
            max_import_bytes=_size(env, "METERGATE_API_MAX_IMPORT", MAX_IMPORT_BYTES),
        )


def _window(text: str) -> ReadingWindow:
    match = _WINDOW.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError
        return ReadingWindow(int(match[1]), int(match[2]))
    except ValueError:
        raise ConfigError(
            f"a reading window is FIRST-LAST, days 1-28 (e.g. 25-28), got {text[:20]!r}",
            location="METERGATE_READING_WINDOW",
        ) from None


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None:
        return default
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"a size in bytes, got {text[:20]!r}", location=name)
    return int(text)
