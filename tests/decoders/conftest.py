from __future__ import annotations

from decimal import Decimal

from decoders.telegram import Telegram


def volume_of(telegram: Telegram) -> Decimal | None:
    """The current total volume of a telegram (storage 0, tariff 0, instantaneous)."""
    for record in telegram.records:
        if record.quantity == "volume" and record.storage == 0 and record.tariff == 0:
            assert isinstance(record.value, Decimal)
            return record.value
    return None
