"""The MQTT messages the ingest accepts (DESIGN.md section 3), validated strictly.

`parse_message(topic, payload)` turns one MQTT message into a ReadingMessage or a RawMessage,
or raises InvalidMessage, whose text the worker stores in `dead_letters` with the payload.
Strict means: a value is an exact decimal string ("12.345"), never a JSON number, because a
float has already lost the meter's digits; times carry their offset; integers are JSON
integers; the topic's gateway and meter agree with the payload's. Unknown extra keys are
ignored, so a gateway may add fields to a schema version without its messages being refused.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainValidator,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from metergate.errors import MetergateError
from metergate.keys import canonical_meter_id

DEFAULT_TOPIC_ROOT = "metergate"
READING_SCHEMA = "reading/1"
RAW_SCHEMA = "raw/1"

# At most 64 characters: at most 63 digits, far inside PostgreSQL's numeric range, so a value
# that passes here is stored exactly.
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,62}(\.[0-9]{1,62})?")
_MAX_DECIMAL_TEXT = 64
_MAX_ERROR_LINES = 10
_MAX_FRAME_HEX = 16384


class InvalidMessage(MetergateError):  # noqa: N818 - it names the message, not the exception
    """An MQTT message the ingest cannot accept; `message` says why, without echoing values."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _decimal_text(value: object) -> Decimal:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "decimal_text", 'a value is an exact decimal string such as "12.345", not a number'
        )
    if len(value) > _MAX_DECIMAL_TEXT or _DECIMAL_TEXT.fullmatch(value) is None:
        raise PydanticCustomError(
            "decimal_text", 'a value is a decimal string such as "-12.345" (at most 64 characters)'
        )
    return Decimal(value)


def _meter_id(value: str) -> str:
    return canonical_meter_id(value) or value


def _hex_frame(value: object) -> bytes:
    if isinstance(value, str) and 2 <= len(value) <= _MAX_FRAME_HEX and value.isascii():
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise PydanticCustomError(
        "hex_frame", "a frame is a string of 2 to 16384 hex digits, an even number of them"
    )


ExactDecimal = Annotated[Decimal, PlainValidator(_decimal_text)]
# A topic level: no MQTT wildcards or separator, no control characters (PostgreSQL text
# cannot hold NUL).
TopicLevel = Annotated[str, StringConstraints(pattern=r"^[^/+#\x00-\x1f\x7f]{1,64}$")]
MeterId = Annotated[TopicLevel, AfterValidator(_meter_id)]
# Printable text: no control characters (PostgreSQL text cannot hold NUL).
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$", max_length=128)]
LongText = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$", max_length=1000)]
HexFrame = Annotated[bytes, PlainValidator(_hex_frame)]
Flag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class ReadingValue(_Model):
    quantity: Annotated[Text, StringConstraints(min_length=1)]
    unit: Text
    value: ExactDecimal
    storage: Count
    tariff: Annotated[int, Field(ge=0, le=2**31 - 1)]
    subunit: Annotated[int, Field(ge=0, le=2**31 - 1)]
    function: Literal["instantaneous", "maximum", "minimum", "error"]
    measured_at: AwareDatetime


class MeterStatus(_Model):
    flags: Annotated[tuple[Flag, ...], Field(max_length=64)]
    raw: Count | None = None


class FrameError(_Model):
    type: Annotated[Text, StringConstraints(min_length=1)]
    message: LongText
    offset: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None


class _Message(_Model):
    gateway_id: TopicLevel
    seq: Count
    msg_id: Annotated[Text, StringConstraints(min_length=1)]
    received_at: AwareDatetime
    rssi_dbm: Annotated[int, Field(ge=-200, le=50)] | None = None
    location: dict[str, JsonValue] | None = None


class ReadingMessage(_Message):
    """A `reading/1` message: the values of one decoded telegram or poll."""

    schema_name: Literal["reading/1"] = Field(alias="schema")
    meter_id: MeterId
    manufacturer: Text | None = None
    medium: Text | None = None
    protocol: Literal["wmbus", "mbus", "modbus"]
    frame: HexFrame | None = None
    status: MeterStatus | None = None
    readings: Annotated[tuple[ReadingValue, ...], Field(max_length=1000)]


class RawMessage(_Message):
    """A `raw/1` message: a frame the gateway could not decode or decrypt, with the reason."""

    schema_name: Literal["raw/1"] = Field(alias="schema")
    meter_id: MeterId | None
    protocol: Literal["wmbus", "mbus", "modbus"] | None = None
    frame: HexFrame
    error: FrameError


Message = ReadingMessage | RawMessage


def message_topic(message: Message, *, topic_root: str = DEFAULT_TOPIC_ROOT) -> str:
    """The topic a message is published on (DESIGN.md section 3)."""
    if isinstance(message, ReadingMessage):
        return f"{topic_root}/{message.gateway_id}/{message.meter_id}/reading"
    return f"{topic_root}/{message.gateway_id}/{message.meter_id or 'unknown'}/raw"


def parse_message(topic: str, payload: bytes, *, topic_root: str = DEFAULT_TOPIC_ROOT) -> Message:
    """The message on `topic`, or InvalidMessage saying what is wrong with it."""
    levels = topic.split("/")
    if len(levels) != 4 or levels[0] != topic_root or levels[3] not in ("reading", "raw"):
        raise InvalidMessage(
            f"topic is not {topic_root}/GATEWAY/METER/reading or {topic_root}/GATEWAY/METER/raw"
        )
    model: type[ReadingMessage] | type[RawMessage] = (
        ReadingMessage if levels[3] == "reading" else RawMessage
    )
    try:
        message = model.model_validate_json(payload)
    except ValidationError as exc:
        raise InvalidMessage(_describe(exc)) from None
    if message_topic(message, topic_root=topic_root) != "/".join(
        (topic_root, levels[1], _meter_id(levels[2]), levels[3])
    ):
        raise InvalidMessage("the topic's gateway or meter differs from the payload's")
    return message


def _describe(exc: ValidationError) -> str:
    """The errors by field path, without the input values: a payload is not to be echoed."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_ERROR_LINES]:
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        lines.append(f"{where}: {error['msg']}")
    more = exc.error_count() - _MAX_ERROR_LINES
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)
