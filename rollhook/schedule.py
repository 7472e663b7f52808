"""When periodic work is due: a small schedule grammar, pure and clock-free.

```
hourly                      every hour at :00
hourly :15                  every hour at :15
daily                       every day at 00:00
daily 03:00                 every day at 03:00
weekly                      every Sunday at 00:00
weekly Sun 03:00            every Sunday at 03:00 (Mon Tue Wed Thu Fri Sat Sun)
daily 03:00 Europe/Berlin   any of them with an IANA time zone last (default UTC)
```
``Schedule.parse`` raises ValueError with one line saying what is wrong. The functions
take the time as an argument (never the clock), so the scheduler and its tests decide
what "now" is. In a zone with daylight saving time, a wall-clock time that does not
exist that day (the hour skipped in spring) runs at the same offset as before the switch
(an hour later on the wall), and one that happens twice (autumn) runs once, the first
time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Every = Literal["hourly", "daily", "weekly"]

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
PERIODS: dict[Every, timedelta] = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_MINUTE = re.compile(r"^:([0-5]\d)$")


@dataclass(frozen=True)
class Schedule:
    every: Every
    hour: int = 0
    minute: int = 0
    weekday: int = 6  # Monday 0 ... Sunday 6 (``weekly`` only)
    zone: str = "UTC"

    @classmethod
    def parse(cls, text: str) -> Schedule:
        words = str(text).split()
        if not words or words[0] not in PERIODS:
            raise ValueError(
                f"not a schedule: {text!r} (use hourly, daily HH:MM or weekly Sun HH:MM, "
                "optionally followed by a time zone)"
            )
        every: Every = words[0]
        rest = words[1:]
        zone = "UTC"
        if rest and ("/" in rest[-1] or rest[-1] == "UTC"):
            zone = rest.pop()
            _zone(zone)
        hour = minute = 0
        weekday = 6
        if every == "hourly":
            if rest:
                match = _MINUTE.match(rest.pop(0))
                if match is None:
                    raise ValueError(f"{text!r}: hourly takes the minute as :MM, e.g. hourly :15")
                minute = int(match.group(1))
        else:
            if every == "weekly" and rest and not _CLOCK.match(rest[0]):
                weekday = _weekday(rest.pop(0), text)
            if rest:
                match = _CLOCK.match(rest.pop(0))
                if match is None:
                    raise ValueError(f"{text!r}: the time of day is HH:MM (00:00 to 23:59)")
                hour, minute = int(match.group(1)), int(match.group(2))
        if rest:
            raise ValueError(f"{text!r}: did not understand {' '.join(rest)!r}")
        return cls(every, hour, minute, weekday, zone)

    @property
    def period(self) -> timedelta:
        """The time between two runs (a week, a day, an hour)."""
        return PERIODS[self.every]

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after ``moment`` (aware), in UTC."""
        if moment.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        zone = _zone(self.zone)
        local = moment.astimezone(zone)
        if self.every == "hourly":
            # Hours are counted in UTC: an hour skipped or repeated on the wall is not.
            utc = moment.astimezone(UTC)
            candidate = utc.replace(minute=self.minute, second=0, microsecond=0)
            while candidate <= utc:
                candidate += timedelta(hours=1)
            return candidate
        day = local.date() - timedelta(days=1)
        while True:
            if self.every == "daily" or day.weekday() == self.weekday:
                candidate = _at(day, self.hour, self.minute, zone)
                if candidate > moment:
                    return candidate
            day += timedelta(days=1)

    def __str__(self) -> str:
        if self.every == "hourly":
            text = f"hourly :{self.minute:02d}"
        elif self.every == "daily":
            text = f"daily {self.hour:02d}:{self.minute:02d}"
        else:
            text = f"weekly {DAYS[self.weekday]} {self.hour:02d}:{self.minute:02d}"
        return text if self.zone == "UTC" else f"{text} {self.zone}"


_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)") from None


def _at(day: date, hour: int, minute: int, zone: tzinfo) -> datetime:
    """The wall-clock time ``hour:minute`` on ``day`` in ``zone``, as a UTC instant.

    ``fold=0`` (PEP 495): a time skipped by a clock change is read with the offset before
    the change, and a time that happens twice is the first one.
    """
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


def _weekday(word: str, text: str) -> int:
    name = word.lower()
    for n, day in enumerate(_LONG_DAYS):
        if name in (day, day[:3]):
            return n
    raise ValueError(f"{text!r}: {word!r} is not a day (Mon Tue Wed Thu Fri Sat Sun)")


def is_stale(last: datetime | None, since: datetime, schedule: Schedule, now: datetime) -> bool:
    """Whether the last success (or, never one, the start of the schedule) is older than
    twice the schedule's period."""
    return now - (last or since) > 2 * schedule.period
