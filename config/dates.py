"""The dates a URL query or form may name: one range for every date and datetime filter.

A value outside it (year 1, year 9999, ...) is refused as a 400 or a form error, never a
500. The range is wider than any real filter needs and far enough from `datetime.min` and
`datetime.max` that moving a value to UTC or adding an hour, a day or a month to it cannot
overflow, and that every supported database stores the result.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(2999, 12, 31)
EARLIEST = datetime.combine(EARLIEST_DATE, time.min, tzinfo=UTC)
# Exclusive: the first moment after LATEST_DATE.
END = datetime.combine(LATEST_DATE + timedelta(days=1), time.min, tzinfo=UTC)
# Longer text is no date ("2024-05-01T12:34:56.123456+05:30" is 32 characters).
MAX_LENGTH = 40
RANGE_MESSAGE = f"Use a date from {EARLIEST_DATE.isoformat()} to {LATEST_DATE.isoformat()}."


def date_in_range(day: date) -> bool:
    return EARLIEST_DATE <= day <= LATEST_DATE


def datetime_in_range(moment: datetime) -> bool:
    """`moment` (aware) lies in [EARLIEST, END)."""
    return EARLIEST <= moment < END
