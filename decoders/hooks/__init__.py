"""Named pure hooks for proprietary payloads that no standard describes.

A meter profile names its hook (`hook = "diehl_prios"`); the decoder calls it with the frame and
what the envelope already decoded. A hook is pure like the rest of decoders/ and raises only
DecodeError subclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from decoders.telegram import Address, DataRecord, SecurityInfo


@dataclass(frozen=True, slots=True)
class HookInput:
    frame: bytes  # the CRC-stripped frame, L-field at offset 0
    ci: int
    payload: bytes  # the bytes after the CI (or after the TPL header, when there is one)
    address: Address
    key: bytes | None


@dataclass(frozen=True, slots=True)
class HookResult:
    records: tuple[DataRecord, ...]
    flags: frozenset[str] = frozenset()
    security: SecurityInfo | None = None
    address: Address | None = None  # when the payload names the meter differently


# A hook returns None to hand the frame back to the generic decoder (a maker whose profile
# needs a hook for its proprietary frames also sends ordinary OMS ones).
Hook = Callable[[HookInput], HookResult | None]

HOOKS: dict[str, Hook] = {}

# The hooks import HookInput and HookResult from this module, so they are registered after both
# exist.
from decoders.hooks import (  # noqa: E402
    apator,
    apator_eitn,
    bfw,
    bmeters,
    bmeters_rfmtx1,
    diehl_prios,
    qundis,
    techem,
    techem_heat,
    zenner,
)

HOOKS.update(
    {
        "apator162": apator.apator162,
        "apatorna1": apator.apatorna1,
        "apatoreitn": apator_eitn.apatoreitn,
        "bfw240radio": bfw.bfw240radio,
        "compact5": techem_heat.compact5,
        "diehl_prios": diehl_prios.decode,
        "fhkvdataiii": techem_heat.fhkvdataiii,
        "hydrodigit": bmeters.hydrodigit,
        "qundis": qundis.qundis,
        "rfmtx1": bmeters_rfmtx1.rfmtx1,
        "techem_mkradio": techem.techem_mkradio,
        "vario451": techem_heat.vario451,
        "zenner0b": zenner.zenner0b,
    }
)
