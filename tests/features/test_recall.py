"""Item neighbours (co-occurrence cosine and Swing) and recall pools against a pandas reference,
on both engines: the Spark kernels and the local ones (NumPy and SciPy), which give the same rows."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.events import TS_TYPE
from features.timeutil import as_utc
from features.recall.kernels import RecallParams, build_item_neighbors, build_recall_items
from features.columns import encode
from features.lookalike.vectors import positive_mask
from features.recall.local import build_item_neighbors_local, build_recall_items_local, choose_engine

T0 = dt.datetime(2022, 4, 8, tzinfo=dt.timezone.utc)
CUTOFF = T0 + dt.timedelta(days=3)


def events_frame(rows):
    """rows: (user, item, hours after T0, is_click)."""
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_ts": [T0 + dt.timedelta(hours=r[2]) for r in rows],
            "is_click": [r[3] for r in rows],
            "rating": [float("nan")] * len(rows),
        }
    )


def arrow_events(df: pd.DataFrame) -> pa.Table:
    """The events frame as the Arrow columns the local engine reads."""
    return pa.table(
        {
            "user_id": pa.array(df["user_id"], pa.string()),
            "item_id": pa.array(df["item_id"], pa.string()),
            "event_ts": pa.array(list(df["event_ts"]), TS_TYPE),
            "is_click": pa.array(df["is_click"], pa.bool_()),
            "rating": pa.array(df["rating"], pa.float64(), from_pandas=False),
        }
    )


SPARK_SCHEMA = "user_id string, item_id string, event_ts timestamp, is_click boolean, rating double"


class Engine:
    """Both tables of one engine, as Python rows sorted by key."""

    def __init__(self, name: str, spark):
        self.name, self.spark = name, spark

    def tables(self, df: pd.DataFrame, p: RecallParams):
        if self.name == "local":
            events = arrow_events(df)
            nb = build_item_neighbors_local(events, CUTOFF, p)
            pool = build_recall_items_local(events, nb, CUTOFF, p)
            return nb.to_pylist(), pool.to_pylist()
        events = self.spark.createDataFrame(df, SPARK_SCHEMA)
        nb = build_item_neighbors(events, CUTOFF, p)
        pool = build_recall_items(events, nb, CUTOFF, p)
        def rows(frame, key):  # Spark hands back naive datetimes in its session zone, UTC
            out = [{k: as_utc(v) if isinstance(v, dt.datetime) else v for k, v in r.asDict().items()} for r in frame.collect()]
            return sorted(out, key=lambda r: (r[key], r["rank"]))

        return rows(nb, "item_id"), rows(pool, "user_id")


@pytest.fixture(params=["spark", "local"])
def engine(request):
    # The Spark session only for the Spark engine: the local one must not need it.
    return Engine(request.param, request.getfixturevalue("spark") if request.param == "spark" else None)


def swing_reference(basket, p: RecallParams):
    """Swing with user weights from the spec, by brute force over every pair of users."""
    n_u = basket.groupby("user_id").size()
    kept = {}
    for item, g in basket.groupby("item_id"):
        g = g.sort_values(["event_ts", "user_id"], ascending=[False, True])
        kept[item] = set(g.user_id[: p.swing_max_users_per_item])
    users = sorted(n_u.index)
    sw = {}
    for a in range(len(users)):
        for b in range(a + 1, len(users)):
            u, v = users[a], users[b]
            inter = [i for i in sorted(kept) if u in kept[i] and v in kept[i]]
            if len(inter) < 2:
                continue
            w = 1.0 / (math.sqrt(n_u[u] * n_u[v]) * (p.swing_alpha + len(inter)))
            for i in inter:
                for j in inter:
                    if i != j:
                        sw[(i, j)] = sw.get((i, j), 0.0) + w
    return sw


def reference(df, p: RecallParams):
    """The spec in pandas: cosine (or Swing) of co-occurring users, then decayed votes of the
    recent history, then (fill "popular") the window's popular unseen items."""
    cutoff = pd.Timestamp(CUTOFF)
    past = df[df.event_ts < cutoff]
    pos = past[past.is_click]
    win = pos[pos.event_ts >= cutoff - pd.Timedelta(days=p.window_days)]

    def recent(frame, limit):
        last = frame.groupby(["user_id", "item_id"]).event_ts.max().reset_index()
        last = last.sort_values(["user_id", "event_ts", "item_id"], ascending=[True, False, True])
        last["pos"] = last.groupby("user_id").cumcount()
        return last[last.pos < limit]

    basket = recent(win, p.max_items_per_user)
    n = basket.groupby("item_id").size()
    pairs = basket.merge(basket, on="user_id")
    pairs = pairs[pairs.item_id_x != pairs.item_id_y]
    co = pairs.groupby(["item_id_x", "item_id_y"]).size()
    sw = swing_reference(basket, p) if p.similarity == "swing" else None
    nb = {}
    for (i, j), c in co.items():
        if c < p.min_co_users:
            continue
        if sw is None:
            nb.setdefault(i, []).append((-round(c / math.sqrt(n[i] * n[j]), 12), -c, j))
        elif (i, j) in sw:
            nb.setdefault(i, []).append((-round(sw[(i, j)], 12), -c, j))
    nb = {i: sorted(v)[: p.item_k] for i, v in nb.items()}
    hist = recent(pos, p.history_items)
    seen = set(zip(past.user_id, past.item_id))
    pools = {}
    for u, g in hist.groupby("user_id"):
        score = {}
        for _, r in g.iterrows():
            for s, _, j in nb.get(r.item_id, []):
                if (u, j) not in seen:
                    score[j] = score.get(j, 0.0) + (-s) * p.decay ** r.pos
        pools[u] = [j for _, j in sorted((-round(v, 12), j) for j, v in score.items())][: p.size]
    pools = {u: [(j, "i2i") for j in v] for u, v in pools.items() if v}
    if p.fill == "popular":
        pop = win.groupby("item_id").user_id.nunique().reset_index().sort_values(["user_id", "item_id"], ascending=[False, True])
        for u in past.user_id.unique():
            pool = pools.get(u, [])
            have = {j for j, _ in pool}
            for j in pop.item_id:
                if len(pool) >= p.size:
                    break
                if (u, j) not in seen and j not in have:
                    pool.append((j, "popular"))
            if pool:
                pools[u] = pool
    return {i: [(j, -s, -c) for s, c, j in v] for i, v in nb.items()}, pools


def test_hand_computed_neighbours_and_pool(engine):
    # Users 1, 2 clicked a and b; user 3 clicked a and c; user 4 clicked b only.
    rows = [("1", "a", 1, True), ("1", "b", 2, True), ("2", "a", 3, True), ("2", "b", 4, True),
            ("3", "a", 5, True), ("3", "c", 6, True), ("4", "b", 7, True), ("4", "c", 8, False)]
    p = RecallParams(min_co_users=1, item_k=5, size=5, similarity="cosine")
    nb, pool = engine.tables(events_frame(rows), p)
    got = {(r["item_id"], r["neighbor_item_id"]): (r["rank"], round(r["similarity"], 9), r["co_users"]) for r in nb}
    # n_a = 3, n_b = 3, n_c = 1; co(a,b) = 2, co(a,c) = 1.
    assert got[("a", "b")] == (1, round(2 / 3, 9), 2)
    assert got[("a", "c")] == (2, round(1 / math.sqrt(3), 9), 1)
    assert got[("c", "a")] == (1, round(1 / math.sqrt(3), 9), 1)
    assert ("b", "c") not in got and len(got) == 4
    assert {r["window_start_ts"] for r in nb} == {CUTOFF - dt.timedelta(days=7)} and {r["cutoff_ts"] for r in nb} == {CUTOFF}
    pool = {(r["user_id"], r["item_id"]): r["score"] for r in pool}
    # User 4 clicked b, saw c (no click): a gets 2/3; c is excluded as seen.
    assert set(k for k in pool if k[0] == "4") == {("4", "a")} and abs(pool[("4", "a")] - 2 / 3) < 1e-9
    # User 3: c (pos 0) votes a with 1/sqrt 3 (already seen); a (pos 1) votes b: 0.9 * 2/3.
    assert abs(pool[("3", "b")] - 0.9 * 2 / 3) < 1e-9


def test_swing_hand_computed(engine):
    # Users 1 and 2 clicked a and b; user 3 clicked a, b and c.
    rows = [("1", "a", 1, True), ("1", "b", 2, True), ("2", "a", 3, True), ("2", "b", 4, True),
            ("3", "a", 5, True), ("3", "b", 6, True), ("3", "c", 7, True)]
    p = RecallParams(min_co_users=1, item_k=5, size=5, similarity="swing", swing_alpha=1.0)
    nb, _ = engine.tables(events_frame(rows), p)
    got = {(r["item_id"], r["neighbor_item_id"]): (r["rank"], r["similarity"], r["co_users"]) for r in nb}
    # |I_1| = |I_2| = 2, |I_3| = 3. Pairs (1,2), (1,3), (2,3) each share {a, b}:
    # swing(a, b) = 1/(sqrt(2*2)*(1+2)) + 2/(sqrt(2*3)*(1+2)). Only user 3 holds c: no Swing pair for c.
    want = 1 / (2 * 3) + 2 / (math.sqrt(6) * 3)
    assert set(got) == {("a", "b"), ("b", "a")}
    assert got[("a", "b")][0] == 1 and abs(got[("a", "b")][1] - want) < 1e-12 and got[("a", "b")][2] == 3


def test_popular_fill_tops_up_short_pools_after_the_i2i_items(engine):
    rows = [("1", "a", 1, True), ("1", "b", 2, True), ("2", "a", 3, True), ("2", "c", 4, True),
            ("3", "c", 5, True), ("3", "d", 6, True), ("4", "e", 7, False)]
    p = RecallParams(min_co_users=1, item_k=5, size=3, fill="popular", similarity="cosine")
    _, rows_out = engine.tables(events_frame(rows), p)
    pool = {}
    for r in rows_out:
        pool.setdefault(r["user_id"], []).append((r["item_id"], r["source"], round(r["score"], 9)))
    # Popularity in the window: a and c have 2 users each, b and d 1 (ties by id); 3 users clicked.
    # User 1 (a, b): i2i votes c (via a); the fill adds d. User 4 has no positive: popularity only.
    assert [(i, s) for i, s, _ in pool["1"]] == [("c", "i2i"), ("d", "popular")]
    assert pool["1"][1][2] == round(1 / 3, 9)
    assert [(i, s) for i, s, _ in pool["4"]] == [("a", "popular"), ("c", "popular"), ("b", "popular")]
    assert pool["4"][0][2] == round(2 / 3, 9)


ROWS = st.lists(
    st.tuples(st.sampled_from("uvwxy"), st.sampled_from("abcdefg"), st.integers(0, 100), st.booleans()),
    min_size=1, max_size=40,
)


def _check_against_reference(engine, rows, min_co, k, hist, similarity, fill, cap):
    p = RecallParams(window_days=2, max_items_per_user=3, min_co_users=min_co, item_k=k, history_items=hist, size=3,
                     similarity=similarity, fill=fill, swing_max_users_per_item=cap, swing_alpha=0.5)
    df = events_frame(rows)
    ref_nb, ref_pool = reference(df, p)
    nb, pool = engine.tables(df, p)
    got_nb = {}
    for r in nb:
        got_nb.setdefault(r["item_id"], []).append((r["neighbor_item_id"], round(r["similarity"], 12), r["co_users"]))
    assert got_nb == ref_nb
    got_pool = {}
    for r in pool:
        got_pool.setdefault(r["user_id"], []).append((r["item_id"], r["source"]))
        assert r["score"] > 0
    assert got_pool == ref_pool
    # Events at or after the cutoff (hour 72) change nothing.
    past = df[df.event_ts < pd.Timestamp(CUTOFF)]
    if len(past) < len(df):
        assert engine.tables(past.reset_index(drop=True), p) == (nb, pool)


SETTINGS = dict(min_co=st.integers(1, 2), k=st.integers(1, 4), hist=st.integers(1, 4),
                similarity=st.sampled_from(["cosine", "swing"]), fill=st.sampled_from(["none", "popular"]),
                cap=st.integers(2, 5))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, **SETTINGS)
@example(rows=[("u", "a", 72, False)], min_co=1, k=1, hist=1, similarity="cosine", fill="none", cap=2)  # all in the future
@example(rows=[("u", "a", 72, False)], min_co=1, k=1, hist=1, similarity="swing", fill="popular", cap=2)
def test_spark_kernels_match_the_pandas_reference_and_ignore_the_future(spark, rows, min_co, k, hist, similarity, fill, cap):
    _check_against_reference(Engine("spark", spark), rows, min_co, k, hist, similarity, fill, cap)


#: Denser logs for the local engine, which runs an example in milliseconds: more of them reach
#: the caps, the ties and short pools that the fill tops up.
DENSE_ROWS = st.lists(
    st.tuples(st.sampled_from("uvwxyz"), st.sampled_from("abcdefg"), st.integers(10, 90), st.booleans()),
    min_size=8, max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(rows=st.one_of(ROWS, DENSE_ROWS), **SETTINGS)
@example(rows=[("u", "a", 72, False)], min_co=1, k=1, hist=1, similarity="cosine", fill="none", cap=2)
@example(rows=[("u", "a", 72, False)], min_co=1, k=1, hist=1, similarity="swing", fill="popular", cap=2)
def test_local_kernels_match_the_pandas_reference_and_ignore_the_future(rows, min_co, k, hist, similarity, fill, cap):
    _check_against_reference(Engine("local", None), rows, min_co, k, hist, similarity, fill, cap)


@pytest.mark.parametrize("similarity,fill", [("swing", "none"), ("swing", "popular"), ("cosine", "popular")])
def test_the_engines_give_the_same_rows_on_thousands_of_events(spark, similarity, fill):
    """6,000 events of 150 users on 60 items (skewed, ratings and clicks mixed): the same keys,
    neighbours, counts and sources on both engines, and scores within rounding."""
    rng = np.random.default_rng(11)
    n = 6000
    item = rng.zipf(1.3, n) % 60
    click = rng.integers(0, 3, n)
    df = pd.DataFrame({
        "user_id": [f"u{x}" for x in rng.integers(0, 150, n)],
        "item_id": [f"i{x:03d}" for x in item],
        "event_ts": [T0 + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 5 * 24 * 60, n)],
        "is_click": pd.array([None if c == 2 else bool(c) for c in click], dtype="boolean"),
        "rating": [float(r) for r in rng.integers(1, 6, n)],
    })
    p = RecallParams(window_days=2, max_items_per_user=8, min_co_users=2, item_k=10, history_items=6, size=15,
                     similarity=similarity, fill=fill, swing_max_users_per_item=12)
    s_nb, s_pool = Engine("spark", spark).tables(df, p)
    l_nb, l_pool = Engine("local", None).tables(df, p)
    assert len(s_nb) >= 150 and len(s_pool) >= 1000
    for spark_rows, local_rows, score in ((s_nb, l_nb, "similarity"), (s_pool, l_pool, "score")):
        assert [{k: v for k, v in r.items() if k != score} for r in spark_rows] == [
            {k: v for k, v in r.items() if k != score} for r in local_rows]
        assert np.abs(np.array([r[score] for r in spark_rows]) - np.array([r[score] for r in local_rows])).max() <= 2e-12


def test_positives_are_those_of_the_spark_column(spark):
    """A click where set; else a rating >= min_rating (NaN counts, as Spark orders it above every number); else true."""
    from features.lookalike.kernels import positive_column

    clicks = [True, False, None, None, None, None, False]
    ratings = [None, 5.0, 4.0, 3.5, float("nan"), None, None]
    table = pa.table({"is_click": pa.array(clicks, pa.bool_()), "rating": pa.array(ratings, pa.float64(), from_pandas=False)})
    want = [True, False, True, False, True, True, False]
    assert positive_mask(table, 4.0).tolist() == want
    df = spark.createDataFrame(list(zip(clicks, ratings)), "is_click boolean, rating double")
    assert [r[0] for r in df.select(positive_column(4.0)).collect()] == want


def test_ids_are_coded_in_spark_string_order():
    codes, values = encode(pa.chunked_array([["b", "é", "B"], ["a", "b", "aa"]]))
    assert values.to_pylist() == ["B", "a", "aa", "b", "é"]  # UTF-8 byte order
    assert values.take(pa.array(codes)).to_pylist() == ["b", "é", "B", "a", "b", "aa"]


def test_the_engine_is_chosen_by_events_read():
    assert choose_engine("auto", 2_000_000, 2_000_000) == "local"
    assert choose_engine("auto", 2_000_001, 2_000_000) == "spark"
    assert choose_engine("local", 10**9, 0) == "local" and choose_engine("spark", 0, 10) == "spark"
    with pytest.raises(ValueError, match="recall.engine must be one of auto, local, spark, not 'gpu'"):
        choose_engine("gpu", 0, 0)
