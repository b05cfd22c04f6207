"""Leaks and alarms (DESIGN.md section 6): pure transitions from what is open to what changes.

- Meter flags: a flag in a telegram opens its alert unless one is open; a later telegram
  without the flag closes it. Rule `flag:<name>`; the kind is FLAG_ALERTS[name].
- Night flow (kind `night_flow`, rule `night_flow`): the lowest hourly flow of a night above the
  class threshold for `nights` consecutive nights opens an alert at the end of the last of them;
  a night whose lowest hour is at or below the threshold closes it. A night without a measured
  hour breaks a run but closes nothing.
- Continuous flow (kind `leak`, rule `continuous_flow`): hours with flow covering
  `continuous_hours` without a gap open an alert when the covering hour ends; an hour without
  flow closes it.

The storage side passes the open alerts of the meter and `since`, the latest instant at which
it already decided this rule (the newest opened_at or closed_at it holds for it): conditions
that ended before it only feed the counting, so scanning the same readings again changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.alerts import AlertChange, OpenAlert, closing, open_by_rule, opening
from ingest.flow import FlowThresholds, HourFlow, NightLow

# Meter flags (decoders' status and profile flags) that stand for an alert kind of DESIGN.md
# section 4; flags about the past (leak_before, ...) and device errors open nothing.
FLAG_ALERTS: Mapping[str, str] = {
    "leak": "leak",
    "burst": "burst",
    "backflow": "backflow",
    "reverse": "backflow",
    "dry": "dry",
    "tamper": "tamper",
    "low_battery": "low_battery",
}
FLAG_RULE = "flag:"
NIGHT_FLOW = "night_flow"
CONTINUOUS_FLOW = "continuous_flow"
_BEGINNING = datetime.min.replace(tzinfo=UTC)


def flag_changes(
    flags: Iterable[str],
    at: datetime,
    open_alerts: Iterable[OpenAlert],
    *,
    last_status_at: datetime | None = None,
    status_raw: int | None = None,
) -> list[AlertChange]:
    """The alerts a telegram's status `flags` at `at` opens and closes.

    `last_status_at` is the time of the newest status already applied for the meter: a telegram
    no newer than it (redelivered, or late from a second gateway) changes nothing.
    """
    if last_status_at is not None and at <= last_status_at:
        return []
    present = set(flags)
    current = open_by_rule(open_alerts, FLAG_RULE)
    detail: dict[str, Any] = {"flags": sorted(present)}
    if status_raw is not None:
        detail["status_raw"] = status_raw
    changes: list[AlertChange] = []
    for flag in sorted(present):
        kind = FLAG_ALERTS.get(flag)
        rule = FLAG_RULE + flag
        if kind is not None and rule not in current:
            changes.append(opening(kind, rule, at, **detail))
    for rule, alert in sorted(current.items()):
        if rule.removeprefix(FLAG_RULE) not in present and at > alert.opened_at:
            changes.append(closing(alert, at, **detail))
    return changes


def night_flow_changes(
    lows: Sequence[NightLow],
    open_alerts: Iterable[OpenAlert],
    thresholds: FlowThresholds,
    *,
    since: datetime | None = None,
) -> list[AlertChange]:
    """Open and close `night_flow` alerts from consecutive nights' lowest hourly flows."""
    current = open_by_rule(open_alerts, NIGHT_FLOW).get(NIGHT_FLOW)
    decided = _decided(since, current)
    changes: list[AlertChange] = []
    run: list[NightLow] = []
    for low in sorted(lows, key=lambda n: n.night):
        if run and low.night - run[-1].night != timedelta(days=1):
            run = []
        if low.low is None:
            run = []
            continue
        if not low.low.exceeds(thresholds.night_lph):
            run = []
            if current is not None and low.end > decided:
                changes.append(closing(current, low.end, quiet_night=_night_json(low)))
                current, decided = None, low.end
            continue
        run.append(low)
        if current is None and len(run) >= thresholds.nights and low.end > decided:
            nights = [_night_json(n) for n in run[-thresholds.nights :]]
            change = opening(
                "night_flow",
                NIGHT_FLOW,
                low.end,
                threshold_lph=str(thresholds.night_lph),
                nights=nights,
            )
            changes.append(change)
            current, decided = OpenAlert("night_flow", NIGHT_FLOW, low.end), low.end
    return changes


def continuous_flow_changes(
    flows: Sequence[HourFlow],
    open_alerts: Iterable[OpenAlert],
    thresholds: FlowThresholds,
    *,
    since: datetime | None = None,
) -> list[AlertChange]:
    """Open and close `leak` alerts of rule `continuous_flow` from `hourly_flows`."""
    limit = thresholds.continuous_lph
    if limit is None:
        return []
    needed = timedelta(hours=thresholds.continuous_hours)
    current = open_by_rule(open_alerts, CONTINUOUS_FLOW).get(CONTINUOUS_FLOW)
    decided = _decided(since, current)
    changes: list[AlertChange] = []
    # The current run of hours with flow: where it starts, how far it covers, its lowest hour.
    first: HourFlow | None = None
    lowest: HourFlow | None = None
    covered_to = _BEGINNING
    for flow in flows:
        if not flow.exceeds(limit):
            first = None
            if current is not None and flow.end > decided:
                changes.append(closing(current, flow.end, hour_without_flow=flow.to_json()))
                current, decided = None, flow.end
            continue
        if first is None or lowest is None or flow.start > covered_to:
            first, lowest, covered_to = flow, flow, flow.end
        else:
            if flow.below(lowest):
                lowest = flow
            covered_to = max(covered_to, flow.end)
        if current is None and covered_to - first.start >= needed and covered_to > decided:
            changes.append(
                opening(
                    "leak",
                    CONTINUOUS_FLOW,
                    covered_to,
                    threshold_lph=str(limit),
                    flowing_since=first.start.isoformat(),
                    lowest_hour=lowest.to_json(),
                )
            )
            current = OpenAlert("leak", CONTINUOUS_FLOW, covered_to)
            decided = covered_to
    return changes


def _decided(since: datetime | None, current: OpenAlert | None) -> datetime:
    instants = [t for t in (since, current.opened_at if current else None) if t is not None]
    return max(instants) if instants else _BEGINNING


def _night_json(low: NightLow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "night": low.night.isoformat(),
        "window": [low.start.isoformat(), low.end.isoformat()],
    }
    if low.low is not None:
        out["lowest_hour"] = low.low.to_json()
    return out
