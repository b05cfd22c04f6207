"""Hand-made meters and simulated buses for the tests of the simulators and the drivers."""

from __future__ import annotations

from decimal import Decimal

from firmware_sim.fleet import DEFAULT_EPOCH
from firmware_sim.mbus_slave import MbusSlave, SlaveBus
from firmware_sim.meter import Identity, Meter


def make_meter(
    ident: str,
    primary: int,
    manufacturer: str = "KAM",
    *,
    version: int = 0x1B,
    medium: int = 0x16,
    **changes: object,
) -> Meter:
    fields: dict[str, object] = {
        "identity": Identity(manufacturer, ident, version, medium),
        "epoch": DEFAULT_EPOCH,
        "start_index": Decimal("250.000"),
        "primary_address": primary,
        "noise_seed": primary,
    }
    fields.update(changes)
    return Meter(**fields)  # type: ignore[arg-type]


def bus_of(*meters: Meter, history_months: int = 12, encrypted: bool = False) -> SlaveBus:
    return SlaveBus(
        MbusSlave(m, history_months=history_months, encrypted=encrypted) for m in meters
    )
