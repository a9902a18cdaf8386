"""Point-in-time training sets: a hand-computed case, leakage properties against a brute-force
as-of reference (hypothesis), late-arriving events with pinned versions, builds, TTLs, output."""
from __future__ import annotations

import datetime as dt
import json
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.dimensions import USERS
from features.events import EVENTS, FEEDBACK_FLAGS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.lookalike import LOOKALIKE_USERS
from features.recall import RECALL_ITEMS
from pipelines.training_set import FeatureError, parse_features, read_metadata, training_set
from pipelines.warehouse import Warehouse

UTC = dt.timezone.utc
T0 = dt.datetime(2022, 4, 8, tzinfo=UTC)
EVENT_SCHEMA = pa.schema([pa.field(f.name, f.type) for f in EVENTS.schema])


def minute(m: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=m)


def event(i: int, user: str, item: str, m: float, *, line: int | None = None, file: str = "log.csv", play: int | None = None) -> dict:
    ts = minute(m)
    return {
        "event_id": f"e{i:04d}", "source": "test", "user_id": user, "item_id": item, "event_ts": ts,
        "play_time_ms": 1000 * i if play is None else play, "duration_ms": 60_000, "rating": None,
        **{f: None for f in FEEDBACK_FLAGS}, "event_date": ts.date(), "source_file": file,
        "source_line": i + 1 if line is None else line,
    }


def write_events(wh: Warehouse, rows: list[dict], append: bool = False):
    return wh.write_arrow(EVENTS, pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), append=append)


def write_lookalike(wh: Warehouse, cutoff: dt.datetime, pairs: dict[str, list[str]]):
    rows = [{"user_id": u, "rank": r + 1, "neighbor_user_id": n, "similarity": 1.0 - 0.1 * r, "cutoff_ts": cutoff}
            for u, ns in pairs.items() for r, n in enumerate(ns)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([pa.field(f.name, f.type) for f in LOOKALIKE_USERS.schema]))
    return wh.write_arrow(LOOKALIKE_USERS, table, producer={"cutoff_ts": cutoff.isoformat()})


def order_key(e: dict):
    return (e["event_ts"], e["source_file"], e["source_line"], e["event_id"])


def reference(events: list[dict], spine: list[dict], max_len: int, lookalike: list[tuple] = (), ttl_s: float | None = None):
    """Brute-force as-of: for each spine row, the user's events strictly before t (within the
    ttl), last max_len in the total order; the look-alike build of the latest cutoff <= t."""
    out = []
    for row in spine:
        t = row["event_ts"]
        evs = [e for e in events if e["user_id"] == row["user_id"] and e["event_ts"] < t
               and (ttl_s is None or e["event_ts"] >= t - dt.timedelta(seconds=ttl_s))]
        evs = sorted(evs, key=order_key)[-max_len:] if max_len else []
        got = {
            "hist_item_ids": [e["item_id"] for e in evs],
            "hist_ts": [e["event_ts"] for e in evs],
            "hist_play_time_ms": [e["play_time_ms"] for e in evs],
            "hist_len": len(evs),
        }
        if lookalike:
            eligible = [(c, v, pairs) for c, v, pairs in lookalike if c <= t]
            if eligible:
                c, v, pairs = max(eligible, key=lambda b: (b[0], b[1]))
                got["lookalike_users__neighbor_user_id"] = pairs.get(row["user_id"])
                got["lookalike_users__cutoff_ts"] = c if row["user_id"] in pairs else None
            else:
                got["lookalike_users__neighbor_user_id"] = None
                got["lookalike_users__cutoff_ts"] = None
        out.append(got)
    return out


def _as_utc(v):
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime().astimezone(UTC)
    if isinstance(v, dt.datetime):
        return v.astimezone(UTC) if v.tzinfo else v.replace(tzinfo=UTC)
    return v


def rows_of(ts) -> list[dict]:
    table = ts.to_arrow().sort_by("spine_row")
    out = []
    for r in table.to_pylist():
        r = {k: ([_as_utc(x) for x in v] if isinstance(v, list) else _as_utc(v)) for k, v in r.items()}
        out.append(r)
    return out


def assert_matches(rows: list[dict], ref: list[dict], spine: list[dict]):
    assert len(rows) == len(ref)
    for row, want, ex in zip(rows, ref, spine):
        for k, v in want.items():
            assert row[k] == v, (k, ex, row[k], v)
        # no feature value derives from data at or after the example time
        assert all(ts < ex["event_ts"] for ts in row["hist_ts"])
        if row.get("lookalike_users__cutoff_ts") is not None:
            assert row["lookalike_users__cutoff_ts"] <= ex["event_ts"]
        # RoTE levels from the same times
        secs = [int(ts.timestamp()) for ts in row["hist_ts"]]
        assert row["hist_day_id"] == [s // 86400 for s in secs]
        assert row["query_ts_s"] == (secs[-1] if secs else 0)
        assert row["gap_prev_s"] == [0] + [b - a for a, b in zip(secs, secs[1:])] if secs else row["gap_prev_s"] == []


# ---- hand-computed -------------------------------------------------------------------
def test_hand_computed_histories_builds_and_report(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    events = [
        event(0, "u1", "i1", 0), event(1, "u1", "i2", 10),
        event(2, "u1", "i3", 10, line=1, file="a.csv"),  # same time, earlier source order
        event(3, "u1", "i4", 20), event(4, "u2", "i1", 5),
    ]
    write_events(wh, events)
    write_lookalike(wh, minute(10), {"u1": ["u2"], "u2": ["u1"]})
    write_lookalike(wh, minute(20), {"u1": ["u3", "u2"]})
    wh.write_arrow(USERS, pa.table({"user_id": ["u1", "u2"], "source": ["test"] * 2, "age": [30, 40]}))
    spine = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u2", "u9"],
        "item_id": ["i9", "i9", "i9", "i1", "i1"],
        "event_ts": [minute(10), minute(15), minute(25), minute(1), minute(30)],
        "label": [1, 0, 1, 0, 1],
    })
    ts = training_set(spark, wh, spine, ["user_sequences", "users.age", "lookalike_users"], max_len=2,
                      out=str(tmp_path / "out"))
    rows = rows_of(ts)
    # t = 10: strictly before -> only e0 (the two events at minute 10 are excluded)
    assert rows[0]["hist_item_ids"] == ["i1"] and rows[0]["hist_len"] == 1
    # t = 15: e0, a.csv:1 (i3), log.csv:2 (i2): the last 2 in the total order
    assert rows[1]["hist_item_ids"] == ["i3", "i2"]
    assert rows[2]["hist_item_ids"] == ["i2", "i4"]
    assert rows[3]["hist_len"] == 0 and rows[4]["hist_len"] == 0
    assert [r["users__age"] for r in rows] == [30, 30, 30, 40, None]
    assert rows[0]["lookalike_users__neighbor_user_id"] == ["u2"]  # cutoff 10 <= 10
    assert rows[1]["lookalike_users__neighbor_user_id"] == ["u2"]
    assert rows[2]["lookalike_users__neighbor_user_id"] == ["u3", "u2"]  # cutoff 20
    assert rows[3]["lookalike_users__neighbor_user_id"] is None  # before the first cutoff
    assert [r["label"] for r in rows] == [1, 0, 1, 0, 1]
    rep = ts.report
    assert rep["rows"] == 5 and rep["lookalike_users_rows_before_first_cutoff"] == 1
    assert rep["non_null"]["hist_item_ids"] == 3 and rep["non_null"]["users__age"] == 4
    meta = read_metadata(ts.path)
    assert meta["versions"] == {"events": 1, "lookalike_users": 2, "users": 1}
    assert [b["version"] for b in meta["builds"]["lookalike_users"]] == [1, 2]
    assert len(meta["spine_sha256"]) == 64 and meta["code_version"]
    files = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert files and json.loads(pq.read_schema(files[0]).metadata[b"recfeat.training_set"])["versions"] == meta["versions"]
    # the same rows in another order: the same spine hash
    again = training_set(spark, wh, spark.createDataFrame(spine.iloc[::-1].reset_index(drop=True)), ["users.age"])
    assert again.metadata["spine_sha256"] == meta["spine_sha256"]


def test_labels_and_duration_stats_come_only_from_windows_ended_before_the_example(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    day = dt.date(2022, 4, 8)

    def stats(fit_end: dt.date, mean: float):
        rows = [{f.name: None for f in DURATION_STATS.schema} for _ in range(2)]
        for r, d in zip(rows, (60, 61)):
            r.update(duration_s=d, rows=3, wt_mean_s=mean, noise_wt_smoothed_s=1.0, interest_wt_smoothed_s=2.0,
                     d2q_bin=0, fit_start=day, fit_end=fit_end, fit_status="fitted", is_interpolated=False,
                     long_view_cwm_threshold_s=5.0)
        return pa.Table.from_pylist(rows, schema=pa.schema([pa.field(f.name, f.type) for f in DURATION_STATS.schema]))

    def labels(pcr: float):
        r = {f.name: None for f in WATCH_TIME_LABELS.schema}
        r.update(event_id="e0001", user_id="u1", item_id="i1", event_ts=minute(3 * 1440), event_date=day + dt.timedelta(days=3))
        for f in WATCH_TIME_LABELS.schema:
            if r[f.name] is None:
                r[f.name] = {pa.types.is_boolean(f.type): False, pa.types.is_integer(f.type): 1,
                             pa.types.is_floating(f.type): 0.5}.get(True)
        r["pcr"] = pcr
        return pa.Table.from_pylist([r], schema=pa.schema([pa.field(f.name, f.type) for f in WATCH_TIME_LABELS.schema]))

    settings_json = lambda end: json.dumps({"fit_start": day.isoformat(), "fit_end": end.isoformat()})  # noqa: E731
    wh.write_arrow(DURATION_STATS, stats(day + dt.timedelta(days=1), 10.0))
    wh.write_arrow(DURATION_STATS, stats(day + dt.timedelta(days=3), 30.0))
    wh.write_arrow(WATCH_TIME_LABELS, labels(0.1), producer={"settings": settings_json(day + dt.timedelta(days=1))})
    wh.write_arrow(WATCH_TIME_LABELS, labels(0.3), producer={"settings": settings_json(day + dt.timedelta(days=4))})
    spine = pd.DataFrame({
        "user_id": ["u1", "u1", "u1"], "item_id": ["i1"] * 3,
        "event_ts": [minute(600), minute(3 * 1440), minute(5 * 1440)],
        "duration_ms": [60_400, 60_500, 61_500],  # 60 s, 60 s (half to even), 62 s (no row)
    })
    recall_schema = pa.schema([pa.field(f.name, f.type) for f in RECALL_ITEMS.schema])
    for days, items in ((1, ["i7", "i8"]), (4, ["i9"])):
        cutoff = minute(days * 1440)
        recall = [{"user_id": "u1", "rank": r + 1, "item_id": it, "score": 1.0 / (r + 1), "source": "i2i",
                   "cutoff_ts": cutoff} for r, it in enumerate(items)]
        wh.write_arrow(RECALL_ITEMS, pa.Table.from_pylist(recall, schema=recall_schema),
                       producer={"cutoff_ts": cutoff.isoformat()})
    ts = training_set(spark, wh, spine, ["duration_stats.wt_mean_s", "watch_time_labels.pcr", "recall_items"],
                      ttl={"duration_stats": "1d", "recall_items": "3d"})
    rows = rows_of(ts)
    # recall pools: none before day 1; day 3 -> the day-1 build; day 5 -> the day-4 build
    assert [r["recall_items__item_id"] for r in rows] == [None, ["i7", "i8"], ["i9"]]
    assert rows[1]["recall_items__score"] == [1.0, 0.5] and rows[2]["recall_items__source"] == ["i2i"]
    assert ts.report["recall_items_rows_before_first_cutoff"] == 1
    # before the first window ended: nothing
    assert rows[0]["duration_stats__wt_mean_s"] is None and rows[0]["watch_time_labels__pcr"] is None
    # day 3 00:00: the window ending day 3 is usable (at or before t); labels: only the day-1 build,
    # and the example is not the labelled event's time (minute 3*1440 is) -> matched by time
    assert rows[1]["duration_stats__wt_mean_s"] == 30.0
    assert rows[1]["watch_time_labels__pcr"] == 0.1
    # day 5: window day 3 is 2 days old, beyond the 1-day ttl -> null; 62 s has no row anyway
    assert rows[2]["duration_stats__wt_mean_s"] is None
    assert rows[2]["watch_time_labels__pcr"] is None  # no labelled event at that time
    assert [b["version"] for b in ts.metadata["builds"]["duration_stats"]] == [2]


def test_feature_names_and_ttls_are_checked():
    spec = parse_features("user_sequences,users.age,users.gender,lookalike_users", ttl={"user_sequences": "30d"})
    assert spec.columns == {"user_sequences": None, "users": ["age", "gender"], "lookalike_users": None}
    assert spec.ttl["user_sequences"] == dt.timedelta(days=30)
    with pytest.raises(FeatureError, match="unknown feature"):
        parse_features(["nope.x"])
    with pytest.raises(FeatureError, match="snapshot without time"):
        parse_features(["users.*"], ttl={"users": "1d"})
    with pytest.raises(FeatureError, match="bad ttl"):
        parse_features(["user_sequences"], ttl={"user_sequences": "soon"})


# ---- properties ----------------------------------------------------------------------
USERS_ = ["u0", "u1", "u2", "u3"]


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 14))
    events = []
    for i in range(n):
        events.append(event(i, draw(st.sampled_from(USERS_[:3])), draw(st.sampled_from(["i0", "i1", "i2"])),
                            draw(st.integers(0, 12)), line=draw(st.integers(1, 4)),
                            file=draw(st.sampled_from(["a.csv", "b.csv"]))))
    times = [e["event_ts"] for e in events]
    spine = []
    for _ in range(draw(st.integers(1, 8))):
        when = draw(st.one_of(st.sampled_from(times), st.integers(-2, 14).map(minute),
                              st.integers(-4, 28).map(lambda k: minute(k / 2))))
        spine.append({"user_id": draw(st.sampled_from(USERS_)), "event_ts": when, "label": draw(st.integers(0, 1))})
    cutoffs = draw(st.lists(st.integers(0, 12), min_size=1, max_size=3))
    builds = [(minute(c), {u: draw(st.lists(st.sampled_from(USERS_), min_size=1, max_size=2, unique=True))
                           for u in draw(st.lists(st.sampled_from(USERS_), max_size=3, unique=True))})
              for c in cutoffs]
    late = event(900, draw(st.sampled_from(USERS_[:3])), "i9", draw(st.integers(-1, 12)), line=1, file="late.csv")
    return events, spine, builds, late, draw(st.integers(1, 4)), draw(st.sampled_from([None, 300.0]))


def _check_scenario(spark, scenario):
    events, spine, builds, late, max_len, ttl_s = scenario
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(f"{tmp}/wh")
        write_events(wh, events)
        lk = []
        for cutoff, pairs in builds:
            m = write_lookalike(wh, cutoff, pairs)
            lk.append((cutoff, m.version, pairs))
        features = ["user_sequences", "lookalike_users.neighbor_user_id", "lookalike_users.cutoff_ts"]
        ttl = {"user_sequences": ttl_s} if ttl_s else None
        pdf = pd.DataFrame(spine)
        first = training_set(spark, wh, pdf, features, max_len=max_len, ttl=ttl, out=f"{tmp}/first")
        assert_matches(rows_of(first), reference(events, spine, max_len, lk, ttl_s), spine)
        # a late-arriving event (committed later, earlier time): pinned versions give the same rows
        write_events(wh, [late], append=True)
        pinned = training_set(spark, wh, pdf, features, max_len=max_len, ttl=ttl, versions=f"{tmp}/first")
        assert rows_of(pinned) == rows_of(first)
        assert pinned.metadata["spine_sha256"] == first.metadata["spine_sha256"]
        return wh, events + [late], lk, features, ttl, pdf


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
def test_spark_equals_the_as_of_reference_and_pins_survive_late_events(spark, scenario):
    _check_scenario(spark, scenario)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
def test_spark_equals_the_as_of_reference_many_examples(spark, scenario):
    events, spine, builds, late, max_len, ttl_s = scenario
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(f"{tmp}/wh")
        write_events(wh, events)
        write_events(wh, [late], append=True)
        lk = [(c, write_lookalike(wh, c, p).version, p) for c, p in builds]
        ttl = {"user_sequences": ttl_s} if ttl_s else None
        got = training_set(spark, wh, pd.DataFrame(spine), ["user_sequences", "lookalike_users"], max_len=max_len, ttl=ttl)
        assert_matches(rows_of(got), reference(events + [late], spine, max_len, lk, ttl_s), spine)


def test_spine_columns_ride_through_the_history_shuffle_and_rote_only_when_asked(spark, tmp_path):
    """The spine's own columns (even ones named like event columns) come back unchanged next to
    the history, in spine order; the RoTE columns are computed only when asked for, and a RoTE
    column asked alone equals the full group's."""
    wh = Warehouse(str(tmp_path / "wh"))
    events = [event(0, "u1", "i1", 0), event(1, "u1", "i2", 10), event(2, "u1", "i3", 10, line=1, file="a.csv"),
              event(3, "u2", "i1", 5)]
    write_events(wh, events)
    write_lookalike(wh, minute(8), {"u1": ["u2"], "u2": ["u1"]})
    spine = pd.DataFrame({
        "user_id": ["u2", "u1", "u1", "u1"],
        "event_ts": [minute(6), minute(10), minute(10), minute(30)],
        # names the events also have: the spine's values must win and survive
        "item_id": ["x1", "x2", "x3", "x4"], "event_id": ["e0003", "e0001", "e0002", "zz"],
        "source_file": ["s1", "s2", "s3", "s4"], "source_line": [7, 8, 9, 10], "play_time_ms": [11, 12, 13, 14],
        "label": [1, 0, 1, 0],
    })
    lean = ["user_sequences.hist_item_ids", "user_sequences.hist_len", "lookalike_users.neighbor_user_id"]
    for ties in ("exclude", "log_order"):
        ts = training_set(spark, wh, spine, lean, max_len=5, history_ties=ties)
        table = ts.to_arrow()
        assert table.column_names == ["spine_row", "user_id", "event_ts", "item_id", "event_id", "source_file",
                                      "source_line", "play_time_ms", "label", "hist_item_ids", "hist_len",
                                      "lookalike_users__neighbor_user_id"], ties
        rows = table.sort_by("spine_row").to_pylist()
        for col in ("user_id", "item_id", "event_id", "source_file", "source_line", "play_time_ms", "label"):
            assert [r[col] for r in rows] == list(spine[col]), (ties, col)
        assert rows[0]["hist_item_ids"] == ["i1"] and rows[0]["lookalike_users__neighbor_user_id"] is None
        assert rows[3]["hist_item_ids"] == ["i1", "i3", "i2"] and rows[3]["lookalike_users__neighbor_user_id"] == ["u2"]
        if ties == "exclude":  # strictly before minute 10
            assert rows[1]["hist_item_ids"] == ["i1"] == rows[2]["hist_item_ids"]
        else:  # e0001 (log.csv:2) sees a.csv:1 before it; e0002 (a.csv:1) sees only e0000
            assert rows[1]["hist_item_ids"] == ["i1", "i3"] and rows[2]["hist_item_ids"] == ["i1"]
    full = training_set(spark, wh, spine, ["user_sequences"], max_len=5).to_arrow().sort_by("spine_row")
    one = training_set(spark, wh, spine, ["user_sequences.gap_to_target_s"], max_len=5).to_arrow().sort_by("spine_row")
    assert [c for c in one.column_names if c not in spine.columns] == ["spine_row", "gap_to_target_s"]
    assert one.column("gap_to_target_s").to_pylist() == full.column("gap_to_target_s").to_pylist()
    assert "hist_days_f" in full.column_names


def test_streaming_batches_equal_one_call():
    """The task kernel over record batches of every size equals one whole call (carry rule)."""
    import random

    import numpy as np

    from pipelines.training_set.history import histories_from_sorted_batches, histories_of_sorted

    rnd = random.Random(3)
    rows = []
    for u in range(4):
        for j in range(rnd.randint(0, 12)):
            rows.append({"user_id": f"u{u}", "_t": rnd.randint(1, 30) * 10**6, "_k": rnd.randint(0, 1),
                         "item_id": f"i{j}", "play_time_ms": j, "spine_row": None})
    rows.sort(key=lambda r: (r["user_id"], r["_t"], r["_k"]))
    for i, r in enumerate(rows):
        if r["_k"] == 0:
            r["spine_row"] = i
    schema = pa.schema([("user_id", pa.string()), ("_t", pa.int64()), ("_k", pa.int32()), ("item_id", pa.string()),
                        ("play_time_ms", pa.int64()), ("spine_row", pa.int64())])
    table = pa.Table.from_pylist(rows, schema=schema)
    levels = ("year", "month", "day")
    for ttl in (None, 50 * 10**6):
        whole = histories_of_sorted(table, 3, ttl, levels)
        for size in (1, 2, 5, 100):
            parts = pa.Table.from_batches(list(histories_from_sorted_batches(iter(table.to_batches(size)), 3, ttl, levels)),
                                          schema=whole.schema)
            assert parts.to_pylist() == whole.to_pylist(), (ttl, size)
    assert np.all(np.asarray(whole.column("hist_len")) <= 3)
