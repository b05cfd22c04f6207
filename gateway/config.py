"""The gateway's TOML configuration (issue 4), checked whole at start-up.

Every mistake is a ConfigError naming the file and the key, e.g.
`gateway.toml:mbus[1].baud: 9601 is not a baud rate M-Bus uses`; arrays of tables count from 0,
as in the profile files (decoders/toml_table.py). Unknown keys are errors: a typo must not
silently leave a setting at its default. Relative paths (spool, keys file, TLS files, a Modbus
profile file) are read from the config file's folder, so a config and its files move together.
examples/gateway.toml documents every key.

Keys are not in this file: `keys_file` names a separate TOML keys file (metergate/keys.py) that
load_gateway_keys refuses while group or others can read it. The MQTT password need not be in
it either: `password_env` names an environment variable that holds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from decoders.mbus_link import BAUD_RATES
from decoders.modbus_map import RegisterMap
from decoders.toml_table import TomlTable, load_toml
from drivers.modbus import MAX_UNIT, parse_modbus_url
from drivers.wmbus_receiver import parse_device
from drivers.wmbus_receiver_base import MODES
from gateway.broker import BrokerConfig
from gateway.frames import Location
from gateway.messages import TOPIC_ROOT, topic_level
from metergate.errors import ConfigError
from metergate.keys import KeyRing, canonical_meter_id, load_keys
from metergate.profiles import builtin_register_maps, load_profiles, load_register_map

DEFAULT_TIMEZONE = "Europe/Riga"
DEFAULT_MBUS_BAUD = 2400
DEFAULT_MBUS_INTERVAL_S = 900
DEFAULT_MODBUS_INTERVAL_S = 60
DEFAULT_RECEIVER_MODE = "C1T1"
MAX_INTERVAL_S = 7 * 86_400
MAX_PRIMARY_ADDRESS = 250  # EN 13757-2: 251-255 are reserved, test, network layer, broadcast
SCAN_MODES = frozenset({"scan", "scan-secondary"})
# A topic level (DESIGN.md §3) and the prefix of msg_id "{gateway_id}:{seq}": no MQTT
# separators or wildcards, no colon.
GATEWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_SECONDARY = re.compile(r"[0-9A-Fa-f]{16}", re.ASCII)
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")

_TOP_KEYS = frozenset(
    {"gateway_id", "timezone", "spool_path", "metrics_port", "keys_file", "mqtt"}
    | {"receivers", "mbus", "modbus", "meters"}
)
_MQTT_KEYS = frozenset(
    {"url", "client_id", "protocol", "keepalive_s", "username", "password", "password_env"}
    | {"ca_file", "cert_file", "key_file", "topic_root"}
)
_RECEIVER_KEYS = frozenset({"device", "mode"})
_MBUS_KEYS = frozenset({"port", "baud", "addresses", "interval_s"})
_MODBUS_KEYS = frozenset({"url", "unit_id", "profile", "interval_s", "meter_id"})
_METER_KEYS = frozenset({"meter_id", "name", "profile", "premise", "lat", "lon"})

MbusAddresses = Literal["scan", "scan-secondary"] | tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """A wM-Bus receiver: `device` as KIND:PORT (drivers.wmbus_receiver), its link mode."""

    device: str
    mode: str = DEFAULT_RECEIVER_MODE


@dataclass(frozen=True, slots=True)
class MbusBusConfig:
    """A wired M-Bus: which meters to poll, and how often.

    `addresses` is "scan" (every primary address), "scan-secondary" (secondary search), or the
    meters' primary addresses (int) and secondary addresses (16 upper-case hex digits).
    """

    port: str
    baud: int
    addresses: MbusAddresses
    interval_s: int


@dataclass(frozen=True, slots=True)
class ModbusUnitConfig:
    """A Modbus meter: where it is, its register map, how often, which meter it is."""

    url: str
    unit_id: int
    profile: str
    interval_s: int
    meter_id: str
    register_map: RegisterMap = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MeterConfig:
    meter_id: str
    name: str | None = None
    profile: str | None = None
    premise: str | None = None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    gateway_id: str
    broker: BrokerConfig
    spool_path: Path
    metrics_port: int | None  # None: no metrics endpoint; 0: any free port
    keys_file: Path | None
    timezone: ZoneInfo
    receivers: tuple[ReceiverConfig, ...] = ()
    mbus_buses: tuple[MbusBusConfig, ...] = ()
    modbus_units: tuple[ModbusUnitConfig, ...] = ()
    meters: Mapping[str, MeterConfig] = field(default_factory=lambda: MappingProxyType({}))
    topic_root: str = TOPIC_ROOT  # the first topic level; the ingest's --topic-root matches it


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """The configuration in `path`; ConfigError naming the file and the key for any mistake.

    `environ` is where `mqtt.password_env` is looked up (os.environ unless given).
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", path=name) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=name) from None
    doc = load_toml(text, name)
    doc.known(_TOP_KEYS)
    folder = Path(path).resolve().parent
    gateway_id = doc.text("gateway_id")
    if not GATEWAY_ID.fullmatch(gateway_id):
        doc.fail("gateway_id", f"{gateway_id[:70]!r} is not 1-64 of A-Z a-z 0-9 . _ -")
    receivers = tuple(_receiver(item) for item in doc.tables("receivers"))
    buses = tuple(_mbus(item) for item in doc.tables("mbus"))
    units = tuple(_modbus(item, folder) for item in doc.tables("modbus"))
    config = GatewayConfig(
        path=Path(path),
        gateway_id=gateway_id,
        broker=_broker(doc.table("mqtt"), gateway_id, folder, environ),
        topic_root=_topic_root(doc.table("mqtt")),
        spool_path=_spool_path(doc, folder),
        metrics_port=_optional_int(doc, "metrics_port", 0, 65535),
        keys_file=_file(doc, "keys_file", folder),
        timezone=_zone(doc),
        receivers=receivers,
        mbus_buses=buses,
        modbus_units=units,
        meters=_meters(doc),
    )
    _check_ports(doc, config)
    return config


def load_gateway_keys(path: str | os.PathLike[str] | None) -> KeyRing:
    """The keys of `keys_file`: no keys when None; ConfigError for a file group or others can
    read (chmod 600 it), or one that cannot be read or parsed."""
    if path is None:
        return KeyRing()
    return load_keys(path)


def _rewrap(doc: TomlTable, key: str, error: ConfigError) -> NoReturn:
    """A ConfigError of a checker that knows no file (a driver's URL or port check), raised
    again at this file's key; one about another file (a profile) keeps that file's name."""
    doc.fail(key, str(error) if error.path else error.message)


def _optional_text(doc: TomlTable, key: str) -> str | None:
    if key not in doc.doc:
        return None
    value = doc.text(key)
    if not _PRINTABLE.fullmatch(value):
        doc.fail(key, f"{key!r} must be non-empty text without control characters")
    return value


def _optional_int(doc: TomlTable, key: str, low: int, high: int) -> int | None:
    return doc.integer(key, low, high) if key in doc.doc else None


def _interval(doc: TomlTable, default: int) -> int:
    return doc.integer("interval_s", 1, MAX_INTERVAL_S, default)


def _file(doc: TomlTable, key: str, folder: Path) -> Path | None:
    """An existing, readable file named by `key`, relative to the config's folder."""
    text = _optional_text(doc, key)
    if text is None:
        return None
    file = folder / Path(text).expanduser()
    if not file.is_file():
        doc.fail(key, f"{text} is not a file")
    if not os.access(file, os.R_OK):
        doc.fail(key, f"{text} cannot be read by this user")
    return file


def _meter_id(doc: TomlTable, key: str) -> str:
    value = doc.text(key)
    meter_id = canonical_meter_id(value)
    if meter_id is None:
        doc.fail(key, f"{value[:40]!r} is not a meter id such as KAM-12345678")
    return meter_id


def _zone(doc: TomlTable) -> ZoneInfo:
    name = doc.text("timezone", DEFAULT_TIMEZONE)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        doc.fail("timezone", f"{name[:60]!r} is not an IANA time zone such as Europe/Riga")


def _spool_path(doc: TomlTable, folder: Path) -> Path:
    text = doc.text("spool_path")
    spool = folder / Path(text).expanduser()
    if spool.is_dir():
        doc.fail("spool_path", f"{text} is a folder; name the spool file in it")
    if not spool.parent.is_dir():
        doc.fail("spool_path", f"the folder of {text} does not exist")
    if not os.access(spool.parent, os.W_OK | os.X_OK):
        doc.fail("spool_path", f"the folder of {text} is not writable by this user")
    return spool


def _broker(
    doc: TomlTable, gateway_id: str, folder: Path, environ: Mapping[str, str] | None
) -> BrokerConfig:
    doc.known(_MQTT_KEYS)
    broker = BrokerConfig.from_url(doc.text("url"), path=doc.source, location=doc.at("url"))
    username = _optional_text(doc, "username")
    if username is not None and broker.username is not None:
        doc.fail("username", "the user is already in the url; give it once")
    password, password_key = _password(doc, broker, environ)
    username = username or broker.username
    if password is not None and username is None:
        doc.fail(password_key, "a password needs a username")
    tls_files = {key: _file(doc, key, folder) for key in ("ca_file", "cert_file", "key_file")}
    for key, file in tls_files.items():
        if file is not None and not broker.tls:
            doc.fail(key, "TLS files need an mqtts:// url")
    if (tls_files["cert_file"] is None) != (tls_files["key_file"] is None):
        missing = "key_file" if tls_files["key_file"] is None else "cert_file"
        doc.fail(missing, "a client certificate needs both cert_file and key_file")
    client_id = _optional_text(doc, "client_id") or gateway_id
    protocol = doc.integer("protocol", 4, 5, 5)
    return replace(
        broker,
        username=username,
        password=password,
        client_id=client_id,
        protocol=5 if protocol == 5 else 4,
        keepalive_s=doc.integer("keepalive_s", 5, 65535, 60),
        ca_file=_text_path(tls_files["ca_file"]),
        cert_file=_text_path(tls_files["cert_file"]),
        key_file=_text_path(tls_files["key_file"]),
    )


def _topic_root(doc: TomlTable) -> str:
    root = _optional_text(doc, "topic_root")
    if root is None:
        return TOPIC_ROOT
    try:
        return topic_level(root, "the topic root")
    except ValueError as error:
        doc.fail("topic_root", str(error))


def _text_path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _password(
    doc: TomlTable, broker: BrokerConfig, environ: Mapping[str, str] | None
) -> tuple[str | None, str]:
    """The password and the key that gave it."""
    given: list[str] = [key for key in ("password", "password_env") if key in doc.doc]
    if broker.password is not None:
        given.insert(0, "url")
    if len(given) > 1:
        doc.fail(given[1], f"the password is given by {' and '.join(given)}; give it once")
    if "password" in doc.doc:
        return doc.text("password"), "password"
    if "password_env" in doc.doc:
        variable = doc.text("password_env")
        value = (os.environ if environ is None else environ).get(variable)
        if not value:
            doc.fail("password_env", f"the environment variable {variable[:60]!r} is not set")
        return value, "password_env"
    return broker.password, "url"


def _receiver(doc: TomlTable) -> ReceiverConfig:
    doc.known(_RECEIVER_KEYS)
    device = doc.text("device")
    try:
        parse_device(device)
    except ConfigError as error:
        _rewrap(doc, "device", error)
    mode = doc.choice("mode", frozenset(MODES), DEFAULT_RECEIVER_MODE)
    return ReceiverConfig(device, mode)


def _mbus(doc: TomlTable) -> MbusBusConfig:
    doc.known(_MBUS_KEYS)
    port = doc.text("port")
    if not port.strip():
        doc.fail("port", "'port' must name a serial port or a socket:// url")
    baud = doc.get("baud", DEFAULT_MBUS_BAUD)
    if isinstance(baud, bool) or not isinstance(baud, int) or baud not in BAUD_RATES:
        rates = ", ".join(map(str, BAUD_RATES))
        doc.fail("baud", f"{str(baud)[:20]} is not a baud rate M-Bus uses ({rates})")
    return MbusBusConfig(port, baud, _addresses(doc), _interval(doc, DEFAULT_MBUS_INTERVAL_S))


def _addresses(doc: TomlTable) -> MbusAddresses:
    value = doc.get("addresses")
    if isinstance(value, str):
        if value not in SCAN_MODES:
            doc.fail("addresses", f"{value[:30]!r} is not 'scan', 'scan-secondary' or a list")
        return "scan" if value == "scan" else "scan-secondary"
    if not isinstance(value, list) or not value:
        doc.fail("addresses", "'scan', 'scan-secondary' or a non-empty list of addresses")
    out: list[int | str] = []
    for i, item in enumerate(value):
        where = f"addresses[{i}]"
        address: int | str
        if isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item <= MAX_PRIMARY_ADDRESS:
                doc.fail(where, f"primary address {item} is not in 0-{MAX_PRIMARY_ADDRESS}")
            address = item
        elif isinstance(item, str) and _SECONDARY.fullmatch(item):
            address = item.upper()
            if "F" in address[:8]:
                # F is the wildcard digit of a secondary select (EN 13757-3, PROTOCOL_NOTES §8.4)
                doc.fail(where, f"{item} has a wildcard F in its identification number")
        else:
            doc.fail(where, f"{str(item)[:30]!r} is neither a primary address nor 16 hex digits")
        if address in out:
            doc.fail(where, f"{address} is listed twice")
        out.append(address)
    return tuple(out)


def _modbus(doc: TomlTable, folder: Path) -> ModbusUnitConfig:
    doc.known(_MODBUS_KEYS)
    url = doc.text("url")
    try:
        parse_modbus_url(url)
    except ConfigError as error:
        _rewrap(doc, "url", error)
    unit_id = doc.integer("unit_id", 1, MAX_UNIT)
    profile = doc.text("profile")
    if profile not in builtin_register_maps():
        profile = str(folder / Path(profile).expanduser())
    try:
        register_map = load_register_map(profile)
    except ConfigError as error:
        _rewrap(doc, "profile", error)
    return ModbusUnitConfig(
        url=url,
        unit_id=unit_id,
        profile=profile,
        interval_s=_interval(doc, DEFAULT_MODBUS_INTERVAL_S),
        meter_id=_meter_id(doc, "meter_id"),
        register_map=register_map,
    )


def _meters(doc: TomlTable) -> Mapping[str, MeterConfig]:
    items = doc.tables("meters")
    profile_names: frozenset[str] = frozenset()
    if any("profile" in item.doc for item in items):
        profile_names = frozenset(p.model for p in load_profiles().profiles)
        profile_names |= frozenset(builtin_register_maps())
    meters: dict[str, MeterConfig] = {}
    for item in items:
        item.known(_METER_KEYS)
        meter_id = _meter_id(item, "meter_id")
        if meter_id in meters:
            item.fail("meter_id", f"{meter_id} is configured twice")
        profile = _optional_text(item, "profile")
        if profile is not None and profile not in profile_names:
            item.fail(
                "profile", f"no meter profile {profile[:40]!r}; known: {sorted(profile_names)}"
            )
        meters[meter_id] = MeterConfig(
            meter_id=meter_id,
            name=_optional_text(item, "name"),
            profile=profile,
            premise=_optional_text(item, "premise"),
            location=_location(item),
        )
    return MappingProxyType(meters)


def _location(doc: TomlTable) -> Location | None:
    given = [key for key in ("lat", "lon") if key in doc.doc]
    if not given:
        return None
    if len(given) == 1:
        missing = "lon" if given == ["lat"] else "lat"
        doc.fail(missing, "a location needs both lat and lon")
    lat, lon = doc.decimal("lat"), doc.decimal("lon")
    if not -90 <= lat <= 90:
        doc.fail("lat", f"latitude {lat} is not within -90..90 degrees")
    if not -180 <= lon <= 180:
        doc.fail("lon", f"longitude {lon} is not within -180..180 degrees")
    return Location(lat, lon, source="config")


def _check_ports(doc: TomlTable, config: GatewayConfig) -> None:
    """One driver per serial port, one entry per Modbus unit and per meter: two would garble
    each other's bytes or publish the same meter twice. Modbus units share their RTU line."""
    owners: dict[str, tuple[str, str]] = {}  # resource -> (what claimed it, where)

    def claim(resource: str, what: str, where: str) -> None:
        first = owners.setdefault(resource, (what, where))
        if first[1] != where and (what != "modbus-rtu" or first[0] != what):
            raise ConfigError(
                f"{resource} is also used by {first[1]}", path=doc.source, location=where
            )

    for i, receiver in enumerate(config.receivers):
        spec = parse_device(receiver.device)
        if spec.source == "serial":
            claim(spec.target, "receiver", f"receivers[{i}].device")
    for i, bus in enumerate(config.mbus_buses):
        claim(bus.port, "mbus", f"mbus[{i}].port")
    for i, unit in enumerate(config.modbus_units):
        endpoint = parse_modbus_url(unit.url)
        if endpoint.transport == "rtu":
            claim(endpoint.address, "modbus-rtu", f"modbus[{i}].url")
        unit_key = f"{endpoint.transport}:{endpoint.address}:{endpoint.port} unit {unit.unit_id}"
        claim(unit_key, "modbus-unit", f"modbus[{i}].unit_id")
        claim(unit.meter_id, "modbus-meter", f"modbus[{i}].meter_id")
