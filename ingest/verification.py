"""Metrological verification tracking (DESIGN.md section 7).

A rules table gives the interval in years by country (ISO 3166-1 alpha-2), medium and meter
kind (`*`: any kind; medium `water` covers every water temperature without a row of its own),
the same shape as the `verification_rules` table. How a country counts the interval differs,
so it is a second, per-country table (COUNTING):

- from a verification date: the same day n years later (`date`); the end of the year in which
  that day falls (`year_end`); or n years from the 1st of January after the verification year
  (`next_january`);
- from the marking year of a new (conformity-assessed) meter, whose day is unknown: the end of
  year Y + n (`year_end`), the 1st of December of Y + n (`december`), or, where no rule could be
  confirmed, the 1st of January of Y + n (`year_start`): the earliest day the interval can end,
  so a due date is never later than the legal one.

A due date is the first day on which the meter is no longer verified. Alerts: `verification_due`
from 90 days before it, `verification_overdue` from it on (local midnight of those days), one at
a time; both close when a new verification moves the date out of reach.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ingest.alerts import AlertChange, OpenAlert, closing, opening
from ingest.boundaries import DEFAULT_ZONE, local_midnight, require_utc

RULE = "verification"
LEAD = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class VerificationRule:
    country: str
    medium: str
    kind: str
    years: int
    source: str


@dataclass(frozen=True, slots=True)
class Counting:
    after_verification: Literal["date", "year_end", "next_january"]
    after_marking: Literal["year_start", "year_end", "december"]
    source: str


RULES: tuple[VerificationRule, ...] = (
    # Cabinet Regulation No. 289 of 14 May 2024 (list of measuring instruments subject to state
    # metrological control; before it No. 40), as the verification bodies state it (elkora.lv):
    # water meters every 4 years, ultrasonic and electromagnetic ones every 6. The amendment of
    # 3 June 2025 exempts apartment meters in multi-apartment buildings from repeated
    # verification (bis.gov.lv, 9 June 2025); a utility's billing meters are not exempt.
    VerificationRule("LV", "water", "*", 4, "LV Cabinet Regulation No. 289 (2024)"),
    VerificationRule("LV", "water", "ultrasonic", 6, "LV Cabinet Regulation No. 289 (2024)"),
    VerificationRule("LV", "water", "electromagnetic", 6, "LV Cabinet Regulation No. 289 (2024)"),
    # MessEV Anlage 7 via § 34 Abs. 1 Nr. 1: cold water meters 6 years. Warm water meters had 5
    # until the Dritte Verordnung zur Aenderung der MessEV (BGBl. I 2021 S. 4742, in force
    # 3 Nov 2021) set them to 6 as well, for meters already installed too.
    VerificationRule("DE", "water", "*", 6, "DE MessEV Anlage 7 (Kaltwasserzaehler)"),
    VerificationRule("DE", "warm water", "*", 6, "DE MessEV Anlage 7 as amended 2021"),
    # Rozporzadzenie MPiT of 22 March 2019 (Dz.U. 2019 poz. 759): water meters 5 years.
    VerificationRule("PL", "water", "*", 5, "PL Dz.U. 2019 poz. 759"),
    # Order No. 4-523 of 1 Aug 2014 of the Minister of Economy, as amended by No. 4-271 of
    # 8 May 2018: cold and hot water meters in apartments and individual houses, 6 years.
    # Building inlet meters have 2 years there (as the utilities Telsiu vandenys and Silales
    # vandenys cite the same list); that is a place, not a kind, so it has no row here.
    VerificationRule("LT", "water", "*", 6, "LT Order No. 4-523 (2014) as amended 2018"),
    # Regulation No. 65 of 18 Dec 2018 of the Minister of Economic Affairs and Infrastructure:
    # water meters 5 years (up from 2 since 26 Sep 2016; Tallinna Vesi, Voru Vesi). Apartment
    # meters are no longer subject to verification; meters billed by the water utility are.
    VerificationRule("EE", "water", "*", 5, "EE Regulation No. 65 (2018)"),
)

COUNTING: Mapping[str, Counting] = {
    # MessEV § 34 Abs. 1: from the day of verification; Abs. 2: an interval of a year or more
    # ends with the end of the year in which it ends arithmetically, and a meter is presumed
    # placed on the market (MessEG § 37 Abs. 1: the start of its interval) in its marking year.
    "DE": Counting("year_end", "year_end", "DE MessEV § 34 Abs. 1-2, MessEG § 37 Abs. 1"),
    # Dz.U. 2017 poz. 969 § 26 ust. 2 (carried into Dz.U. 2019 poz. 759, as GUM states it):
    # after a verification from the 1st of January of the next year; after a conformity
    # assessment from the 1st of December of the year marked on the meter (M20: 1 Dec 2025).
    "PL": Counting("next_january", "december", "PL Dz.U. 2017 poz. 969 § 26 ust. 2"),
    # Order No. 4-523 item 2: counted from the date of the verification. The marking-year rule
    # could not be confirmed.
    "LT": Counting("date", "year_start", "LT Order No. 4-523 item 2; marking year unconfirmed"),
}
# Latvia and Estonia: no counting rule could be confirmed from public sources; the date of a
# verification certificate, and the earliest possible day for a marking year.
DEFAULT_COUNTING = Counting("date", "year_start", "unconfirmed: from the date, earliest day")

WATER_MEDIA = frozenset({"water", "cold water", "warm water", "hot water"})


@dataclass(frozen=True, slots=True)
class Due:
    due_on: date
    rule: VerificationRule
    basis: Literal["last_verification", "marking_year"]
    counting: Counting

    def to_json(self) -> dict[str, Any]:
        return {
            "due_on": self.due_on.isoformat(),
            "interval_years": self.rule.years,
            "basis": self.basis,
            "source": self.rule.source,
            "counting": self.counting.source,
        }


def find_rule(
    country: str, medium: str, kind: str | None, rules: Sequence[VerificationRule] = RULES
) -> VerificationRule | None:
    """The most specific rule: exact medium before `water`, exact kind before `*`."""
    media = [medium]
    if medium == "hot water":
        media.append("warm water")  # EN 13757-3 hot water (>= 90 C) is warm water to the laws
    if medium in WATER_MEDIA and medium != "water":
        media.append("water")
    by_key = {(r.country, r.medium, r.kind): r for r in rules}
    for candidate in media:
        for wanted in ([kind] if kind and kind != "*" else []) + ["*"]:
            rule = by_key.get((country.upper(), candidate, wanted))
            if rule is not None:
                return rule
    return None


def next_due(
    rule: VerificationRule,
    *,
    marking_year: int | None = None,
    last_verified: date | None = None,
    counting: Counting | None = None,
) -> Due:
    """The due date from the last verification (preferred: it is the newer fact) or the
    marking year, counted as the rule's country counts."""
    how = counting or COUNTING.get(rule.country, DEFAULT_COUNTING)
    years = rule.years
    if last_verified is not None:
        if how.after_verification == "date":
            due = _add_years(last_verified, years)
        elif how.after_verification == "year_end":
            due = date(last_verified.year + years + 1, 1, 1)
        else:
            due = date(last_verified.year + 1 + years, 1, 1)
        return Due(due, rule, "last_verification", how)
    if marking_year is None:
        raise ValueError("a due date needs the marking year or the last verification date")
    if how.after_marking == "year_end":
        due = date(marking_year + years + 1, 1, 1)
    elif how.after_marking == "december":
        due = date(marking_year + years, 12, 1)
    else:
        due = date(marking_year + years, 1, 1)
    return Due(due, rule, "marking_year", how)


def overdue_at(due_on: date | None, at: datetime, zone: ZoneInfo = DEFAULT_ZONE) -> bool:
    """Whether a reading at `at` was taken by a meter past its due date (billing flags it)."""
    return due_on is not None and require_utc(at) >= local_midnight(due_on, zone)


def verification_changes(
    due: Due | None,
    now: datetime,
    open_alerts: Iterable[OpenAlert],
    *,
    zone: ZoneInfo = DEFAULT_ZONE,
    lead: timedelta = LEAD,
) -> list[AlertChange]:
    """Open and close the verification alerts of one meter at `now` (`due` None: no rule or no
    date known, so nothing can be due)."""
    now = require_utc(now, "now")
    current = {a.kind: a for a in open_alerts if a.rule == RULE}
    warned = current.get("verification_due")
    late = current.get("verification_overdue")
    changes: list[AlertChange] = []
    if due is None:
        return [closing(a, max(now, a.opened_at)) for a in (warned, late) if a is not None]
    due_at = local_midnight(due.due_on, zone)
    warn_at = local_midnight(due.due_on - lead, zone)
    detail = due.to_json()
    if now >= due_at:
        if warned is not None:
            changes.append(closing(warned, max(due_at, warned.opened_at), **detail))
        if late is None:
            changes.append(opening("verification_overdue", RULE, due_at, **detail))
    elif now >= warn_at:
        if late is not None:
            changes.append(closing(late, max(now, late.opened_at), **detail))
        if warned is None:
            changes.append(opening("verification_due", RULE, warn_at, **detail))
    else:
        changes.extend(
            closing(a, max(now, a.opened_at), **detail) for a in (warned, late) if a is not None
        )
    return changes


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year + years, day=28)
