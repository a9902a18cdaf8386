"""The labels invariants counted on Arrow (small tables) equal the Spark counts.

Real tables are built by the label jobs once, then hypothesis injects defects into a committed
``watch_time_labels`` (nulls in any column, NaN and infinities, labels outside [0, 1], watch
times outside [0, d], durations outside the range, flipped flags, shifted and null days,
duplicated rows) and both counters must give the same counts, key for key, under Spark SQL's
rules (a comparison with null does not count; NaN is above every number). ``duration_stats`` is
checked against ``events`` with edge rows: zero, negative and null durations, null play times,
durations at x.500 s (rounded half to even), null and out-of-window days.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from features.contracts import TableContract
from features.events import EVENTS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from pipelines.labels import (
    build_duration_stats,
    build_watch_time_labels,
    check_duration_stats,
    check_duration_stats_arrow,
    check_watch_time_labels,
    check_watch_time_labels_arrow,
)
from pipelines.warehouse import Warehouse
from pipelines.settings import Settings
from tests.pipelines.test_check_engine import assert_counter_runs_where_its_check_validates
from tests.pipelines.test_labels import SETTINGS, edge_frame, random_events, write_events

DAY = dt.timedelta(days=1)
DOUBLES = ["pcr", "wtg_gain", "wtg", "d2q", "d2q_dense", "d2co", "cwm_target"]
#: Values put into a double label column: the specials, out of [0, 1], and its closed ends.
SPECIALS = [float("nan"), float("inf"), float("-inf"), -0.5, 1.5, 0.0, 1.0, -0.0, 1.0000001]


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """A warehouse with events (random plus the label tests' edge rows), the stats and the labels."""
    wh = Warehouse(str(tmp_path_factory.mktemp("labels") / "w"))
    write_events(wh, random_events(seed=2, n=400), edge_frame())
    build_duration_stats(spark, wh, SETTINGS)
    build_watch_time_labels(spark, wh, SETTINGS)
    return wh, wh.read_arrow(WATCH_TIME_LABELS.name)


def commit(wh: Warehouse, contract: TableContract, table: pa.Table) -> None:
    """Commit ``table`` as the next version, defects and all. ``write_arrow`` refuses a null
    partition value, so then the rows are staged by hand, one file per day, the null-dated rows
    in a file of their own in the first day's folder (both readers read the column in the file)."""
    col = contract.partition_column
    if not table.column(col).null_count:
        wh.write_arrow(contract, table)
        return
    table = contract.conform(table)
    keys = pc.cast(table.column(col), pa.string())
    days = sorted({k for k in keys.to_pylist() if k is not None}) or ["2022-04-08"]
    parts = [(d, "part-00000", table.filter(pc.fill_null(pc.equal(keys, d), False))) for d in days]
    parts.append((days[0], "part-00001", table.filter(pc.is_null(keys))))
    with wh.transaction(contract) as staged:
        for day, name, part in parts:
            folder = f"{staged.path}/{col}={day}"
            wh.fs.makedirs(folder, exist_ok=True)
            pq.write_table(part, f"{folder}/{name}.parquet", filesystem=wh.fs)


def _defect(rows: list[dict], kind: str, i: int, arg: int) -> list[dict]:
    """One defect in row ``i`` (modulo the rows); ``arg`` picks the column or value."""
    if not rows:
        return rows
    i %= len(rows)
    r = dict(rows[i])
    if kind == "drop":
        return rows[:i] + rows[i + 1:]
    if kind == "duplicate":
        return rows + [r]
    if kind == "null":
        r[WATCH_TIME_LABELS.columns[arg % len(WATCH_TIME_LABELS.columns)]] = None
    elif kind == "special":
        r[DOUBLES[arg % len(DOUBLES)]] = SPECIALS[arg // len(DOUBLES) % len(SPECIALS)]
    elif kind == "watch_time":
        d = r["duration_s"] if r["duration_s"] is not None else 10
        r["watch_time_s"] = [-1, 0, d - 1, d, d + 1][arg % 5]
    elif kind == "duration":
        lo, hi = SETTINGS.duration_min_s, SETTINGS.duration_max_s
        r["duration_s"] = [lo - 1, lo, hi, hi + 1, 0, -3][arg % 6]
    elif kind == "flip":
        c = ["is_in_fit_window", "is_censored"][arg % 2]
        r[c] = None if r[c] is None else not r[c]
    elif kind == "day":
        r["event_date"] = [SETTINGS.fit_start - DAY, SETTINGS.fit_start, SETTINGS.fit_end - DAY,
                           SETTINGS.fit_end, None][arg % 5]
    elif kind == "event_id":
        r["event_id"] = rows[(i + 1 + arg) % len(rows)]["event_id"]  # another row's id (or a null)
    return rows[:i] + [r] + rows[i + 1:]


KINDS = ["drop", "duplicate", "null", "special", "watch_time", "duration", "flip", "day", "event_id"]


def _labels_warehouse(tmp_path_factory, rows: list[dict], schema: pa.Schema) -> Warehouse:
    wh = Warehouse(str(tmp_path_factory.mktemp("defects") / "w"))
    commit(wh, WATCH_TIME_LABELS, pa.Table.from_pylist(rows, schema=schema))
    return wh


def _differences(arrow: dict, on_spark: dict) -> dict:
    return {k: (arrow.get(k), on_spark.get(k)) for k in set(arrow) | set(on_spark) if arrow.get(k) != on_spark.get(k)}


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(defects=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 10_000), st.integers(0, 1_000)),
                        min_size=0, max_size=6))
# Pinned: NaN in a unit label (above 1 in Spark), a null day and a null id, a null watch time
# with a flipped censoring flag, a watch time above the duration next to a duration at the edge.
@example(defects=[("special", 0, 0), ("day", 1, 4), ("null", 2, 0)])
@example(defects=[("null", 3, WATCH_TIME_LABELS.columns.index("watch_time_s")), ("flip", 3, 1), ("special", 4, 7 * 2 + 4)])
@example(defects=[("watch_time", 5, 4), ("duration", 6, 3), ("duplicate", 7, 0), ("event_id", 8, 0)])
def test_arrow_label_counts_equal_spark_counts(spark, built, tmp_path_factory, defects):
    _, labels = built
    rows = labels.to_pylist()
    for kind, i, arg in defects:
        rows = _defect(rows, kind, i, arg)
    wh = _labels_warehouse(tmp_path_factory, rows, labels.schema)
    arrow, on_spark = check_watch_time_labels_arrow(wh, SETTINGS), check_watch_time_labels(spark, wh, SETTINGS)
    assert arrow == on_spark, _differences(arrow, on_spark)


def test_a_clean_build_has_no_violation_on_either_engine(spark, built):
    wh, labels = built
    for arrow, on_spark in [
        (check_duration_stats_arrow(wh, SETTINGS), check_duration_stats(spark, wh, SETTINGS)),
        (check_watch_time_labels_arrow(wh, SETTINGS), check_watch_time_labels(spark, wh, SETTINGS)),
    ]:
        assert arrow == on_spark, _differences(arrow, on_spark)
        assert arrow["rows"] > 0 and not {k: v for k, v in arrow.items() if k != "rows" and v}
    assert check_watch_time_labels_arrow(wh, SETTINGS)["rows"] == labels.num_rows


def test_known_label_defects_are_counted_on_both_engines(spark, built, tmp_path_factory):
    """Hand-made: NaN pcr (bad number, and above 1), null d2co (a null and a bad number), a
    watch time past an uncensored duration (and its flag now wrong), a null day (not counted as a
    wrong window flag), a duplicated row and a null id (each one id too many)."""
    _, labels = built
    rows = labels.to_pylist()
    open_ = [k for k, r in enumerate(rows) if not r["is_censored"]]
    a, b, c, d, e, f = open_[:6]
    rows[a] = dict(rows[a], pcr=float("nan"))
    rows[b] = dict(rows[b], d2co=None)
    rows[c] = dict(rows[c], watch_time_s=rows[c]["duration_s"] + 1)
    rows[d] = dict(rows[d], event_date=None)
    rows[e] = dict(rows[e], event_id=None)
    rows.append(dict(rows[f]))
    wh = _labels_warehouse(tmp_path_factory, rows, labels.schema)
    want = {
        "rows": labels.num_rows + 1, "rows_with_nulls": 3, "labels_nan_or_inf": 2, "labels_outside_0_1": 1,
        "watch_time_outside_0_duration": 1, "duration_outside_range": 0, "fit_window_flag_wrong": 0,
        "censored_flag_wrong": 1, "duplicate_event_ids": 2,
    }
    assert check_watch_time_labels_arrow(wh, SETTINGS) == want
    assert check_watch_time_labels(spark, wh, SETTINGS) == want


def test_empty_tables_are_counted_alike_on_both_engines(spark, built, tmp_path_factory):
    """No label rows: every count 0. No events: the stats' rows are all outside the window."""
    base, labels = built
    wh = _labels_warehouse(tmp_path_factory, [], labels.schema)
    zero = {k: 0 for k in check_watch_time_labels(spark, wh, SETTINGS)}
    assert check_watch_time_labels_arrow(wh, SETTINGS) == zero and check_watch_time_labels(spark, wh, SETTINGS) == zero
    wh.write_arrow(DURATION_STATS, base.read_arrow(DURATION_STATS.name))
    wh.write_arrow(EVENTS, EVENTS.schema.empty_table())
    arrow, on_spark = check_duration_stats_arrow(wh, SETTINGS), check_duration_stats(spark, wh, SETTINGS)
    assert arrow == on_spark, _differences(arrow, on_spark)
    assert arrow["rows_outside_fit_window"] == sum(base.read_arrow(DURATION_STATS.name).column("rows").to_pylist()) > 0


# ---- duration_stats against events -------------------------------------------------------
def _event(k: str, duration_ms, play_time_ms, day: dt.date | None) -> dict:
    ts = dt.datetime.combine(day or SETTINGS.fit_start, dt.time(7), tzinfo=dt.timezone.utc)
    return {"event_id": f"edge-{k}", "source": "test", "user_id": "ue", "item_id": "ie", "event_ts": ts,
            "event_date": day, "duration_ms": duration_ms, "play_time_ms": play_time_ms}


IN, LAST, BEFORE, END = SETTINGS.fit_start, SETTINGS.fit_end - DAY, SETTINGS.fit_start - DAY, SETTINGS.fit_end
#: (duration_ms, play_time_ms, day, seconds): ``seconds`` is the duration rounded half to even,
#: None where the event is no label row whatever the range (no or a non-positive duration, no
#: play time).
EDGE_EVENTS = [
    (0, 1000, IN, None), (-1500, 1000, IN, None), (None, 1000, IN, None), (10_000, None, IN, None),
    (500, 100, IN, 0), (1500, 100, IN, 2), (2500, 100, IN, 2), (3499, 100, IN, 3),
    (4500, 1000, IN, 4), (4501, 1000, IN, 5), (5499, 1000, IN, 5), (5500, 1000, IN, 6),
    (6500, -200, IN, 6),  # a negative play time is still a row
    (119_500, 0, LAST, 120), (120_500, 9000, IN, 120), (121_500, 9000, IN, 122), (120_001, 9000, IN, 120),
    (10**15, 1000, IN, 10**12),
    (30_000, 1000, None, 30), (30_000, 1000, BEFORE, 30), (30_000, 1000, END, 30),  # fit_end is exclusive
    (30_000, 1000, LAST, 30),
]


def _edge_rows(settings) -> tuple[list[dict], int]:
    """The edge events, each training row once and every other one more often than the training
    rows together (so that no two wrong decisions cancel out); and the training rows."""
    counted = [s is not None and settings.duration_min_s <= s <= settings.duration_max_s
               and day is not None and settings.fit_start <= day < settings.fit_end
               for _, _, day, s in EDGE_EVENTS]
    heavy = sum(counted) + 1
    rows = [_event(f"{k}-{c}", ms, play, day) for k, ((ms, play, day, _), n) in enumerate(zip(EDGE_EVENTS, counted))
            for c in range(1 if n else heavy)]
    return rows, sum(counted)


def _events_warehouse(base: Warehouse, path: str, extra: list[dict], stats: pa.Table | None = None,
                      base_events: bool = True) -> Warehouse:
    """A warehouse with ``base``'s stats (or ``stats``) and ``extra`` events (after ``base``'s)."""
    wh = Warehouse(path)
    wh.write_arrow(DURATION_STATS, stats if stats is not None else base.read_arrow(DURATION_STATS.name))
    events = base.read_arrow(EVENTS.name)
    added = pa.Table.from_pylist(extra, schema=events.schema)
    commit(wh, EVENTS, pa.concat_tables([events, added]) if base_events else added)
    return wh


@pytest.mark.parametrize("duration_range", [(5, 120), (6, 121), (1, 2), (3, 4)])
def test_edge_events_are_counted_alike_on_both_engines(spark, built, tmp_path, duration_range):
    """Only the edge events, against stats that count no row: the training rows among them are
    what both counters report (each range puts other x.500 s durations on its ends)."""
    base, _ = built
    settings = SETTINGS.model_copy(update=dict(zip(("duration_min_s", "duration_max_s"), duration_range)))
    rows, training = _edge_rows(settings)
    stats = base.read_arrow(DURATION_STATS.name)
    stats = stats.set_column(stats.schema.get_field_index("rows"), "rows", pa.array([0] * stats.num_rows, pa.int64()))
    wh = _events_warehouse(base, str(tmp_path / "w"), rows, stats=stats, base_events=False)
    arrow, on_spark = check_duration_stats_arrow(wh, settings), check_duration_stats(spark, wh, settings)
    assert arrow == on_spark, _differences(arrow, on_spark)
    assert arrow["rows_outside_fit_window"] == training > 0


def test_a_stats_row_off_by_a_known_count_is_reported_on_both_engines(spark, built, tmp_path):
    base, _ = built
    stats = base.read_arrow(DURATION_STATS.name)
    rows = stats.column("rows").to_pylist()
    k = next(j for j, n in enumerate(rows) if n > 3)
    rows[k] -= 3
    stats = stats.set_column(stats.schema.get_field_index("rows"), "rows", pa.array(rows, type=pa.int64()))
    wh = _events_warehouse(base, str(tmp_path / "w"), [], stats=stats)
    for counts in (check_duration_stats_arrow(wh, SETTINGS), check_duration_stats(spark, wh, SETTINGS)):
        assert counts["rows_outside_fit_window"] == 3
        assert not {k: v for k, v in counts.items() if k not in ("rows", "rows_outside_fit_window") and v}


DURATIONS_MS = st.one_of(
    st.sampled_from([None, 0, -1, -500, 500, 1500, 4500, 4501, 5500, 6500, 119_500, 120_500, 121_500, 10**15]),
    st.integers(-2_000, 130_000),
    st.integers(0, 125).map(lambda s: s * 1000 + 500),  # every x.500 s near the range, odd and even
)
EVENT_DAYS = st.sampled_from([None, BEFORE, IN, LAST, END, END + DAY])


@hsettings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.lists(st.tuples(DURATIONS_MS, st.one_of(st.none(), st.integers(-1000, 200_000)), EVENT_DAYS),
                      min_size=1, max_size=40),
       duration_min_s=st.integers(1, 8), duration_max_s=st.integers(116, 124))
def test_arrow_stats_counts_equal_spark_counts_on_drawn_events(spark, built, tmp_path_factory, extra,
                                                               duration_min_s, duration_max_s):
    base, _ = built
    settings = SETTINGS.model_copy(update={"duration_min_s": duration_min_s, "duration_max_s": duration_max_s})
    rows = [_event(str(k), ms, play, day) for k, (ms, play, day) in enumerate(extra)]
    wh = _events_warehouse(base, str(tmp_path_factory.mktemp("events") / "w"), rows)
    arrow, on_spark = check_duration_stats_arrow(wh, settings), check_duration_stats(spark, wh, settings)
    assert arrow == on_spark, _differences(arrow, on_spark)


@pytest.mark.parametrize("table", ["duration_stats", "watch_time_labels"])
def test_a_counter_runs_where_its_check_validates(spark, built, table):
    assert_counter_runs_where_its_check_validates(spark, built[0], Settings(labels=SETTINGS), table)
