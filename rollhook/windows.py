"""Deploy windows: when automatic changes may start, on the wall clock of a time zone.

A target's ``windows`` are ``allow`` and ``deny`` rules (``"Mon-Fri 08:00-18:00"``, each
with its ``tz``). Automatic changes may start when the moment is inside no ``deny`` rule
and, if there are ``allow`` rules, inside one of them. Rules are read in local wall-clock
time with the standard library's zoneinfo, so ``08:00`` stays 08:00 across a DST change.
Pure: the moment is always given, never read from a clock here.

Span syntax: ``[DAYS] HH:MM-HH:MM``. DAYS is ``Mon``, ``Mon-Fri``, ``Fri-Mon`` (wrapping),
``Sat,Sun``, ``Mon-Wed,Fri`` or ``*``; without DAYS every day. An end before the start
runs past midnight into the next day (``Fri 22:00-02:00`` is Friday night);
``24:00`` is the end of the day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SPAN = re.compile(
    r"^\s*(?:(?P<days>[A-Za-z*][A-Za-z,\-\s*]*?)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
_DAY_IN_MINUTES = 24 * 60


@dataclass(frozen=True)
class Rule:
    kind: Literal["allow", "deny"]
    text: str  # as written, for messages
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight; <= start runs into the next day
    tz: ZoneInfo

    def covers(self, moment: datetime) -> bool:
        """Whether an aware ``moment`` falls inside the rule (start inclusive, end not)."""
        local = moment.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # Past midnight: the evening of a listed day, or the small hours after one.
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )

    def edges(self, after: datetime, days: int = 8) -> list[datetime]:
        """The moments the rule starts or ends in the ``days`` after ``after``."""
        local = after.astimezone(self.tz)
        found = []
        for offset in range(-1, days + 1):
            date = (local + timedelta(days=offset)).date()
            for minute in (self.start, self.end):
                day = date + timedelta(days=minute // _DAY_IN_MINUTES)
                clock = time((minute % _DAY_IN_MINUTES) // 60, minute % 60)
                # A wall-clock time skipped by DST (02:30 on the spring change) maps to
                # the instant after the gap, as zoneinfo's fold=0 reading gives it.
                edge = datetime.combine(day, clock, self.tz)
                if edge > after:
                    found.append(edge)
        return found

    def describe(self) -> str:
        return f"{self.kind} {self.text} {self.tz.key}"


def parse_rule(kind: Literal["allow", "deny"], text: str, tz: str = "UTC") -> Rule:
    """A rule from the targets file; ValueError with the reason when it is not one."""
    match = _SPAN.match(text)
    if match is None:
        raise ValueError(f"{text!r}: use [days] HH:MM-HH:MM, e.g. 'Mon-Fri 08:00-18:00'")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r} (use e.g. Europe/Berlin or UTC)") from exc
    start, end = _minutes(match.group("start"), text), _minutes(match.group("end"), text)
    if start == _DAY_IN_MINUTES:
        raise ValueError(f"{text!r}: a window cannot start at 24:00")
    if start == end:
        raise ValueError(f"{text!r}: starts and ends at the same time (all day is 00:00-24:00)")
    days = _days(match.group("days") or "*", text)
    return Rule(kind, text.strip(), days, start, end % _DAY_IN_MINUTES or _DAY_IN_MINUTES, zone)


def _minutes(clock: str, text: str) -> int:
    hours, minutes = (int(part) for part in clock.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r}: {clock} is not a time of day")
    return hours * 60 + minutes


def _days(text: str, whole: str) -> frozenset[int]:
    days: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if part == "*":
            days.update(range(7))
            continue
        first, _, last = (p.strip() for p in part.partition("-"))
        a, b = _day(first), _day(last or first)
        if a is None or b is None:
            raise ValueError(f"{whole!r}: {part!r} is not a day or a range of days (Mon-Fri)")
        days.update((a + n) % 7 for n in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str) -> int | None:
    for names in (DAYS, _FULL):
        if name in names:
            return names.index(name)
    return None


@dataclass(frozen=True)
class Windows:
    """A target's rules together; no rules means always open."""

    rules: tuple[Rule, ...] = ()

    def open_at(self, moment: datetime) -> bool:
        allow = [rule for rule in self.rules if rule.kind == "allow"]
        if allow and not any(rule.covers(moment) for rule in allow):
            return False
        return not any(rule.covers(moment) for rule in self.rules if rule.kind == "deny")

    def opens_after(self, moment: datetime) -> datetime | None:
        """The first moment after ``moment`` at which the windows are open (None: never
        within a week, e.g. a deny rule that covers every day)."""
        if self.open_at(moment):
            return moment
        edges = sorted({edge for rule in self.rules for edge in rule.edges(moment)})
        return next((edge for edge in edges if self.open_at(edge)), None)

    def holds(self, moment: datetime) -> str | None:
        """Why automatic changes wait at ``moment`` (:meth:`why_closed`); None when open."""
        return None if self.open_at(moment) else self.why_closed(moment)

    def why_closed(self, moment: datetime) -> str:
        """Why automatic changes wait now, and until when (for the record)."""
        covering = [r.describe() for r in self.rules if r.kind == "deny" and r.covers(moment)]
        reason = ", ".join(covering) or "outside every allow window"
        opens = self.opens_after(moment)
        if opens is None:
            return f"deploy window closed ({reason}); it does not open within a week"
        tz = self.rules[0].tz
        return f"deploy window closed ({reason}); opens {opens.astimezone(tz):%a %Y-%m-%d %H:%M %Z}"
