"""Loading shipped and user profiles from files (the I/O half of decoders' profile parsing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metergate.errors import ConfigError
from metergate.profiles import builtin_register_maps, load_profiles, load_register_map


def test_every_shipped_profile_loads() -> None:
    assert any(p.model == "kamstrup-multical21" for p in load_profiles().profiles)
    assert "generic-magmeter" in builtin_register_maps()


def test_a_register_map_by_name_or_by_path(tmp_path: Path) -> None:
    assert load_register_map("generic-magmeter").model == "generic-magmeter"
    with pytest.raises(ConfigError) as missing:
        load_register_map(str(tmp_path / "nope.toml"))
    assert "nope.toml" in str(missing.value)
    broken = tmp_path / "broken.toml"
    broken.write_text('model = "x"\n[[fields]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as bad:
        load_register_map(str(broken))
    assert bad.value.path == str(broken)


def test_a_user_meter_profile_with_a_typo_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "meter.toml"
    path.write_text('model = "m"\n[detect]\nmanufacturers = ["ABC"]\nflgs = []\n', "utf-8")
    with pytest.raises(ConfigError) as error:
        load_profiles([path])
    assert error.value.path == str(path)
    assert "flgs" in str(error.value)
    with pytest.raises(ConfigError):
        load_profiles([tmp_path / "absent.toml"])
