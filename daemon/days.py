"""Calendar arithmetic in the daemon's local time, and its bridge to the store's naive-UTC timestamps.

Reports and history count capture days and Monday-to-Sunday weeks in local time; the store keeps
processing times as naive UTC, so "today" in `status` starts at local midnight converted to UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def midnight_utc(day: date) -> datetime:
    """Local midnight starting `day`, as the store's naive UTC."""
    return datetime.combine(day, time()).astimezone().astimezone(UTC).replace(tzinfo=None)


def today_start_utc() -> datetime:
    """Local midnight today, as the store's naive UTC."""
    return midnight_utc(date.today())


def week_start(day: date) -> date:
    """The Monday of the week that holds `day`."""
    return day - timedelta(days=day.weekday())
