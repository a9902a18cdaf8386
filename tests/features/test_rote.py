"""RoTE time features: hand-checked calendar cases, the SASRec formulas, pads, pre-1970,
the relative variant, gaps, and hypothesis properties against a ``datetime`` reference."""
from __future__ import annotations

import calendar
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.sequences import rote
from features.sequences.rote import (
    CALENDAR_LEVELS,
    ROTE_COLUMNS,
    calendar_ids,
    first_real,
    gap_features,
    query_ts,
    relative_to_first,
    rote_features,
    sasrec_levels,
    to_epoch_seconds,
)

UTC = dt.timezone.utc


def s(*args) -> int:
    """Seconds since the epoch of a UTC wall-clock time."""
    return calendar.timegm(dt.datetime(*args, tzinfo=UTC).utctimetuple())


def ids(ts, levels=CALENDAR_LEVELS, mask=None) -> dict[str, list]:
    return {k: v.tolist() for k, v in calendar_ids(np.asarray(ts, dtype=np.int64), levels, mask=mask).items()}


def reference_ids(t: int) -> dict[str, int]:
    d = dt.datetime.fromtimestamp(t, UTC)  # == utcfromtimestamp, without the deprecation
    return {
        "year_id": d.year - 1970,
        "month_id": (d.year - 1970) * 12 + d.month - 1,
        "day_id": (d.date() - dt.date(1970, 1, 1)).days,
        "hour_id": t // 3600,
        "minute_id": t // 60,
        "second_id": t,
    }


# --------------------------------------------------------------------------- hand-checked calendar


def test_epoch_day_one():
    # 1970-01-02 00:00:00 UTC = 86400 s: year 0, month 0, day 1
    assert ids([86_400]) == {"year_id": [0], "month_id": [0], "day_id": [1], "hour_id": [24],
                             "minute_id": [1440], "second_id": [86_400]}


@pytest.mark.parametrize(
    "when, year_id, month_id, day_id",
    [
        ((2000, 2, 29), 30, 30 * 12 + 1, 11_016),   # 2000 is a leap year (divisible by 400)
        ((2000, 3, 1), 30, 30 * 12 + 2, 11_017),
        ((2024, 2, 29), 54, 54 * 12 + 1, 19_782),
        ((2024, 3, 1), 54, 54 * 12 + 2, 19_783),
        # 1970..2099: 130 * 365 + 32 leap days (1972..2096) = 47482; + 31 (Jan) + 27 = 47540
        ((2100, 2, 28), 130, 130 * 12 + 1, 47_540),  # 2100 is not a leap year ...
        ((2100, 3, 1), 130, 130 * 12 + 2, 47_541),   # ... so 03-01 directly follows 02-28
    ],
)
def test_leap_years(when, year_id, month_id, day_id):
    got = ids([s(*when)], ("year", "month", "day"))
    assert got == {"year_id": [year_id], "month_id": [month_id], "day_id": [day_id]}


def test_month_end_boundary():
    before, after = s(2022, 1, 31, 23, 59, 59), s(2022, 2, 1)
    assert after - before == 1
    got = ids([before, after], ("year", "month", "day", "hour", "minute", "second"))
    assert got["year_id"] == [52, 52]
    assert got["month_id"] == [52 * 12 + 0, 52 * 12 + 1]
    assert got["day_id"] == [19_023, 19_024]
    assert got["hour_id"][1] - got["hour_id"][0] == 1
    assert got["minute_id"][1] - got["minute_id"][0] == 1
    assert got["second_id"] == [before, after]


def test_year_end_boundary():
    got = ids([s(2023, 12, 31, 23, 59, 59), s(2024, 1, 1)], ("year", "month", "day"))
    assert got == {"year_id": [53, 54], "month_id": [53 * 12 + 11, 54 * 12], "day_id": [19_722, 19_723]}


def test_dst_is_irrelevant_in_utc():
    # Europe's 2023 spring-forward night (2023-03-26 01:00 UTC): UTC days stay 86400 s and hours
    # stay consecutive; a local-time decomposition would show a 23-hour day.
    t = [s(2023, 3, 26, 0, 30), s(2023, 3, 26, 1, 30), s(2023, 3, 26, 2, 30), s(2023, 3, 27, 0, 30)]
    got = ids(t, ("day", "hour"))
    assert got["day_id"] == [19_442, 19_442, 19_442, 19_443]
    assert np.diff(got["hour_id"]).tolist() == [1, 1, 22]


def test_paper_levels_by_default():
    assert set(calendar_ids(np.array([s(2022, 5, 1)]))) == {"year_id", "month_id", "day_id"}
    with pytest.raises(ValueError, match="week"):
        calendar_ids(np.array([1]), ("week",))


# --------------------------------------------------------------------------- SASRec form


def test_sasrec_formulas_on_exact_numbers():
    ts = np.array([86_400 * 365_25 // 100 * 4, 86_400 * 30, 3 * 86_400 + 43_200])  # 1461 days; 30 d; 3.5 d
    got = sasrec_levels(ts)
    np.testing.assert_array_equal(got["days_f"], [1461.0, 30.0, 3.5])
    np.testing.assert_array_equal(got["years_f"], [4.0, 30.0 / 365.25, 3.5 / 365.25])
    np.testing.assert_array_equal(got["months_f"], [48.0, 30.0 / 30.4375, 3.5 / 30.4375])
    assert all(v.dtype == np.float64 for v in got.values())
    # absolute since the epoch, nothing subtracted
    assert sasrec_levels(np.array([s(2024, 2, 29)]))["days_f"][0] == 19_782.0


def test_sasrec_keeps_shape():
    ts = np.array([[0, 86_400], [172_800, 0]])
    assert sasrec_levels(ts)["days_f"].tolist() == [[0.0, 1.0], [2.0, 0.0]]


# --------------------------------------------------------------------------- pads and pre-1970


def test_pads_are_zero():
    t = s(2022, 3, 4, 5, 6, 7)
    got = ids([0, t, 0], CALENDAR_LEVELS)
    assert all(v[0] == 0 and v[2] == 0 and v[1] > 0 for v in got.values())
    lv = sasrec_levels(np.array([0, t]))
    assert all(v[0] == 0.0 for v in lv.values())


def test_mask_marks_pads_and_hides_their_values():
    t = s(2022, 3, 4)
    mask = np.array([False, True, True])
    # a masked-out garbage (even negative) value is never inspected
    got = ids([-5, t, 0], ("year", "day"), mask=mask)
    assert got == {"year_id": [0, 52, 0], "day_id": [0, t // 86_400, 0]}


def test_event_at_epoch_zero_is_a_pad_without_mask():
    # documented limit: without a mask, ts == 0 is a pad; with one it is real (but its ids are 0)
    h = np.array([[0, 86_400 * 10]])
    no_mask = rote_features(h)
    assert no_mask["hist_day_id_rel"].tolist() == [[0, 0]]
    with_mask = rote_features(h, mask=np.array([[True, True]]))
    assert with_mask["hist_day_id"].tolist() == [[0, 10]]
    assert with_mask["hist_day_id_rel"].tolist() == [[0, 10]]
    assert with_mask["gap_prev_s"].tolist() == [[0, 864_000]]


def test_pre_1970_rejected_with_the_value():
    with pytest.raises(ValueError, match=r"pre-1970 timestamp -86400 s at position 1"):
        calendar_ids(np.array([5, -86_400, -1]))
    with pytest.raises(ValueError, match=r"-1 s at position \(1, 0\)"):
        sasrec_levels(np.array([[0, 1], [-1, 2]]))
    with pytest.raises(ValueError, match="pre-1970"):
        gap_features(np.array([[1, 2]]), np.array([-3]))
    with pytest.raises(ValueError, match="pre-1970"):
        calendar_ids(np.array([-1, 5]), mask=np.array([True, True]))


def test_non_integer_input_rejected():
    with pytest.raises(TypeError, match="integer seconds"):
        calendar_ids(np.array([1.5]))


# --------------------------------------------------------------------------- conversion


def test_to_epoch_seconds_from_arrow_and_numpy():
    when = dt.datetime(2024, 2, 29, 12, 0, 0, 999_999, tzinfo=UTC)
    arr = pa.array([when, None], type=pa.timestamp("us", tz="UTC"))
    assert to_epoch_seconds(arr).tolist() == [s(2024, 2, 29, 12), 0]  # floor; null -> pad
    assert to_epoch_seconds(pa.chunked_array([arr, arr])).tolist() == [s(2024, 2, 29, 12), 0] * 2
    npa = np.array(["2024-02-29T12:00:00.999999", "NaT"], dtype="datetime64[us]")
    assert to_epoch_seconds(npa).tolist() == [s(2024, 2, 29, 12), 0]
    assert to_epoch_seconds(np.array(["2022-01-31"], dtype="datetime64[D]")).tolist() == [s(2022, 1, 31)]
    assert to_epoch_seconds(np.array([7], dtype=np.int32)).dtype == np.int64
    with pytest.raises(TypeError):
        to_epoch_seconds(pa.array([1.0]))


def test_to_epoch_seconds_floors_sub_second_before_epoch():
    # floor, not truncation: -0.5 s is second -1 (and would then be rejected as pre-1970)
    npa = np.array([-500_000], dtype="datetime64[us]")
    assert to_epoch_seconds(npa).tolist() == [-1]


# --------------------------------------------------------------------------- relative, gaps, all


def test_relative_to_first_left_and_right_padded():
    x = np.array([[0, 0, 100, 103, 110], [50, 52, 0, 0, 0], [0, 0, 0, 0, 0]])
    mask = x > 0
    assert relative_to_first(x, mask).tolist() == [[0, 0, 0, 3, 10], [0, 2, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert first_real(x, mask).tolist() == [100, 50, 0]
    assert relative_to_first(np.array([0, 5, 9]), np.array([False, True, True])).tolist() == [0, 0, 4]
    xf = np.array([[1.5, 2.0]])
    assert relative_to_first(xf, np.array([[True, True]])).dtype == np.float64


def test_gap_features_by_hand():
    h = np.array([[0, 100, 160, 1_000], [500, 0, 800, 0]])  # second row has a hole
    got = gap_features(h, np.array([1_600, 0]))
    assert got["gap_prev_s"].tolist() == [[0, 0, 60, 840], [0, 0, 300, 0]]
    assert got["gap_to_target_s"].tolist() == [[0, 1_500, 1_440, 600], [0, 0, 0, 0]]  # padded target -> 0
    assert "gap_to_target_s" not in gap_features(h)
    assert query_ts(h).tolist() == [1_000, 800]


def test_rote_features_columns_are_documented():
    h = np.array([[0, s(2022, 1, 31, 23, 59, 59), s(2022, 2, 1)]])
    got = rote_features(h, np.array([s(2023, 1, 1)]), levels=CALENDAR_LEVELS)
    assert set(got) <= set(ROTE_COLUMNS)
    for name in ("hist_day_id", "hist_days_f", "gap_to_target_s", "hist_month_id_rel", "target_year_id_rel"):
        assert name in got and ROTE_COLUMNS[name]
    assert got["hist_month_id_rel"].tolist() == [[0, 0, 1]]
    assert got["target_year_id_rel"].tolist() == [1]
    assert got["target_month_id_rel"].tolist() == [12]
    assert got["query_ts_s"].tolist() == [s(2022, 2, 1)]
    assert rote.rote_features(np.array([0, 86_400 * 3]), 86_400 * 5)["target_day_id_rel"] == 2


def test_columns_name_their_units():
    for name, unit in ROTE_COLUMNS.items():
        assert name.endswith(("_s", "_f", "_id", "_rel")), name
        assert unit


# --------------------------------------------------------------------------- properties

TS_1970_2100 = st.integers(min_value=1, max_value=s(2100, 12, 31, 23, 59, 59))


@settings(max_examples=300, deadline=None)
@given(st.lists(TS_1970_2100, min_size=1, max_size=20))
def test_calendar_ids_match_datetime_reference(ts):
    got = ids(ts)
    for i, t in enumerate(ts):
        assert {k: v[i] for k, v in got.items()} == reference_ids(t)


@settings(max_examples=200, deadline=None)
@given(st.lists(TS_1970_2100, min_size=2, max_size=30))
def test_levels_monotone_in_ts(ts):
    ts = np.sort(np.array(ts, dtype=np.int64))
    for v in calendar_ids(ts, CALENDAR_LEVELS).values():
        assert (np.diff(v) >= 0).all()
    for v in sasrec_levels(ts).values():
        assert (np.diff(v) >= 0).all()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=s(2060, 1, 1)), min_size=1, max_size=10),
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=0, max_value=14_000),
)
def test_relative_day_id_shift_invariant(ts, n_pad, shift_days):
    h = np.array([[0] * n_pad + sorted(ts)], dtype=np.int64)
    mask = h > 0
    shifted = np.where(mask, h + shift_days * 86_400, 0)
    a = relative_to_first(calendar_ids(h, ("day",))["day_id"], mask)
    b = relative_to_first(calendar_ids(shifted, ("day",))["day_id"], mask)
    np.testing.assert_array_equal(a, b)
    ga, gb = gap_features(h, mask=mask), gap_features(shifted, mask=mask)
    np.testing.assert_array_equal(ga["gap_prev_s"], gb["gap_prev_s"])
    assert (ga["gap_prev_s"] >= 0).all()


def test_rote_batch_rows_do_not_depend_on_how_rows_are_batched():
    """The job derives rote_features per history batch, the view per read chunk: every row's
    features must be the same whichever rows share its batch (and so its padded width)."""
    from features.sequences.rote import rote_batch, rote_table_schema

    utc = pa.timestamp("us", tz="UTC")
    base = 1_650_000_000
    hists = [[], [base], [base, base + 60, base + 86_400 * 40], [base + 7 * i for i in range(9)], [base + 3_600]]
    rows = {
        "event_id": [f"e{i}" for i in range(len(hists))],
        "user_id": ["u0"] * len(hists),
        "hist_ts": pa.array([[t * 1_000_000 for t in h] for h in hists], pa.list_(pa.int64())).cast(pa.list_(utc)),
        "target_ts": pa.array([(max(h) if h else base) * 1_000_000 + 5 for h in hists], pa.int64()).cast(utc),
    }
    table = pa.table(rows)
    table = table.append_column("target_date", table.column("target_ts").cast(pa.date32()))
    levels = ("year", "day", "minute")
    whole = rote_batch(table, levels)
    assert whole.schema == rote_table_schema(levels) and whole.num_rows == table.num_rows
    assert whole.column("hist_len").to_pylist() == [len(h) for h in hists]
    one_by_one = pa.concat_tables([rote_batch(table.slice(i, 1), levels) for i in range(table.num_rows)])
    assert one_by_one.equals(whole)
    assert rote_batch(table.slice(0, 0), levels).num_rows == 0
