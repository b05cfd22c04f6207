"""Alert values the engines exchange with the storage side (DESIGN.md section 4, `alerts`).

An engine is told which alerts are open and returns the changes to make. Several rules can open
alerts of one kind (a meter's own leak flag and a continuous flow seen in its readings are both
`leak`), so an open alert is known by its kind and its `rule`; the rule travels in
`evidence["rule"]`, which is how the storage side gets it back from an `alerts` row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

# DESIGN.md section 4 lists the kinds; `low_battery` is added here because section 6 names low
# battery among the meter flags that open and close alerts.
AlertKind = Literal[
    "leak",
    "burst",
    "backflow",
    "dry",
    "tamper",
    "low_battery",
    "night_flow",
    "no_data",
    "verification_due",
    "verification_overdue",
    "implausible_reading",
]
ALERT_KINDS = frozenset(get_args(AlertKind))


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert row with `closed_at` null, as the engines need to see it."""

    kind: str
    rule: str
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class AlertChange:
    """Open or close one alert: for `open`, `at` is opened_at; for `close`, closed_at of the
    open alert with the same kind and rule. `evidence` is JSON-ready and carries `rule`."""

    action: Literal["open", "close"]
    kind: str
    rule: str
    at: datetime
    evidence: Mapping[str, Any] = field(default_factory=dict, hash=False)


def opening(kind: str, rule: str, at: datetime, **evidence: Any) -> AlertChange:
    return AlertChange("open", kind, rule, at, {"rule": rule, **evidence})


def closing(alert: OpenAlert, at: datetime, **evidence: Any) -> AlertChange:
    return AlertChange("close", alert.kind, alert.rule, at, {"rule": alert.rule, **evidence})


def open_by_rule(alerts: Iterable[OpenAlert], prefix: str) -> dict[str, OpenAlert]:
    """The open alerts whose rule starts with `prefix`, by rule (the latest if several)."""
    out: dict[str, OpenAlert] = {}
    for alert in alerts:
        if alert.rule.startswith(prefix):
            kept = out.get(alert.rule)
            if kept is None or alert.opened_at > kept.opened_at:
                out[alert.rule] = alert
    return out
