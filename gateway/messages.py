"""The MQTT payloads the gateway publishes: `reading/1` and `raw/1` (DESIGN.md §3).

The dictionaries built here are ready for `json.dumps`: values are exact decimal strings (the
decoders' `value_text`), times ISO 8601 in UTC with a `Z`. `seq` and `msg_id` are not set here:
the spool numbers a message when it stores it.

When a value was measured (DESIGN.md §2):
- A value of storage 0 is the meter's present value. Its `measured_at` is the meter's own clock
  when the telegram carries a date-and-time record of storage 0 (VIF 6D, or 6C holding a type F
  or I value), else `received_at`. A date without a time of day says nothing about when the
  value was read, so a date-only record of storage 0 leaves `received_at` in place.
- A value of storage n >= 1 is a stored register (month end, due date) and takes its
  `measured_at` from the date or date-and-time record of the same storage number. A value of
  storage n >= 1 without such a record is not published as a reading: no instant can be told
  for it, and stamping it with `received_at` would give last month's register today's date. The
  frame still travels in the message, so nothing is lost.
- A meter's clock shows local wall time without an offset (EN 13757-3 types F, G, I). It is read
  in the utility's time zone, a parameter (the config's `timezone`, Europe/Riga by default). On
  the hour that occurs twice when summer time ends, the first (summer time) reading is taken.
- A date-only stamp D of a stored register means the end of that local day, 24:00 on D, which
  is 00:00 local time on D + 1. Meters label their month-end register with the month's last day
  (the simulated fleet does; so do the Itron and Qundis vectors in decoders/profiles), and the
  register is the index at the month boundary, 00:00 on the first: 2026-10-31 in Europe/Riga is
  2026-10-31T22:00:00Z.

Date/time records are not readings themselves. Only numeric values become readings: text,
manufacturer-specific blobs and bit fields kept as hex are no meter index and the ingest's
`readings.value` is numeric; they stay in the frame. A value the meter flagged with a record
error (VIFE 01-1F, EN 13757-3 Annex F) is left out for the same reason a billing system would
not want it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from decoders.render import error_json, value_text
from decoders.telegram import DataRecord, Status, Telegram, TplHeader
from decoders.wmbus_frame import Envelope
from decoders.wmbus_link import parse_dll
from gateway.frames import Location, RawFrame
from metergate.errors import DecodeError, MissingKeyError, UnsupportedError

READING_SCHEMA = "reading/1"
RAW_SCHEMA = "raw/1"
TOPIC_ROOT = "metergate"
DEFAULT_ZONE = ZoneInfo("Europe/Riga")
Kind = Literal["reading", "raw"]

# EN 13757-3 Table 10: primary VIF 6C is a date (type G), 6D a date and time (F, I). With
# VIFEs they are dates *about* something else (start of a tariff, of a limit exceedance).
_DATE_VIFS = frozenset({b"\x6c", b"\x6d"})
_FORBIDDEN_IN_LEVEL = frozenset("/+#\x00")


def utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, fractions of a second only when there are any."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _local_instant(wall: datetime, zone: tzinfo) -> datetime:
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _end_of_day(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def meter_times(records: Iterable[DataRecord], zone: tzinfo) -> dict[int, datetime]:
    """storage number -> the instant the meter's own date records give it, in UTC.

    A date-and-time record wins over a date-only one of the same storage number, and the first
    of each kind wins over later ones. Tariff and subunit are not compared: meters send one
    date per storage number and apply it to all its values.
    """
    with_time: dict[int, datetime] = {}
    date_only: dict[int, date] = {}
    for record in records:
        value = record.value
        if record.spec.vif not in _DATE_VIFS:
            continue
        if isinstance(value, datetime):
            with_time.setdefault(record.storage, _local_instant(value, zone))
        elif isinstance(value, date) and record.storage >= 1:
            date_only.setdefault(record.storage, value)
    times = {storage: _end_of_day(day, zone) for storage, day in date_only.items()}
    times.update(with_time)
    return times


def readings_json(
    records: Iterable[DataRecord], received_at: datetime, zone: tzinfo = DEFAULT_ZONE
) -> list[dict[str, Any]]:
    """The `readings` of a reading/1 message: the numeric records with their measured_at."""
    records = tuple(records)
    times = meter_times(records, zone)
    times.setdefault(0, received_at)
    out = []
    for record in records:
        value = record.value
        spec = record.spec
        if not isinstance(value, Decimal) or not value.is_finite() or spec.error_code:
            continue
        measured_at = times.get(spec.storage)
        if measured_at is None:
            continue
        out.append(
            {
                "quantity": spec.quantity,
                "unit": spec.unit,
                "value": value_text(value),
                "storage": spec.storage,
                "tariff": spec.tariff,
                "subunit": spec.subunit,
                "function": spec.function,
                "measured_at": utc_text(measured_at),
            }
        )
    return out


def _rssi(rssi_dbm: Decimal | None) -> int | None:
    """Whole dBm, as the contract's example and the ingest take it (receivers report half dB)."""
    if rssi_dbm is None:
        return None
    return int(rssi_dbm.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _location(location: Location | None) -> dict[str, str] | None:
    if location is None:
        return None
    return {"lat": format(location.lat, "f"), "lon": format(location.lon, "f")}


def _frame_fields(raw: RawFrame) -> dict[str, Any]:
    return {
        "frame": raw.data.hex().upper(),
        "rssi_dbm": _rssi(raw.rssi_dbm),
        "location": _location(raw.location),
        "received_at": utc_text(raw.received_at),
    }


def records_message(  # noqa: PLR0917 - the positional order the gateway helpers agreed on
    meter_id: str,
    manufacturer: str | None,
    medium: str | None,
    records: Sequence[DataRecord],
    raw: RawFrame,
    gateway_id: str,
    *,
    status: Status | None = None,
    zone: tzinfo = DEFAULT_ZONE,
) -> dict[str, Any]:
    """A reading/1 payload from records without a telegram (a Modbus poll): `status` carries
    the register map's flags (decoders.modbus_map.status_flags), none when omitted."""
    status = status or Status(0)
    return {
        "schema": READING_SCHEMA,
        "gateway_id": gateway_id,
        "meter_id": meter_id,
        "manufacturer": manufacturer,
        "medium": medium,
        "protocol": raw.protocol,
        **_frame_fields(raw),
        "status": {"flags": list(status.flags), "raw": status.raw},
        "readings": readings_json(records, raw.received_at, zone),
    }


def reading_message(
    telegram: Telegram, raw: RawFrame, gateway_id: str, *, zone: tzinfo = DEFAULT_ZONE
) -> dict[str, Any]:
    """The reading/1 payload of one decoded telegram (DESIGN.md §3), without seq and msg_id.

    A telegram that names no meter (a wired CI 70 application error, a header-less frame) cannot
    be a reading: UnsupportedError, a DecodeError, so the caller sends the frame as raw/1.
    """
    address = telegram.address
    if address is None:
        raise UnsupportedError("the telegram names no meter", data=raw.data)
    message = records_message(
        address.meter_id,
        address.manufacturer,
        address.medium,
        telegram.records,
        raw,
        gateway_id,
        status=telegram.status,
        zone=zone,
    )
    message["protocol"] = telegram.protocol
    return message


def raw_message(
    raw: RawFrame, error: DecodeError, gateway_id: str, meter_id: str | None
) -> dict[str, Any]:
    """The raw/1 payload of a frame that could not be decoded or decrypted (DESIGN.md §3, §9).

    The error's message names no key bytes (decoders never put them there).
    """
    return {
        "schema": RAW_SCHEMA,
        "gateway_id": gateway_id,
        "meter_id": meter_id,
        "protocol": raw.protocol,
        **_frame_fields(raw),
        "error": error_json(error)["error"],
    }


def undecoded_meter_id(raw: RawFrame, error: DecodeError) -> str | None:
    """Which meter sent a frame that did not decode, when that can still be told.

    A missing or wrong key leaves the envelope readable (MissingKeyError.header); otherwise a
    wM-Bus frame's link address names the sender. None when nothing names it.
    """
    if isinstance(error, MissingKeyError):
        header = error.header
        if isinstance(header, Envelope):
            return (header.tpl.address or header.link_address).meter_id
        if isinstance(header, TplHeader) and header.address is not None:
            return header.address.meter_id
    if raw.protocol == "wmbus":
        try:
            return parse_dll(raw.data)[1].meter_id
        except DecodeError:
            return None
    return None


def topic_level(text: str, name: str) -> str:
    """`text`, or ValueError when it cannot be one level of an MQTT topic."""
    if not text or _FORBIDDEN_IN_LEVEL.intersection(text):
        raise ValueError(f"{name} {text!r} cannot be an MQTT topic level")
    return text


def topic(gateway_id: str, meter_id: str | None, kind: Kind, root: str = TOPIC_ROOT) -> str:
    """`metergate/{gateway_id}/{meter_id or "unknown"}/{kind}` (DESIGN.md §3); `root` replaces
    `metergate` where several deployments share a broker."""
    if kind not in ("reading", "raw"):
        raise ValueError(f"a message kind is 'reading' or 'raw', not {kind!r}")
    meter = topic_level(meter_id, "meter id") if meter_id is not None else "unknown"
    gateway = topic_level(gateway_id, "gateway id")
    return f"{topic_level(root, 'topic root')}/{gateway}/{meter}/{kind}"


def status_topic(gateway_id: str, root: str = TOPIC_ROOT) -> str:
    """The gateway's retained status topic; its Last Will says `offline` there."""
    return f"{topic_level(root, 'topic root')}/{topic_level(gateway_id, 'gateway id')}/status"
