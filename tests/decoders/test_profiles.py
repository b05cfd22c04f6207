"""Every meter profile's own test vectors, run through the Decoder with all built-in profiles.

The vectors live in the profile files (decoders/profiles/*.toml); each names its source (the
project's encoders or a PROTOCOL_NOTES.md worked example).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from decoders.decode import Decoder
from decoders.hooks import HOOKS
from decoders.profile import MeterProfile, ProfileSet, ProfileTest, parse_profile
from decoders.telegram import DataRecord, RecordValue
from metergate.profiles import builtin_profile_texts

PROFILES = tuple(parse_profile(text, name) for name, text in builtin_profile_texts())
CASES = [
    pytest.param(profile, test, id=f"{profile.model}-{index}")
    for profile in PROFILES
    for index, test in enumerate(profile.tests)
]


def _matches(value: RecordValue, expected: str) -> bool:
    if isinstance(value, Decimal):
        return value == Decimal(expected)
    if isinstance(value, (date, datetime)):
        return value.isoformat() == expected
    return value == expected


def _candidates(records: tuple[DataRecord, ...], label: str, storage: int) -> list[DataRecord]:
    return [r for r in records if label in (r.spec.name, r.quantity) and r.storage == storage]


def test_profiles_were_found() -> None:
    assert len(PROFILES) >= 10
    assert "kamstrup-multical21" in {p.model for p in PROFILES}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.model)
def test_every_profile_carries_vectors_and_a_known_hook(profile: MeterProfile) -> None:
    assert profile.tests, f"{profile.model} has no [[tests]]"
    assert profile.hook is None or profile.hook in HOOKS


def test_models_are_unique() -> None:
    models = [p.model for p in PROFILES]
    assert len(models) == len(set(models))


@pytest.mark.parametrize(("profile", "case"), CASES)
def test_profile_vector(profile: MeterProfile, case: ProfileTest) -> None:
    decoder = Decoder(ProfileSet(PROFILES))
    key = bytes.fromhex(case.key) if case.key else None
    telegram = decoder.decode(bytes.fromhex(case.telegram), key)
    assert telegram.profile == profile.model
    for label, storage, expected in case.expect:
        found = _candidates(telegram.records, label, storage)
        assert found, f"no record {label!r} at storage {storage}"
        assert any(_matches(r.value, expected) for r in found), (
            f"{label!r} storage {storage}: {[str(r.value) for r in found]} != {expected}"
        )
    if case.flags is not None:
        assert sorted(telegram.status.flags) == sorted(case.flags)
