"""Loading meter profiles from files: the I/O half of decoders.profile and decoders.modbus_map."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from decoders.modbus_map import RegisterMap, parse_register_map
from decoders.profile import MeterProfile, ProfileSet, parse_profile
from metergate.errors import ConfigError


def builtin_profile_texts() -> list[tuple[str, str]]:
    """(name, TOML text) of every wM-Bus/M-Bus profile shipped in decoders/profiles/."""
    folder = resources.files("decoders") / "profiles"
    return sorted(
        (f"decoders/profiles/{entry.name}", entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    )


def load_profiles(extra: list[Path] | None = None) -> ProfileSet:
    profiles: list[MeterProfile] = [
        parse_profile(text, name) for name, text in builtin_profile_texts()
    ]
    for path in extra or []:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read profile: {exc.strerror}", path=str(path)) from None
        profiles.append(parse_profile(text, str(path)))
    return ProfileSet(tuple(profiles))


def builtin_register_maps() -> dict[str, RegisterMap]:
    """The Modbus register maps shipped in decoders/profiles/modbus/, by model name."""
    folder = resources.files("decoders") / "profiles" / "modbus"
    maps = [
        parse_register_map(
            entry.read_text(encoding="utf-8"), f"decoders/profiles/modbus/{entry.name}"
        )
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    ]
    return {register_map.model: register_map for register_map in maps}


def load_register_map(name_or_path: str) -> RegisterMap:
    """A shipped register map by model name, or a user's profile file by path."""
    builtin = builtin_register_maps()
    if name_or_path in builtin:
        return builtin[name_or_path]
    path = Path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        known = ", ".join(sorted(builtin))
        raise ConfigError(
            f"no shipped register map of that name ({known}) and the file cannot be read:"
            f" {exc.strerror}",
            path=name_or_path,
        ) from None
    return parse_register_map(text, str(path))
