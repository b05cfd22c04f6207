"""The gateway's TOML configuration: what loads, and every mistake named by file and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config import (
    DEFAULT_MBUS_BAUD,
    GatewayConfig,
    ReceiverConfig,
    load_config,
    load_gateway_keys,
)
from metergate.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "gateway.toml"

BASE_TOP = 'gateway_id = "gw-1"\nspool_path = "spool.sqlite"\n'
BASE_MQTT = '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'


def config_text(top: str = "", mqtt: str = "", rest: str = "") -> str:
    return f"{BASE_TOP}{top}\n{BASE_MQTT}{mqtt}\n{rest}"


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> GatewayConfig:
    return load_config(write(tmp_path, text), environ={})


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.gateway_id == "gw-demo-01"
    assert config.timezone.key == "Europe/Riga"
    assert config.broker.host == "127.0.0.1"
    assert config.broker.port == 1883
    assert config.broker.protocol == 5
    assert config.spool_path == EXAMPLE.parent / "gateway-spool.sqlite"
    assert config.receivers == (ReceiverConfig("im871a:/dev/ttyUSB0", "C1T1"),)
    (bus,) = config.mbus_buses
    assert bus.addresses == (1, 2, 5, "123456782C2D1B16")
    (unit,) = config.modbus_units
    assert unit.register_map.model == "generic-magmeter"
    assert unit.meter_id in config.meters
    kam = config.meters["KAM-12345678"]
    assert kam.location is not None
    assert (kam.location.lat, kam.location.lon) == (Decimal("56.9560"), Decimal("24.1213"))
    assert kam.profile == "kamstrup-multical21"


def test_defaults_of_a_minimal_config(tmp_path: Path) -> None:
    config = load(tmp_path, config_text(rest='[[receivers]]\ndevice = "amb8465:/dev/ttyUSB3"\n'))
    assert config.timezone.key == "Europe/Riga"
    assert config.metrics_port is None
    assert config.keys_file is None
    assert config.broker.client_id == "gw-1"
    assert config.broker.protocol == 5
    assert config.broker.keepalive_s == 60
    assert config.receivers[0].mode == "C1T1"
    assert config.spool_path == tmp_path / "spool.sqlite"
    assert dict(config.meters) == {}
    assert config.topic_root == "metergate"


def test_a_topic_root_of_its_own(tmp_path: Path) -> None:
    rest = '[[receivers]]\ndevice = "amb8465:/dev/ttyUSB3"\n'
    config = load(tmp_path, config_text(mqtt='topic_root = "utility-b"\n', rest=rest))
    assert config.topic_root == "utility-b"


def test_full_config_with_tls_credentials_and_paths(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    for name in ("ca.crt", "gw.crt", "gw.key"):
        (tmp_path / "tls" / name).write_text("-----BEGIN-----\n")
    keys = tmp_path / "keys.toml"
    keys.write_text("[keys]\n")
    (tmp_path / "var").mkdir()
    text = f"""
gateway_id = "gw-1"
timezone = "Europe/Berlin"
metrics_port = 0
keys_file = "{keys}"
spool_path = "var/s.db"

[mqtt]
url = "mqtts://broker.example"
username = "gw"
password_env = "GW_PASSWORD"
protocol = 4
keepalive_s = 30
client_id = "edge-7"
ca_file = "tls/ca.crt"
cert_file = "tls/gw.crt"
key_file = "{tmp_path}/tls/gw.key"

[[mbus]]
port = "socket://127.0.0.1:10001"
baud = 9600
addresses = "scan-secondary"

[[mbus]]
port = "/dev/ttyUSB1"
addresses = [0, 250, "123456782c2d1b16"]
interval_s = 60

[[modbus]]
url = "rtu:///dev/ttyS0?baudrate=19200"
unit_id = 1
profile = "generic-magmeter"
meter_id = "sie-00000001"

[[modbus]]
url = "rtu:///dev/ttyS0?baudrate=19200"
unit_id = 2
profile = "generic-magmeter-low-word-first"
meter_id = "SIE-00000002"
interval_s = 15

[[meters]]
meter_id = "kam-1234ABCD"
name = "Kalku iela 2"
premise = "Kalku iela 2-14"
profile = "kamstrup-multical21"
lat = "-33.8688"
lon = "151.2093"
"""
    config = load_config(write(tmp_path, text), environ={"GW_PASSWORD": "s3cret"})
    broker = config.broker
    assert (broker.host, broker.port, broker.tls) == ("broker.example", 8883, True)
    assert (broker.username, broker.password) == ("gw", "s3cret")
    assert "s3cret" not in repr(config)
    assert (broker.protocol, broker.keepalive_s, broker.client_id) == (4, 30, "edge-7")
    assert broker.ca_file == str(tmp_path / "tls" / "ca.crt")
    assert broker.cert_file == str(tmp_path / "tls" / "gw.crt")
    assert broker.key_file == str(tmp_path / "tls" / "gw.key")
    assert config.timezone.key == "Europe/Berlin"
    assert config.metrics_port == 0
    assert config.keys_file == keys
    assert config.spool_path == tmp_path / "var" / "s.db"
    first, second = config.mbus_buses
    assert (first.baud, first.addresses, first.interval_s) == (9600, "scan-secondary", 900)
    assert (second.baud, second.addresses) == (DEFAULT_MBUS_BAUD, (0, 250, "123456782C2D1B16"))
    assert second.interval_s == 60
    assert [u.meter_id for u in config.modbus_units] == ["SIE-00000001", "SIE-00000002"]
    assert [u.interval_s for u in config.modbus_units] == [60, 15]
    meter = config.meters["KAM-1234abcd"]
    assert (meter.name, meter.premise) == ("Kalku iela 2", "Kalku iela 2-14")
    assert meter.location is not None
    assert (meter.location.lat, meter.location.lon) == (Decimal("-33.8688"), Decimal("151.2093"))
    assert meter.location.source == "config"


def test_tls_files_are_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    text = config_text(mqtt='ca_file = "ca.crt"\n')
    config = load(tmp_path, text.replace("mqtt://127.0.0.1:1883", "mqtts://127.0.0.1"))
    assert config.broker.tls
    assert config.broker.port == 8883
    assert config.broker.ca_file == str(tmp_path / "ca.crt")


def test_modbus_profile_from_a_file_next_to_the_config(tmp_path: Path) -> None:
    shipped = REPO / "decoders" / "profiles" / "modbus" / "generic_magmeter.toml"
    text = shipped.read_text().replace('model = "generic-magmeter"', 'model = "site-meter"')
    (tmp_path / "site.toml").write_text(text)
    rest = '[[modbus]]\nurl = "tcp://127.0.0.1:5020"\nunit_id = 3\nprofile = "site.toml"\n'
    rest += 'meter_id = "ABC-00000001"\n'
    config = load(tmp_path, config_text(rest=rest))
    assert config.modbus_units[0].register_map.model == "site-meter"
    assert config.modbus_units[0].profile == str(tmp_path / "site.toml")


MODBUS = '[[modbus]]\nurl = "tcp://127.0.0.1:5020"\nunit_id = 1\nprofile = "generic-magmeter"\n'
MODBUS += 'meter_id = "SIE-00000001"\n'
MBUS = '[[mbus]]\nport = "/dev/ttyUSB1"\naddresses = "scan"\n'

# (top-level keys, [mqtt] keys, the rest, where, what the message says)
BAD: list[tuple[str, str, str, str, str]] = [
    ('gatway_id = "x"\n', "", "", "gatway_id", "unknown key"),
    ("", "", "[unknown]\n", "unknown", "unknown key"),
    ('timezone = "Europe/Rigaa"\n', "", "", "timezone", "not an IANA time zone"),
    ('timezone = "../../etc/passwd"\n', "", "", "timezone", "not an IANA time zone"),
    ("timezone = 2\n", "", "", "timezone", "must be a string"),
    ("metrics_port = 70000\n", "", "", "metrics_port", "from 0 to 65535"),
    ('metrics_port = "9108"\n', "", "", "metrics_port", "must be an integer"),
    ("metrics_port = true\n", "", "", "metrics_port", "must be an integer"),
    ('keys_file = "no-such-keys.toml"\n', "", "", "keys_file", "is not a file"),
    ('keys_file = ""\n', "", "", "keys_file", "non-empty text"),
    ("", 'pasword = "x"\n', "", "mqtt.pasword", "unknown key"),
    ("", "protocol = 3\n", "", "mqtt.protocol", "from 4 to 5"),
    ("", "keepalive_s = 0\n", "", "mqtt.keepalive_s", "from 5 to 65535"),
    ("", 'password_env = "NOT_SET_ANYWHERE"\n', "", "mqtt.password_env", "is not set"),
    ("", 'username = "u"\npassword = "p"\npassword_env = "P"\n', "", "mqtt.password_env", "once"),
    ("", 'password = "p"\n', "", "mqtt.password", "needs a username"),
    ("", 'ca_file = "gateway.toml"\n', "", "mqtt.ca_file", "need an mqtts:// url"),
    ("", 'client_id = ""\n', "", "mqtt.client_id", "non-empty text"),
    ("", "", '[[receivers]]\ndevice = "foo:/dev/x"\n', "receivers[0].device", "unknown receiver"),
    ("", "", '[[receivers]]\ndevice = "im871a:"\n', "receivers[0].device", "needs a port"),
    ("", "", '[[receivers]]\ndevice = "im871a:/dev/a"\nmode = "T2"\n', "receivers[0].mode", "T2"),
    ("", "", '[[receivers]]\ndevice = "hex:/dev/a"\nbaud = 1\n', "receivers[0].baud", "unknown"),
    ("", "", '[receivers]\ndevice = "hex:/dev/a"\n', "receivers", "must be a list"),
    ("receivers = [1]\n", "", "", "receivers[0]", "must be a table"),
    (
        "",
        "",
        MBUS + '[[mbus]]\nport = "/dev/ttyUSB2"\nbaud = 9601\naddresses = "scan"\n',
        "mbus[1].baud",
        "9601 is not a baud rate M-Bus uses",
    ),
    ("", "", MBUS + "baud = true\n", "mbus[0].baud", "not a baud rate"),
    ("", "", MBUS + 'baud = "2400"\n', "mbus[0].baud", "not a baud rate"),
    ("", "", MBUS.replace('"scan"', '"all"'), "mbus[0].addresses", "'scan', 'scan-secondary'"),
    ("", "", MBUS.replace('"scan"', "[]"), "mbus[0].addresses", "non-empty list"),
    ("", "", MBUS.replace('"scan"', "5"), "mbus[0].addresses", "non-empty list"),
    ("", "", MBUS.replace('"scan"', "[1, 251]"), "mbus[0].addresses[1]", "not in 0-250"),
    ("", "", MBUS.replace('"scan"', "[-1]"), "mbus[0].addresses[0]", "not in 0-250"),
    ("", "", MBUS.replace('"scan"', "[3, 3]"), "mbus[0].addresses[1]", "listed twice"),
    ("", "", MBUS.replace('"scan"', '["12345"]'), "mbus[0].addresses[0]", "16 hex digits"),
    ("", "", MBUS.replace('"scan"', "[true]"), "mbus[0].addresses[0]", "16 hex digits"),
    ("", "", MBUS.replace('"scan"', '["1234FFFF2C2D1B16"]'), "mbus[0].addresses[0]", "wildcard"),
    ("", "", MBUS + "interval_s = 0\n", "mbus[0].interval_s", "from 1 to"),
    ("", "", MBUS + "interval_s = 60.5\n", "mbus[0].interval_s", "must be an integer"),
    ("", "", '[[mbus]]\naddresses = "scan"\n', "mbus[0].port", "missing 'port'"),
    ("", "", '[[mbus]]\nport = " "\naddresses = "scan"\n', "mbus[0].port", "must name"),
    ("", "", MBUS + MBUS, "mbus[1].port", "also used by mbus[0].port"),
    (
        "",
        "",
        '[[receivers]]\ndevice = "im871a:/dev/ttyUSB1"\n' + MBUS,
        "mbus[0].port",
        "also used by receivers[0].device",
    ),
    ("", "", MODBUS.replace("unit_id = 1", "unit_id = 0"), "modbus[0].unit_id", "from 1 to 247"),
    ("", "", MODBUS.replace("unit_id = 1", "unit_id = 248"), "modbus[0].unit_id", "1 to 247"),
    ("", "", MODBUS.replace("tcp://", "ftp://"), "modbus[0].url", "bad Modbus URL"),
    ("", "", MODBUS.replace('"generic-magmeter"', '"no-such"'), "modbus[0].profile", "no-such"),
    ("", "", MODBUS.replace('"SIE-00000001"', '"pump 3"'), "modbus[0].meter_id", "not a meter id"),
    ("", "", MODBUS.replace("meter_id", "meterid"), "modbus[0].meterid", "unknown key"),
    ("", "", MODBUS + MODBUS, "modbus[1].unit_id", "also used by modbus[0].unit_id"),
    (
        "",
        "",
        MODBUS + MODBUS.replace("unit_id = 1", "unit_id = 2"),
        "modbus[1].meter_id",
        "also used by modbus[0].meter_id",
    ),
    (
        "",
        "",
        MBUS + MODBUS.replace("tcp://127.0.0.1:5020", "/dev/ttyUSB1"),
        "modbus[0].url",
        "also used by mbus[0].port",
    ),
    ("", 'topic_root = "a/b"\n', "", "mqtt.topic_root", "cannot be an MQTT topic level"),
    ("", 'topic_root = ""\n', "", "mqtt.topic_root", ""),
    ("", "", '[[meters]]\nmeter_id = "12345678"\n', "meters[0].meter_id", "not a meter id"),
    ("", "", "[[meters]]\nname = 'x'\n", "meters[0].meter_id", "missing 'meter_id'"),
    (
        "",
        "",
        '[[meters]]\nmeter_id = "kam-1234ABCD"\n[[meters]]\nmeter_id = "KAM-1234abcd"\n',
        "meters[1].meter_id",
        "KAM-1234abcd is configured twice",
    ),
    (
        "",
        "",
        '[[meters]]\nmeter_id = "KAM-1234abcd"\nprofile = "x"\n',
        "meters[0].profile",
        "no meter profile",
    ),
    (
        "",
        "",
        '[[meters]]\nmeter_id = "KAM-1234abcd"\nlat = 56.9\nlon = "24"\n',
        "meters[0].lat",
        "exact",
    ),
    ("", "", '[[meters]]\nmeter_id = "KAM-1234abcd"\nlat = "56.9"\n', "meters[0].lon", "both"),
    ("", "", '[[meters]]\nmeter_id = "KAM-1234abcd"\nlon = "24"\n', "meters[0].lat", "both"),
    (
        "",
        "",
        '[[meters]]\nmeter_id = "KAM-1234abcd"\nlat = "91"\nlon = "0"\n',
        "meters[0].lat",
        "-90..90",
    ),
    (
        "",
        "",
        '[[meters]]\nmeter_id = "KAM-1234abcd"\nlat = "0"\nlon = "x"\n',
        "meters[0].lon",
        "decimal",
    ),
    (
        "",
        "",
        '[[meters]]\nmeter_id = "KAM-1234abcd"\nadress = "x"\n',
        "meters[0].adress",
        "unknown",
    ),
    (
        "",
        "",
        '[[meters]]\nmeter_id = "KAM-1234abcd"\nname = "a\\u0000b"\n',
        "meters[0].name",
        "control",
    ),
]


@pytest.mark.parametrize(("pieces", "where", "says"), [(c[:3], c[3], c[4]) for c in BAD])
def test_a_bad_config_names_file_and_key(
    tmp_path: Path, pieces: tuple[str, str, str], where: str, says: str
) -> None:
    path = write(tmp_path, config_text(*pieces))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    error = caught.value
    assert error.path == str(path)
    assert error.location == where
    assert str(error).startswith(f"{path}:{where}: ")
    assert says in error.message


def test_the_message_reads_as_the_issue_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = MBUS + '[[mbus]]\nport = "/dev/ttyUSB2"\nbaud = 9601\naddresses = "scan"\n'
    monkeypatch.chdir(tmp_path)
    write(tmp_path, config_text(rest=rest))
    with pytest.raises(ConfigError) as caught:
        load_config("gateway.toml", environ={})
    assert str(caught.value).startswith(
        "gateway.toml:mbus[1].baud: 9601 is not a baud rate M-Bus uses"
    )


# Whole-file mistakes: (file text, where or None, what the message says)
@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ('spool_path = "s.db"\n' + BASE_MQTT, "gateway_id", "missing 'gateway_id'"),
        ('gateway_id = "gw/1"\nspool_path = "s"\n' + BASE_MQTT, "gateway_id", "is not 1-64"),
        ('gateway_id = "gw+"\nspool_path = "s"\n' + BASE_MQTT, "gateway_id", "is not 1-64"),
        ('gateway_id = "gw:1"\nspool_path = "s"\n' + BASE_MQTT, "gateway_id", "is not 1-64"),
        ('gateway_id = "gw"\n' + BASE_MQTT, "spool_path", "missing 'spool_path'"),
        ('gateway_id = "g"\nspool_path = "none/s.db"\n' + BASE_MQTT, "spool_path", "not exist"),
        ('gateway_id = "g"\nspool_path = "."\n' + BASE_MQTT, "spool_path", "is a folder"),
        (BASE_TOP, "mqtt.url", "missing 'url'"),
        (BASE_TOP + "mqtt = 1\n", "mqtt", "must be a table"),
        (BASE_TOP + '[mqtt]\nurl = "http://broker"\n', "mqtt.url", "mqtt:// or mqtts://"),
        (BASE_TOP + '[mqtt]\nurl = "mqtt://b:port"\n', "mqtt.url", "not a number"),
        (BASE_TOP + '[mqtt]\nurl = "mqtt://u:p@b"\npassword = "q"\n', "mqtt.password", "once"),
        (BASE_TOP + '[mqtt]\nurl = "mqtt://u@b"\nusername = "v"\n', "mqtt.username", "once"),
        (BASE_TOP + '[mqtt]\nurl = "mqtt://127.0.0.1"\n[mqtt]\n', "line 5", "not valid TOML"),
        ('gateway_id = "gw-1"\nspool_path = = 1\n[mqtt]\n', "line 2", "not valid TOML"),
    ],
)
def test_whole_file_mistakes(tmp_path: Path, text: str, where: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.path == str(path)
    assert caught.value.location == where
    assert says in caught.value.message


def test_tls_client_certificate_needs_its_key(tmp_path: Path) -> None:
    (tmp_path / "gw.crt").write_text("x")
    text = config_text(mqtt='cert_file = "gw.crt"\n').replace("mqtt://", "mqtts://")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.location == "mqtt.key_file"


def test_a_tls_file_that_is_missing(tmp_path: Path) -> None:
    text = config_text(mqtt='ca_file = "ca.crt"\n').replace("mqtt://", "mqtts://")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.location == "mqtt.ca_file"
    assert "ca.crt is not a file" in caught.value.message


def test_a_broken_modbus_profile_file_is_named_with_the_key(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('model = "m"\nmanufacturer = "x"\n')
    rest = MODBUS.replace('"generic-magmeter"', '"mine.toml"')
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config_text(rest=rest))
    assert caught.value.location == "modbus[0].profile"
    assert str(tmp_path / "mine.toml") in caught.value.message
    assert "fields" in caught.value.message


def test_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert caught.value.path == str(tmp_path / "absent.toml")
    assert "cannot read" in caught.value.message
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"gateway_id = '\xff'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(binary)
    assert caught.value.path == str(binary)
    assert "UTF-8" in caught.value.message


def test_password_env_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = config_text(mqtt='username = "gw"\npassword_env = "METERGATE_TEST_PW"\n')
    path = write(tmp_path, text)
    monkeypatch.setenv("METERGATE_TEST_PW", "from-env")
    assert load_config(path).broker.password == "from-env"
    monkeypatch.delenv("METERGATE_TEST_PW")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.location == "mqtt.password_env"


def test_modbus_units_may_share_an_rtu_line(tmp_path: Path) -> None:
    rtu = MODBUS.replace("tcp://127.0.0.1:5020", "/dev/ttyS4")
    rest = rtu + rtu.replace("unit_id = 1", "unit_id = 2").replace("00000001", "00000002")
    config = load(tmp_path, config_text(rest=rest))
    assert [u.unit_id for u in config.modbus_units] == [1, 2]


def keys_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text('[keys]\n"KAM-12345678" = "000102030405060708090A0B0C0D0E0F"\n')
    path.chmod(mode)
    return path


def test_gateway_keys_load_from_a_private_file(tmp_path: Path) -> None:
    ring = load_gateway_keys(keys_file(tmp_path, 0o600))
    assert ring["kam-12345678"] == bytes(range(16))
    assert len(load_gateway_keys(None)) == 0


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_gateway_keys_refused_when_others_can_read_them(tmp_path: Path, mode: int) -> None:
    path = keys_file(tmp_path, mode)
    with pytest.raises(ConfigError) as caught:
        load_gateway_keys(path)
    assert caught.value.path == str(path)
    assert "chmod 600" in caught.value.message
    assert "0001020304" not in str(caught.value)


def test_gateway_keys_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_gateway_keys(tmp_path / "none.toml")
    assert caught.value.path == str(tmp_path / "none.toml")
