"""`metergate decode` as a user runs it: a real subprocess, real pipes."""

from __future__ import annotations

import json
import subprocess
import sys

# Kamstrup MULTICAL 21, ELL AES-CTR (PROTOCOL_NOTES.md 5.3, from wmbusmeters tests/test_analyze.sh).
KAMSTRUP = "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24"
KAMSTRUP_KEY = "28F64A24988064A079AA2C807D6102AE"
# GWF MTKcoder, wired M-Bus long frame (PROTOCOL_NOTES.md 8.1, from the libmbus test frames).
GWF = "681B1B6808017207201800E61E35074C0000000C78072018000C16690200009616"


def run_decode(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metergate", "decode", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_stdin_lines_give_one_object_each_in_order_and_go_on_after_bad_ones() -> None:
    lines = [
        f"{KAMSTRUP} {KAMSTRUP_KEY}",
        "not-hex",
        "",
        GWF,
        f"{KAMSTRUP} 00112233445566778899AABBCCDDEEFF",
        KAMSTRUP,
        "68",
        f"{GWF} {KAMSTRUP_KEY} extra",
        f"{KAMSTRUP} ABCD",
    ]
    result = run_decode("--stdin", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == 8  # the blank line is skipped
    kam, bad_hex, gwf, wrong_key, no_key, short, extra, short_key = objects
    assert kam["meter_id"] == "KAM-76348799"
    assert kam["security"]["encrypted"] is True
    assert kam["security"]["decrypted"] is True
    total = next(r for r in kam["records"] if r["vif"] == "13" and r["storage"] == 0)
    assert (total["quantity"], total["unit"], total["value"]) == ("volume", "m3", "6.408")
    assert bad_hex["error"]["type"] == "DecodeError"
    assert gwf["protocol"] == "mbus"
    assert gwf["meter_id"] == "GWF-00182007"
    volume = next(r for r in gwf["records"] if r["quantity"] == "volume")
    assert volume["value"] == "269"
    assert wrong_key["error"]["type"] == "DecryptionError"
    assert no_key["error"]["type"] == "MissingKeyError"
    assert short["error"]["type"] in ("FrameError", "ChecksumError")
    assert extra["error"]["type"] == "DecodeError"
    assert short_key["error"]["type"] == "DecodeError"
    assert KAMSTRUP_KEY.lower() not in result.stdout.lower()


def test_frames_as_arguments_with_a_default_key() -> None:
    result = run_decode("--key", KAMSTRUP_KEY, KAMSTRUP, GWF)
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["security"]["decrypted"] is True
    assert second["protocol"] == "mbus"


def test_bad_command_lines_are_refused_with_a_usage_error() -> None:
    assert run_decode().returncode != 0
    assert run_decode("--stdin", KAMSTRUP).returncode != 0
    bad_key = run_decode("--key", "1234", KAMSTRUP)
    assert bad_key.returncode == 2
    assert "32 hex digits" in bad_key.stderr
    assert "1234" not in bad_key.stderr
