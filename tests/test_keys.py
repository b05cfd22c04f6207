"""The keys file behind `--keys`: TOML `[keys]` of meter id = 32 hex digits, refused when group
or others can read it, and no key bytes (nor the text of a bad value) in any message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from metergate.errors import ConfigError
from metergate.keys import KeyRing, canonical_meter_id, load_keys, parse_keys

KEY_HEX = "28F64A24988064A079AA2C807D6102AE"  # PROTOCOL_NOTES §5.3, the Kamstrup example key
SECRET = "5EC2E75EC2E75EC2E75EC2E75EC2E7AA"


def write(tmp_path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "keys.toml"
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    os.chmod(path, mode)
    return path


def test_a_keys_file_maps_meter_ids_to_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'# keys of the Riga fleet\n[keys]\n"KAM-76348799" = "{KEY_HEX}"\n'
        f'"dme-2124589C" = "{SECRET.lower()}"\n',
    )
    keys = load_keys(path)
    assert len(keys) == 2
    assert keys["KAM-76348799"] == bytes.fromhex(KEY_HEX)
    assert keys.get("DME-2124589c") == bytes.fromhex(SECRET)  # any spelling finds it
    assert keys.get("KAM-00000000") is None
    assert keys.get("not an id") is None
    assert sorted(keys) == ["DME-2124589c", "KAM-76348799"]
    assert KEY_HEX not in repr(keys) and KEY_HEX.lower() not in repr(keys)


def test_an_empty_file_is_an_empty_key_ring(tmp_path: Path) -> None:
    assert len(load_keys(write(tmp_path, ""))) == 0
    assert len(load_keys(write(tmp_path, "[keys]\n"))) == 0


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o444])
def test_a_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, f'[keys]\n"KAM-76348799" = "{KEY_HEX}"\n', mode)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_keys(path)
    assert caught.value.path == str(path)
    assert KEY_HEX not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message", "location"),
    [
        (f'[keys]\n"KAM-76348799" = "{SECRET[:-1]}"\n', "32 hex digits", "keys.KAM-76348799"),
        (f'[keys]\n"KAM-76348799" = "{SECRET}00"\n', "32 hex digits", "keys.KAM-76348799"),
        (f'[keys]\n"KAM-76348799" = "{SECRET[:-1]}G"\n', "32 hex digits", "keys.KAM-76348799"),
        ('[keys]\n"KAM-76348799" = 1234\n', "32 hex digits", "keys.KAM-76348799"),
        (f'[keys]\n"KAM-7634879" = "{SECRET}"\n', "not a meter id", "keys.KAM-7634879"),
        (f'[keys]\n"12345678" = "{SECRET}"\n', "not a meter id", "keys.12345678"),
        (
            f'[keys]\n"KAM-1234567a" = "{SECRET}"\n"kam-1234567A" = "{SECRET}"\n',
            "a second key",
            "keys.kam-1234567A",
        ),
        (f'keys = "{SECRET}"\n', "must be a table", "keys"),
        (f'[meters]\n"KAM-76348799" = "{SECRET}"\n', r"only \[keys\]", None),
        (f'[keys]\n"KAM-76348799" = "{SECRET}\n', "not TOML", None),
        (f"[keys]\nKAM-76348799 = {SECRET}\n", "not TOML", None),
    ],
)
def test_bad_keys_files_are_config_errors_without_the_secret(
    tmp_path: Path, text: str, message: str, location: str | None
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_keys(path)
    assert caught.value.location == location
    assert caught.value.path == str(path)
    for secret in (SECRET, SECRET[:-1], SECRET[:16], SECRET.lower()[:16]):
        assert secret not in str(caught.value)


def test_a_missing_file_a_directory_and_binary_junk(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_keys(tmp_path / "missing.toml")
    os.chmod(tmp_path, 0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_keys(tmp_path)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_keys(write(tmp_path, b"\xff\xfe[keys]\n"))


@given(value=st.text(min_size=8, max_size=40))
@example(value="76348799")  # the meter's own digits, which the location names
def test_no_bad_value_ever_shows_in_the_message(value: str) -> None:
    document = '[keys]\n"KAM-76348799" = ' + '"' + value.replace("\\", "").replace('"', "") + '"\n'
    try:
        keys = parse_keys(document, path="keys.toml")
    except ConfigError as error:
        shown = value.replace("\\", "").replace('"', "").strip()
        # The message, not the location: that names the meter, whose digits a value may repeat.
        assert len(shown) < 8 or shown not in error.message
    else:
        assert len(keys) == 1


def test_meter_ids_and_key_rings_are_checked() -> None:
    assert canonical_meter_id(" kam-2124589C ") == "KAM-2124589c"
    assert canonical_meter_id("KAM-2124589") is None
    assert canonical_meter_id("KA-21245890") is None
    with pytest.raises(ValueError, match="16-byte"):
        KeyRing({"KAM-12345678": b"short"})
    with pytest.raises(ValueError, match="MFR-ID"):
        KeyRing({"12345678": bytes(16)})
