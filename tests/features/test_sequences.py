"""Point-in-time sequences: Spark output equals a brute-force Python reference; no leakage."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.sequences import (
    ORDER_COLUMNS,
    build_user_sequences,
    histories_from_sorted,
    histories_of_complete_users,
    kcore_filter,
    plan_incremental,
    seeds_from_sequences,
)

T0 = dt.datetime(2022, 4, 8, tzinfo=dt.timezone.utc)


def events_frame(rows) -> pd.DataFrame:
    """rows: (user, item, seconds after T0, file, line)."""
    return pd.DataFrame(
        {
            "event_id": [f"e{i:04d}" for i in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_ts": [T0 + dt.timedelta(seconds=r[2]) for r in rows],
            "source_file": [r[3] for r in rows],
            "source_line": [r[4] for r in rows],
            "play_time_ms": [float(i * 10) for i in range(len(rows))],
        }
    )


def reference(df: pd.DataFrame, max_len: int) -> dict[str, dict]:
    """Brute force: for each event, every event of the same user before it in the total order."""
    out = {}
    keyed = [tuple(r[c] for c in ORDER_COLUMNS) for _, r in df.iterrows()]
    for i, row in df.iterrows():
        mine = keyed[i]
        earlier = sorted(
            (keyed[j], j) for j in range(len(df)) if df.at[j, "user_id"] == row["user_id"] and keyed[j] < mine
        )
        hist = [j for _, j in earlier][-max_len:] if max_len else []
        out[row["event_id"]] = {
            "hist_item_ids": [df.at[j, "item_id"] for j in hist],
            "hist_event_ids": [df.at[j, "event_id"] for j in hist],
            "hist_play_time_ms": [df.at[j, "play_time_ms"] for j in hist],
            "seq_pos": len(earlier),
        }
    return out


ROWS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from([0, 0, 5, 60, 3600]),  # many ties in time
        st.sampled_from(["f1.csv", "f2.csv"]),
        st.integers(1, 5),  # ties in source order too
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, max_len=st.integers(1, 6))
def test_histories_match_the_brute_force_reference(spark, rows, max_len):
    df = events_frame(rows)
    got = build_user_sequences(spark.createDataFrame(df), max_len=max_len, side_columns=("play_time_ms",)).collect()
    ref = reference(df, max_len)
    # Spark returns naive datetimes in the session zone (UTC).
    ts = {eid: t.tz_convert(None).to_pydatetime() for eid, t in zip(df["event_id"], df["event_ts"])}
    order = {r["event_id"]: tuple(r[c] for c in ORDER_COLUMNS) for _, r in df.iterrows()}
    by_play = dict(zip(df["play_time_ms"], df["event_id"]))
    assert len(by_play) == len(df)
    assert len(got) == len(df)
    for row in got:
        expected = ref[row.event_id]
        assert list(row.hist_item_ids) == expected["hist_item_ids"]
        assert list(row.hist_play_time_ms) == expected["hist_play_time_ms"]
        assert row.seq_pos == expected["seq_pos"]
        assert row.hist_len == len(row.hist_item_ids) == len(row.hist_ts) <= max_len
        # No event of the *output* history is at or after its target in the total order. Each
        # row's play_time_ms is unique, so it names the event a history entry came from.
        got_ids = [by_play[p] for p in row.hist_play_time_ms]
        assert len(got_ids) == row.hist_len
        for eid, t in zip(got_ids, row.hist_ts):
            assert order[eid] < order[row.event_id]
            assert ts[eid] == t <= row.target_ts
        assert got_ids == expected["hist_event_ids"]


def test_leave_one_out_and_temporal_splits(spark):
    rows = [("u1", "a", s, "f", i) for i, s in enumerate([0, 10, 20, 30, 40], 1)] + [("u2", "b", 0, "f", 9), ("u2", "c", 5, "f", 10)]
    events = spark.createDataFrame(events_frame(rows))
    loo = {(r.user_id, r.seq_pos): r.split for r in build_user_sequences(events, max_len=50).collect()}
    assert [loo[("u1", p)] for p in range(5)] == ["train", "train", "train", "valid", "test"]
    assert [loo[("u2", p)] for p in range(2)] == ["train", "train"]  # fewer than 4 events
    temporal = build_user_sequences(
        events, max_len=50, split="temporal", valid_from=T0 + dt.timedelta(seconds=15), test_from=T0 + dt.timedelta(seconds=35)
    ).collect()
    by_pos = {(r.user_id, r.seq_pos): r.split for r in temporal}
    assert [by_pos[("u1", p)] for p in range(5)] == ["train", "train", "valid", "valid", "test"]


def test_ml100k_leave_one_out_counts(spark, ml100k_dir):
    """On ML-100K every user has at least 20 ratings: 943 test rows, 943 validation rows."""
    import pyarrow as pa

    from features.events import assign_event_ids
    from pipelines.settings import SourceConfig
    from pipelines.sources import adapter_for

    adapter = adapter_for("ml-100k", SourceConfig(kind="movielens", path=str(ml100k_dir)))
    staged = pa.concat_tables([t for f in adapter.event_files() for t in adapter.read_events(f)])
    events = assign_event_ids(spark.createDataFrame(staged.to_pandas()), "distinct")
    seqs = build_user_sequences(events, max_len=50)
    counts = {r["split"]: r["count"] for r in seqs.groupBy("split").count().collect()}
    assert counts == {"test": 943, "valid": 943, "train": 100_000 - 2 * 943}
    assert seqs.agg({"hist_len": "max"}).collect()[0][0] == 50


# --------------------------------------------------------------------------- the Arrow kernel


def sorted_arrow(rows) -> pa.Table:
    df = events_frame(rows)
    df["play_time_ms"] = df["play_time_ms"].astype("int64")
    df = df.sort_values(["user_id", *ORDER_COLUMNS]).reset_index(drop=True)
    return pa.Table.from_pandas(df, preserve_index=False)


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, max_len=st.integers(1, 6), batch=st.integers(1, 7))
def test_streaming_over_batches_equals_one_call(rows, max_len, batch):
    """Users cut across record batches of any size give the same histories as one whole call."""
    table = sorted_arrow(rows)
    whole = histories_of_complete_users(table, max_len, ("play_time_ms",), "leave_one_out")
    streamed = pa.Table.from_batches(
        list(histories_from_sorted(iter(table.to_batches(max_chunksize=batch)), max_len, ("play_time_ms",), "leave_one_out")),
        schema=whole.schema,
    )
    assert streamed.to_pylist() == whole.to_pylist()
    ref = reference(events_frame(rows), max_len)
    for row in whole.to_pylist():
        assert row["hist_item_ids"] == ref[row["event_id"]]["hist_item_ids"]
        assert row["seq_pos"] == ref[row["event_id"]]["seq_pos"]


def test_kernel_by_hand():
    rows = [("u1", "a", 0, "f", 1), ("u1", "b", 0, "f", 2), ("u1", "c", 9, "f", 3), ("u2", "d", 1, "f", 4)]
    out = histories_of_complete_users(sorted_arrow(rows), 2, ("play_time_ms",), "leave_one_out").to_pylist()
    assert [r["hist_item_ids"] for r in out] == [[], ["a"], ["a", "b"], []]
    assert [r["hist_play_time_ms"] for r in out] == [[], [0], [0, 10], []]
    assert [r["target_play_time_ms"] for r in out] == [0, 10, 20, 30]
    assert [(r["seq_pos"], r["hist_len"], r["split"]) for r in out] == [(0, 0, "train"), (1, 1, "train"), (2, 2, "train"), (0, 0, "train")]


# --------------------------------------------------------------------------- incremental (seeded) builds

DAY_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([0, 0, 7_200, 86_400, 90_000, 2 * 86_400 + 5]),  # three UTC days, ties
        st.sampled_from(["f1.csv", "f2.csv"]),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=DAY_ROWS, max_len=st.integers(1, 4))
def test_day_by_day_seeded_build_equals_the_full_build(spark, rows, max_len):
    """Building each day from the previous days' rows (seeds) gives exactly the full build's rows."""
    from pyspark.sql import functions as F

    split = dict(split="temporal", valid_from=T0 + dt.timedelta(days=1), test_from=T0 + dt.timedelta(days=2))
    events = spark.createDataFrame(events_frame(rows)).withColumn("play_time_ms", F.col("play_time_ms").cast("long"))
    events = events.withColumn("day", F.to_date("event_ts"))
    full = {r.event_id: r.asDict() for r in build_user_sequences(events, max_len, ("play_time_ms",), **split).collect()}
    built = None
    for day in sorted({r.day for r in events.select("day").distinct().collect()}):
        todays = events.where(F.col("day") == F.lit(day))
        seeds = None if built is None else seeds_from_sequences(built, todays, max_len)
        new = build_user_sequences(todays, max_len, ("play_time_ms",), seeds=seeds, **split)
        new = spark.createDataFrame(new.collect(), new.schema)  # materialize, as a committed partition would be
        built = new if built is None else built.unionByName(new)
    assert {r.event_id: r.asDict() for r in built.collect()} == full


def test_seeded_build_refuses_leave_one_out(spark):
    events = spark.createDataFrame(events_frame([("u1", "a", 0, "f", 1)]))
    seeds = seeds_from_sequences(build_user_sequences(events, 5), events, 5, side_columns=())
    with pytest.raises(ValueError, match="temporal split"):
        build_user_sequences(events, 5, seeds=seeds)


# --------------------------------------------------------------------------- k-core


def kcore_reference(pairs: list[tuple[str, str]], ku: int, ki: int) -> set[int]:
    keep = set(range(len(pairs)))
    while True:
        users: dict[str, int] = {}
        items: dict[str, int] = {}
        for i in keep:
            users[pairs[i][0]] = users.get(pairs[i][0], 0) + 1
            items[pairs[i][1]] = items.get(pairs[i][1], 0) + 1
        nxt = {i for i in keep if users[pairs[i][0]] >= ku and items[pairs[i][1]] >= ki}
        if nxt == keep:
            return keep
        keep = nxt


def test_kcore_by_hand(spark):
    # u3's only event is on item z; dropping z (1 event) leaves u1 with 2 events, under 3.
    pairs = [("u1", "x"), ("u1", "y"), ("u1", "z"), ("u2", "x"), ("u2", "y"), ("u2", "x"), ("u4", "y"), ("u4", "x"), ("u4", "y")]
    df = spark.createDataFrame(pd.DataFrame({"event_id": [str(i) for i in range(len(pairs))], "user_id": [p[0] for p in pairs], "item_id": [p[1] for p in pairs]}))
    out, passes = kcore_filter(df, min_user_events=3, min_item_events=2)
    assert sorted(int(r.event_id) for r in out.collect()) == [3, 4, 5, 6, 7, 8]
    assert passes == 3  # pass 1 drops z, pass 2 drops u1, pass 3 changes nothing


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3", "u4"]), st.sampled_from(["a", "b", "c", "d"])), min_size=1, max_size=30),
    ku=st.integers(0, 4),
    ki=st.integers(0, 4),
)
def test_kcore_matches_the_iterative_reference(spark, pairs, ku, ki):
    df = spark.createDataFrame(
        pd.DataFrame({"event_id": [str(i) for i in range(len(pairs))], "user_id": [p[0] for p in pairs], "item_id": [p[1] for p in pairs]})
    )
    out, _ = kcore_filter(df, ku, ki)
    assert {int(r.event_id) for r in out.collect()} == kcore_reference(pairs, ku, ki)


# --------------------------------------------------------------------------- incremental planning

D = [f"2022-04-{8 + i:02d}" for i in range(8)]


def _date(i: int) -> dt.date:
    return dt.date.fromisoformat(D[i])


def test_plan_by_hand():
    cur = {D[0]: "a", D[1]: "b", D[2]: "c"}
    built = {D[0]: "a", D[1]: "b"}
    # the next day: just that day
    p = plan_incremental(built, cur, _date(2), _date(3))
    assert p.days == [D[2]] and (p.start, p.end) == p.requested and p.stale == () and p.missing == ()
    # a late event for day 0: from day 0 through the last built day and the requested one
    p = plan_incremental(built, {**cur, D[0]: "a2"}, _date(2), _date(3))
    assert p.days == D[:3] and p.stale == (D[0],) and (p.start, p.end) != p.requested
    # re-running an up-to-date day: nothing to do
    assert plan_incremental(built, cur, _date(1), _date(2)).start is None
    # a day never built before the requested one
    p = plan_incremental({D[0]: "a"}, cur, _date(2), _date(3))
    assert p.days == D[1:3] and p.missing == (D[1],)
    # built with unknown fingerprints (other settings): everything from the first built day
    p = plan_incremental({D[0]: None, D[1]: None}, cur, _date(2), _date(3))
    assert p.days == D[:3]
    # a built day whose events are gone is rebuilt (and so emptied)
    p = plan_incremental(built, {D[0]: "a"}, _date(1), _date(2))
    assert p.days == [D[1]] and p.stale == (D[1],)
    with pytest.raises(ValueError, match="window"):
        plan_incremental({}, cur, _date(2), _date(2))


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("events"), st.integers(0, 7)),
            st.tuples(st.just("build"), st.integers(0, 7), st.integers(1, 3)),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_plan_keeps_every_built_day_equal_to_the_full_build(steps):
    """Simulated log: events arrive for any day, in any order; windows are built in any order.

    After every build, against a brute-force notion of "up to date" (a day's rows depend on its
    own and every earlier day's events): every built day was built after the last change to it
    or to any earlier day, no day with events is left unbuilt before a built or requested day,
    and every requested day with events is built.
    """
    version = {}  # day -> events fingerprint (bumped when events arrive)
    changed_at = {}  # day -> step of its last change
    built = {}  # day -> (fingerprint it was built from, step it was built at)
    for step, op in enumerate(steps):
        if op[0] == "events":
            d = D[op[1]]
            version[d] = version.get(d, 0) + 1
            changed_at[d] = step
            continue
        lo, n = op[1], op[2]
        start, end = _date(lo), _date(min(lo + n, 7))
        if end <= start:
            continue
        plan = plan_incremental({d: str(v[0]) for d, v in built.items()}, {d: str(v) for d, v in version.items()},
                                start, end)
        for d in plan.days:  # what the job does: rebuild [start, end), dropping days without events
            built.pop(d, None)
            if d in version:
                built[d] = (version[d], step)
        for d, (_, at) in built.items():
            assert all(changed_at[e] < at for e in version if e <= d), f"built day {d} is stale"
        horizon = max([*built, (end - dt.timedelta(days=1)).isoformat()])
        assert all(d in built for d in version if d <= horizon and (d < max(built, default="") or start.isoformat() <= d < end.isoformat()))


def test_temporal_bounds_are_checked_in_one_place():
    """The build, the kernel and the settings all use features.sequences.splits.check_temporal_bounds."""
    import numpy as np

    from features.sequences.splits import check_split_args, check_temporal_bounds, split_labels

    day = dt.datetime(2022, 4, 10, tzinfo=dt.timezone.utc)
    check_temporal_bounds(day, day)  # an empty valid window is allowed
    check_temporal_bounds(day.replace(tzinfo=None), day + dt.timedelta(hours=1))  # naive is UTC
    for valid_from, test_from, message in [
        (None, day, "needs valid_from and test_from"),
        (day, None, "needs valid_from and test_from"),
        (day, day - dt.timedelta(seconds=1), "test_from must not be before valid_from"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_temporal_bounds(valid_from, test_from)
        with pytest.raises(ValueError, match=message):
            check_split_args("temporal", valid_from, test_from, seeded=False)
        with pytest.raises(ValueError, match=message):
            split_labels(np.zeros(1, np.int64), None, np.zeros(1, np.int64), "temporal", valid_from, test_from)
    check_split_args("leave_one_out", None, None, seeded=False)  # bounds only matter for a temporal split
    with pytest.raises(ValueError, match="seeded"):
        check_split_args("leave_one_out", None, None, seeded=True)
    with pytest.raises(ValueError, match="unknown split mode"):
        check_split_args("random", None, None, seeded=False)


@given(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.timezone.utc)),
    st.integers(-10**6, 10**6),
)
def test_temporal_split_labels_follow_the_bounds(valid_from, delta_s):
    import numpy as np

    from features.sequences.splits import split_labels
    from features.timeutil import to_micros

    test_from = valid_from + dt.timedelta(seconds=abs(delta_s))
    lo, hi = to_micros(valid_from), to_micros(test_from)
    targets = np.array([lo - 1, lo, hi - 1, hi, hi + 1], dtype=np.int64)
    got = split_labels(np.arange(5), None, targets, "temporal", valid_from, test_from).to_pylist()
    want = ["train" if t < lo else "valid" if t < hi else "test" for t in targets]
    assert got == want
