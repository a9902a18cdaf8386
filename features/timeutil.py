"""UTC instants, days and daily partition keys: the one definition every layer uses.

Semantics (docs/tables.md, "Time"):

* every instant is UTC; a naive :class:`datetime.datetime` is *read as* UTC (never as the
  machine's local zone), an aware one is converted to UTC;
* a :class:`datetime.date` stands for the UTC day, and as an instant for its UTC midnight;
* a daily partition key is the ISO date ``YYYY-MM-DD`` of that UTC day;
* day ranges are half-open ``[start, end)`` unless the name says ``inclusive``.

Microsecond conversions use integer arithmetic, so they are exact over the whole
:class:`datetime.datetime` range (no float rounding).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
ONE_DAY = dt.timedelta(days=1)


def as_utc(value: dt.datetime | dt.date) -> dt.datetime:
    """``value`` as an aware UTC datetime.

    A naive datetime is read as UTC, an aware one is converted, a date becomes its UTC midnight.
    """
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dt.date):
        return utc_midnight(value)
    raise TypeError(f"expected a datetime or a date, got {type(value).__name__}")


def as_utc_or_none(value: dt.datetime | dt.date | None) -> dt.datetime | None:
    """:func:`as_utc`, passing ``None`` through."""
    return None if value is None else as_utc(value)


def utc_midnight(day: dt.date) -> dt.datetime:
    """The first instant of the UTC day ``day`` (a datetime's own date is used, its time dropped)."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def utc_date(value: dt.datetime | dt.date) -> dt.date:
    """The UTC day an instant falls on (a naive datetime is read as UTC; a date is itself)."""
    if isinstance(value, dt.datetime):
        return as_utc(value).date()
    return value


def to_micros(value: dt.datetime | dt.date) -> int:
    """Microseconds since the Unix epoch of ``value`` (see :func:`as_utc`), exactly."""
    delta = as_utc(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> dt.datetime:
    """The aware UTC datetime ``us`` microseconds after the Unix epoch (inverse of :func:`to_micros`)."""
    return EPOCH + dt.timedelta(microseconds=int(us))


def day_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every UTC day of the half-open range ``[start, end)``, ascending (empty if ``end <= start``)."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def day_keys(start: dt.date, end: dt.date) -> list[str]:
    """The daily partition keys (ISO dates) of ``[start, end)``, ascending."""
    return [day.isoformat() for day in day_range(start, end)]


def day_keys_inclusive(first: dt.date, last: dt.date) -> list[str]:
    """The daily partition keys of ``[first, last]`` (both ends included), ascending."""
    return day_keys(first, last + ONE_DAY)


def keys_between(keys: Iterable[str], start: dt.date, end: dt.date) -> list[str]:
    """The keys of ``keys`` that are ISO dates in ``[start, end)``, sorted; other keys are skipped."""
    out = []
    for key in keys:
        try:
            day = dt.date.fromisoformat(key)
        except (TypeError, ValueError):
            continue
        if start <= day < end:
            out.append(key)
    return sorted(out)


@dataclass(frozen=True)
class DateWindow:
    """A half-open range of UTC days ``[start, end)``: the days a partitioned run covers.

    An empty window (``end <= start``) raises ``ValueError``.
    """

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty date window: {self.start} .. {self.end}")

    @classmethod
    def inclusive(cls, first: dt.date, last: dt.date) -> DateWindow:
        """The window of the days ``first`` to ``last``, both included."""
        return cls(first, last + ONE_DAY)

    def dates(self) -> list[str]:
        """The daily partition keys of the window (ISO dates), ascending."""
        return day_keys(self.start, self.end)
