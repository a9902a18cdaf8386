"""features.timeutil: UTC instants, days and partition keys."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.timeutil import (
    EPOCH,
    DateWindow,
    UTC,
    as_utc,
    as_utc_or_none,
    day_keys,
    day_keys_inclusive,
    day_range,
    from_micros,
    keys_between,
    to_micros,
    utc_date,
    utc_midnight,
)

PLUS8 = dt.timezone(dt.timedelta(hours=8))


def test_as_utc_hand_cases():
    assert as_utc(dt.datetime(2022, 4, 8, 12)) == dt.datetime(2022, 4, 8, 12, tzinfo=UTC)
    assert as_utc(dt.datetime(2022, 4, 8, 12)).tzinfo is UTC
    assert as_utc(dt.datetime(2022, 4, 8, 3, tzinfo=PLUS8)) == dt.datetime(2022, 4, 7, 19, tzinfo=UTC)
    assert as_utc(dt.datetime(2022, 4, 8, 3, tzinfo=PLUS8)).tzinfo == UTC
    assert as_utc(dt.date(2022, 4, 8)) == dt.datetime(2022, 4, 8, tzinfo=UTC)
    assert as_utc_or_none(None) is None
    with pytest.raises(TypeError):
        as_utc("2022-04-08")  # type: ignore[arg-type]


def test_midnight_date_and_micros_hand_cases():
    assert utc_midnight(dt.date(2022, 4, 8)) == dt.datetime(2022, 4, 8, tzinfo=UTC)
    assert utc_date(dt.datetime(2022, 4, 8, 1, tzinfo=PLUS8)) == dt.date(2022, 4, 7)
    assert utc_date(dt.date(2022, 4, 8)) == dt.date(2022, 4, 8)
    assert to_micros(EPOCH) == 0
    assert to_micros(dt.date(1970, 1, 2)) == 86_400_000_000
    assert to_micros(dt.datetime(1969, 12, 31, 23, 59, 59, 999_999)) == -1
    assert to_micros(dt.datetime(2022, 4, 8, tzinfo=UTC)) == 1_649_376_000_000_000
    assert from_micros(1_649_376_000_000_000) == dt.datetime(2022, 4, 8, tzinfo=UTC)


def test_day_ranges_hand_cases():
    d = dt.date(2022, 2, 27)
    assert day_range(d, dt.date(2022, 3, 2)) == [dt.date(2022, 2, 27), dt.date(2022, 2, 28), dt.date(2022, 3, 1)]
    assert day_keys(d, dt.date(2022, 3, 1)) == ["2022-02-27", "2022-02-28"]
    assert day_keys(d, d) == [] and day_keys(d, dt.date(2022, 2, 1)) == []
    assert day_keys_inclusive(d, d) == ["2022-02-27"]
    assert day_keys_inclusive(dt.date(2024, 2, 28), dt.date(2024, 3, 1)) == ["2024-02-28", "2024-02-29", "2024-03-01"]
    assert DateWindow(d, dt.date(2022, 3, 1)).dates() == ["2022-02-27", "2022-02-28"]
    assert DateWindow.inclusive(d, d).dates() == ["2022-02-27"]
    with pytest.raises(ValueError, match="empty date window"):
        DateWindow(d, d)
    keys = ["2022-04-09", "all", "2022-04-08", "2022-04-10", "not-a-day"]
    assert keys_between(keys, dt.date(2022, 4, 8), dt.date(2022, 4, 10)) == ["2022-04-08", "2022-04-09"]


instants = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1),
    timezones=st.sampled_from([None, UTC, PLUS8, dt.timezone(dt.timedelta(hours=-11, minutes=-30))]),
)  # fmt: skip
days = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 1, 1))


@given(instants)
def test_micros_round_trip_and_order(t):
    us = to_micros(t)
    assert from_micros(us) == as_utc(t)
    assert as_utc(t).tzinfo is not None and as_utc(t).utcoffset() == dt.timedelta(0)
    assert to_micros(utc_midnight(utc_date(t))) <= us < to_micros(utc_midnight(utc_date(t)) + dt.timedelta(days=1))


@given(days, st.integers(min_value=-3, max_value=400))
def test_day_keys_are_consecutive_and_half_open(start, n):
    end = start + dt.timedelta(days=n)
    keys = day_keys(start, end)
    assert len(keys) == max(n, 0)
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(dt.date.fromisoformat(k) - dt.date.fromisoformat(j) == dt.timedelta(days=1) for j, k in zip(keys, keys[1:]))
    if n > 0:
        assert keys[0] == start.isoformat() and keys[-1] == (end - dt.timedelta(days=1)).isoformat()
        assert day_keys_inclusive(start, end - dt.timedelta(days=1)) == keys
        assert DateWindow(start, end).dates() == keys
    assert keys_between(keys + ["all"], start, end) == keys
