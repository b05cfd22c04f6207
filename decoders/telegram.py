"""The values decoders produce (DESIGN.md section 2): frozen, slotted, exact."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from decoders.manufacturer import medium_name

RecordValue = Decimal | str | date | datetime | None


@dataclass(frozen=True, slots=True)
class Address:
    """A meter identity: the wM-Bus A-field with its M-field, or a long TPL header's.

    `id` is the identification number as printed: the hex digits of the 4 bytes in reverse
    order (EN 13757-4 §12.5.3), kept as text because some makers use non-decimal nibbles.
    """

    manufacturer: str
    id: str
    version: int
    device_type: int
    m_raw: int  # the 16-bit M-field as sent, bit 15 included; needed for IVs

    @property
    def meter_id(self) -> str:
        return f"{self.manufacturer}-{self.id}"

    @property
    def medium(self) -> str:
        return medium_name(self.device_type)


@dataclass(frozen=True, slots=True)
class TplHeader:
    """Transport layer header (EN 13757-7 §7; EN 13757-3 §6): short, long or none."""

    ci: int
    access_no: int | None = None
    status: int | None = None
    config: int = 0
    config_ext: int | None = None
    address: Address | None = None  # long header only

    @property
    def security_mode(self) -> int:
        return (self.config >> 8) & 0x1F

    @property
    def encrypted_blocks(self) -> int:
        return (self.config >> 4) & 0x0F


@dataclass(frozen=True, slots=True)
class SecurityInfo:
    mode: int
    encrypted: bool
    decrypted: bool
    layer: str = "tpl"  # "tpl", "ell" (AES-CTR) or "afl"
    mac_verified: bool | None = None


@dataclass(frozen=True, slots=True)
class Status:
    raw: int
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """Everything about a data record except its value; shared by all telegrams of a layout."""

    dif: bytes  # DIF and DIFEs as sent
    vif: bytes  # VIF, VIFEs and any plain-text unit as sent
    data_field: int  # DIF bits 3-0: how the data bytes are coded
    function: str  # instantaneous, maximum, minimum, error
    storage: int
    tariff: int
    subunit: int
    quantity: str
    unit: str
    exponent: int = 0  # power of ten applied to integer and BCD data
    error_code: int | None = None  # VIFE 00-1F (EN 13757-3 Annex F) set by the meter
    name: str | None = None  # a meter profile's name for the field


@dataclass(frozen=True, slots=True)
class DataRecord:
    spec: RecordSpec
    value: RecordValue
    raw: bytes  # the data bytes as sent

    @property
    def quantity(self) -> str:
        return self.spec.quantity

    @property
    def unit(self) -> str:
        return self.spec.unit

    @property
    def storage(self) -> int:
        return self.spec.storage

    @property
    def tariff(self) -> int:
        return self.spec.tariff

    @property
    def subunit(self) -> int:
        return self.spec.subunit

    @property
    def function(self) -> str:
        return self.spec.function


@dataclass(frozen=True, slots=True)
class Telegram:
    """One decoded frame, wired or wireless."""

    protocol: str  # "wmbus" or "mbus"
    c_field: int
    link_address: Address | None  # wM-Bus DLL identity; None on wired M-Bus
    primary_address: int | None  # wired M-Bus A-field; None on wM-Bus
    tpl: TplHeader
    security: SecurityInfo
    status: Status
    records: tuple[DataRecord, ...] = ()
    more_records_follow: bool = False  # DIF 1F: ask again with FCB toggled
    application_error: int | None = None  # CI 70 code (EN 13757-3 §6.6)
    profile: str | None = None  # the meter profile that matched

    @property
    def address(self) -> Address | None:
        """The meter's identity: a long TPL header's wins over the DLL's."""
        return self.tpl.address or self.link_address

    @property
    def meter_id(self) -> str | None:
        address = self.address
        return address.meter_id if address else None
