"""The schedule grammar and when each schedule runs next: table tests, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rollhook.schedule import Schedule, is_stale


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "parsed", "shown"),
    [
        ("hourly", Schedule("hourly"), "hourly :00"),
        ("hourly :15", Schedule("hourly", minute=15), "hourly :15"),
        ("daily", Schedule("daily"), "daily 00:00"),
        ("daily 03:00", Schedule("daily", 3, 0), "daily 03:00"),
        ("daily 3:05", Schedule("daily", 3, 5), "daily 03:05"),
        ("  daily   23:59  ", Schedule("daily", 23, 59), "daily 23:59"),
        ("weekly", Schedule("weekly"), "weekly Sun 00:00"),
        ("weekly Sun 03:00", Schedule("weekly", 3, 0, 6), "weekly Sun 03:00"),
        ("weekly monday 04:30", Schedule("weekly", 4, 30, 0), "weekly Mon 04:30"),
        ("weekly Wed", Schedule("weekly", 0, 0, 2), "weekly Wed 00:00"),
        ("weekly 05:00", Schedule("weekly", 5, 0, 6), "weekly Sun 05:00"),
        (
            "daily 03:00 Europe/Berlin",
            Schedule("daily", 3, 0, zone="Europe/Berlin"),
            "daily 03:00 Europe/Berlin",
        ),
        ("hourly :30 UTC", Schedule("hourly", minute=30), "hourly :30"),
    ],
)
def test_schedules_parse_and_print_back(text: str, parsed: Schedule, shown: str) -> None:
    assert Schedule.parse(text) == parsed
    assert str(parsed) == shown
    assert Schedule.parse(shown) == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "not a schedule"),
        ("monthly", "not a schedule"),
        ("every 5 minutes", "not a schedule"),
        ("daily 25:00", "HH:MM"),
        ("daily 3pm", "HH:MM"),
        ("hourly 15", ":MM"),
        ("weekly Funday 03:00", "is not a day"),
        ("daily 03:00 Mars/Olympus", "unknown time zone"),
        ("daily 03:00 extra", "did not understand .extra."),
        ("daily 03:00 04:00", "did not understand"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Schedule.parse(text)


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        # hourly: the next :MM strictly after
        ("hourly", "2026-05-04 10:00:00", "2026-05-04 11:00:00"),
        ("hourly", "2026-05-04 10:59:59", "2026-05-04 11:00:00"),
        ("hourly :15", "2026-05-04 10:14:00", "2026-05-04 10:15:00"),
        ("hourly :15", "2026-05-04 10:15:00", "2026-05-04 11:15:00"),
        ("hourly :15", "2026-05-04 23:20:00", "2026-05-05 00:15:00"),
        # daily: today if still ahead, else tomorrow
        ("daily 03:00", "2026-05-04 02:59:00", "2026-05-04 03:00:00"),
        ("daily 03:00", "2026-05-04 03:00:00", "2026-05-05 03:00:00"),
        ("daily 03:00", "2026-12-31 12:00:00", "2027-01-01 03:00:00"),
        # weekly: 2026-05-03 is a Sunday
        ("weekly Sun 03:00", "2026-05-03 02:00:00", "2026-05-03 03:00:00"),
        ("weekly Sun 03:00", "2026-05-03 03:00:00", "2026-05-10 03:00:00"),
        ("weekly Wed 12:00", "2026-05-03 03:00:00", "2026-05-06 12:00:00"),
        ("weekly", "2026-05-04 00:00:00", "2026-05-10 00:00:00"),
        # a zone: 03:00 in Berlin is 01:00 UTC in summer, 02:00 UTC in winter
        ("daily 03:00 Europe/Berlin", "2026-07-01 00:00:00", "2026-07-01 01:00:00"),
        ("daily 03:00 Europe/Berlin", "2026-01-10 01:30:00", "2026-01-10 02:00:00"),
        ("daily 03:00 Europe/Berlin", "2026-01-10 02:00:00", "2026-01-11 02:00:00"),
        # 2026-03-29: Berlin skips 02:00-03:00; 02:30 runs at the winter offset (01:30 UTC)
        ("daily 02:30 Europe/Berlin", "2026-03-28 12:00:00", "2026-03-29 01:30:00"),
        ("daily 02:30 Europe/Berlin", "2026-03-29 01:30:00", "2026-03-30 00:30:00"),
        # 2026-10-25: Berlin repeats 02:00-03:00; 02:30 runs once, the first time
        ("daily 02:30 Europe/Berlin", "2026-10-24 12:00:00", "2026-10-25 00:30:00"),
        ("daily 02:30 Europe/Berlin", "2026-10-25 00:30:00", "2026-10-26 01:30:00"),
        # the zone's day, not UTC's: Sunday 01:00 in Auckland is Saturday in UTC
        ("weekly Sun 01:00 Pacific/Auckland", "2026-05-01 00:00:00", "2026-05-02 13:00:00"),
    ],
)
def test_next_run(text: str, after: str, expected: str) -> None:
    assert Schedule.parse(text).next_after(utc(after)) == utc(expected)


def test_next_run_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        Schedule.parse("daily").next_after(datetime(2026, 5, 4))


@pytest.mark.parametrize(
    ("text", "period"),
    [("hourly", timedelta(hours=1)), ("daily 03:00", timedelta(days=1)), ("weekly", timedelta(7))],
)
def test_period(text: str, period: timedelta) -> None:
    assert Schedule.parse(text).period == period


@pytest.mark.parametrize(
    ("last", "now", "stale"),
    [
        ("2026-05-04 03:00:00", "2026-05-05 03:30:00", False),
        ("2026-05-04 03:00:00", "2026-05-06 03:00:00", False),  # exactly twice: not yet
        ("2026-05-04 03:00:00", "2026-05-06 03:00:01", True),
        (None, "2026-05-03 00:00:00", False),  # never, but scheduled only a day ago
        (None, "2026-05-04 00:00:01", True),
    ],
)
def test_stale_after_twice_the_period(last: str | None, now: str, stale: bool) -> None:
    schedule = Schedule.parse("daily 03:00")
    since = utc("2026-05-02 00:00:00")
    assert is_stale(utc(last) if last else None, since, schedule, utc(now)) is stale
