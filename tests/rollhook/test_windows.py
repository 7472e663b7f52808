"""Deploy windows at their edges, past midnight and across both DST changes (Europe/Berlin
in 2026: clocks go forward on Sun 29 March at 02:00, back on Sun 25 October at 03:00).
Every moment is given in UTC, as the worker's clock gives it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rollhook.windows import Windows, parse_rule


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


OFFICE = Windows((parse_rule("deny", "Mon-Fri 08:00-18:00", "Europe/Berlin"),))
WORKDAYS = Windows((parse_rule("allow", "Mon-Fri 08:00-18:00", "Europe/Berlin"),))
FRIDAY_NIGHT = Windows((parse_rule("allow", "Fri 22:00-02:00", "UTC"),))
LONG_WEEKEND = Windows((parse_rule("deny", "Fri-Mon 00:00-24:00", "UTC"),))
BOTH = Windows(
    (
        parse_rule("allow", "Mon-Fri 06:00-20:00", "UTC"),
        parse_rule("deny", "Wed 12:00-13:00", "UTC"),
    )
)
AUTUMN_HOUR = Windows((parse_rule("deny", "Sun 02:00-03:00", "Europe/Berlin"),))


@pytest.mark.parametrize(
    ("windows", "moment", "open_"),
    [
        # Winter (CET, UTC+1): 08:00 in Berlin is 07:00 UTC. Start inclusive, end exclusive.
        (OFFICE, "2026-12-02T06:59:59", True),
        (OFFICE, "2026-12-02T07:00:00", False),
        (OFFICE, "2026-12-02T16:59:59", False),
        (OFFICE, "2026-12-02T17:00:00", True),
        (OFFICE, "2026-12-05T10:00:00", True),  # Saturday
        (WORKDAYS, "2026-12-02T07:00:00", True),
        (WORKDAYS, "2026-12-06T10:00:00", False),  # Sunday
        # Across the spring change: 08:00 Berlin is 07:00 UTC on Friday, 06:00 on Monday.
        (WORKDAYS, "2026-03-27T06:30:00", False),
        (WORKDAYS, "2026-03-30T06:30:00", True),
        (WORKDAYS, "2026-03-30T05:59:59", False),
        (OFFICE, "2026-03-30T16:00:00", True),  # 18:00 CEST
        (OFFICE, "2026-03-27T16:00:00", False),  # 17:00 CET
        # The autumn change repeats 02:00-03:00: both readings of it are covered.
        (AUTUMN_HOUR, "2026-10-24T23:59:59", True),  # 01:59 CEST
        (AUTUMN_HOUR, "2026-10-25T00:30:00", False),  # 02:30 CEST
        (AUTUMN_HOUR, "2026-10-25T01:30:00", False),  # 02:30 CET, the second time round
        (AUTUMN_HOUR, "2026-10-25T02:00:00", True),  # 03:00 CET
        # Past midnight: Friday night runs into Saturday.
        (FRIDAY_NIGHT, "2026-12-04T21:59:59", False),
        (FRIDAY_NIGHT, "2026-12-04T22:00:00", True),
        (FRIDAY_NIGHT, "2026-12-05T01:59:59", True),
        (FRIDAY_NIGHT, "2026-12-05T02:00:00", False),
        (FRIDAY_NIGHT, "2026-12-03T23:00:00", False),  # Thursday night
        # A day range that wraps the week, all day long.
        (LONG_WEEKEND, "2026-12-03T23:59:59", True),  # Thursday
        (LONG_WEEKEND, "2026-12-04T00:00:00", False),
        (LONG_WEEKEND, "2026-12-07T23:59:59", False),  # Monday
        (LONG_WEEKEND, "2026-12-08T00:00:00", True),
        # Allow and deny together: deny wins inside the allowed hours.
        (BOTH, "2026-12-02T11:59:00", True),
        (BOTH, "2026-12-02T12:00:00", False),
        (BOTH, "2026-12-02T13:00:00", True),
        (BOTH, "2026-12-02T20:00:00", False),
        (Windows(), "2026-12-02T12:00:00", True),
    ],
)
def test_open_at(windows: Windows, moment: str, open_: bool) -> None:
    assert windows.open_at(utc(moment)) is open_


@pytest.mark.parametrize(
    ("windows", "moment", "opens"),
    [
        (OFFICE, "2026-12-02T07:00:00", "2026-12-02T17:00:00"),
        (OFFICE, "2026-12-02T17:00:00", "2026-12-02T17:00:00"),  # open now
        (OFFICE, "2026-12-02T12:00:00", "2026-12-02T17:00:00"),
        # Friday evening before the spring change: Monday 08:00 is CEST, 06:00 UTC.
        (WORKDAYS, "2026-03-27T17:00:00", "2026-03-30T06:00:00"),
        (WORKDAYS, "2026-10-23T16:30:00", "2026-10-26T07:00:00"),  # and back to CET
        (FRIDAY_NIGHT, "2026-12-05T02:00:00", "2026-12-11T22:00:00"),
        (LONG_WEEKEND, "2026-12-05T12:00:00", "2026-12-08T00:00:00"),
        (AUTUMN_HOUR, "2026-10-25T00:10:00", "2026-10-25T02:00:00"),
        (BOTH, "2026-12-02T12:30:00", "2026-12-02T13:00:00"),
        (Windows((parse_rule("deny", "* 00:00-24:00"),)), "2026-12-02T12:00:00", None),
    ],
)
def test_opens_after(windows: Windows, moment: str, opens: str | None) -> None:
    assert windows.opens_after(utc(moment)) == (utc(opens) if opens else None)


def test_why_closed_names_the_rule_and_the_opening_in_local_time() -> None:
    assert OFFICE.why_closed(utc("2026-12-02T12:00:00")) == (
        "deploy window closed (deny Mon-Fri 08:00-18:00 Europe/Berlin); "
        "opens Wed 2026-12-02 18:00 CET"
    )
    assert WORKDAYS.why_closed(utc("2026-03-27T17:00:00")) == (
        "deploy window closed (outside every allow window); opens Mon 2026-03-30 08:00 CEST"
    )


@pytest.mark.parametrize(
    ("text", "tz", "problem"),
    [
        ("Mon-Fry 08:00-18:00", "UTC", "'mon-fry' is not a day"),
        ("Mon 08:00-08:00", "UTC", "starts and ends at the same time"),
        ("Mon 08:00-25:00", "UTC", "25:00 is not a time of day"),
        ("Mon 08:61-09:00", "UTC", "08:61 is not a time of day"),
        ("Mon 24:00-02:00", "UTC", "cannot start at 24:00"),
        ("weekdays", "UTC", r"use \[days\] HH:MM-HH:MM"),
        ("Monkey 08:00-18:00", "UTC", "'monkey' is not a day"),
        ("Mon 08:00-18:00", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_rules_are_explained(text: str, tz: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rule("deny", text, tz)


def test_day_lists_and_every_day() -> None:
    assert parse_rule("allow", "Mon-Wed,Fri 01:00-02:00").days == {0, 1, 2, 4}
    assert parse_rule("allow", "Sat,Sun 01:00-02:00").days == {5, 6}
    assert parse_rule("allow", "01:00-02:00").days == set(range(7))
    assert parse_rule("allow", "sunday-tuesday 01:00-02:00").days == {6, 0, 1}
