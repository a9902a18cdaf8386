"""Item neighbours (co-occurrence cosine) and recall pools against a pandas reference."""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.recall import RecallParams, build_item_neighbors, build_recall_items

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


def reference(df, p: RecallParams):
    """The spec in pandas: cosine of co-occurring users, then decayed votes of the recent history."""
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
    nb = {}
    for (i, j), c in co.items():
        if c >= p.min_co_users:
            nb.setdefault(i, []).append((-round(c / math.sqrt(n[i] * n[j]), 12), -c, j))
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
    return {i: [(j, -s, -c) for s, c, j in v] for i, v in nb.items()}, pools


def test_hand_computed_neighbours_and_pool(spark):
    # Users 1, 2 clicked a and b; user 3 clicked a and c; user 4 clicked b only.
    rows = [("1", "a", 1, True), ("1", "b", 2, True), ("2", "a", 3, True), ("2", "b", 4, True),
            ("3", "a", 5, True), ("3", "c", 6, True), ("4", "b", 7, True), ("4", "c", 8, False)]
    p = RecallParams(min_co_users=1, item_k=5, size=5)
    events = spark.createDataFrame(events_frame(rows))
    nb = build_item_neighbors(events, CUTOFF, p)
    got = {(r.item_id, r.neighbor_item_id): (r.rank, round(r.similarity, 9), r.co_users) for r in nb.collect()}
    # n_a = 3, n_b = 3, n_c = 1; co(a,b) = 2, co(a,c) = 1.
    assert got[("a", "b")] == (1, round(2 / 3, 9), 2)
    assert got[("a", "c")] == (2, round(1 / math.sqrt(3), 9), 1)
    assert got[("c", "a")] == (1, round(1 / math.sqrt(3), 9), 1)
    assert ("b", "c") not in got and len(got) == 4
    pool = {(r.user_id, r.item_id): r.score for r in build_recall_items(events, nb, CUTOFF, p).collect()}
    # User 4 clicked b, saw c (no click): a gets 2/3; c is excluded as seen.
    assert set(k for k in pool if k[0] == "4") == {("4", "a")} and abs(pool[("4", "a")] - 2 / 3) < 1e-9
    # User 3: c (pos 0) votes a with 1/sqrt 3 (already seen); a (pos 1) votes b: 0.9 * 2/3.
    assert abs(pool[("3", "b")] - 0.9 * 2 / 3) < 1e-9


ROWS = st.lists(
    st.tuples(st.sampled_from("uvwxy"), st.sampled_from("abcdefg"), st.integers(0, 100), st.booleans()),
    min_size=1, max_size=40,
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, min_co=st.integers(1, 2), k=st.integers(1, 4), hist=st.integers(1, 4))
@example(rows=[("u", "a", 72, False)], min_co=1, k=1, hist=1)  # every event at or after the cutoff
def test_matches_the_pandas_reference_and_ignores_the_future(spark, rows, min_co, k, hist):
    p = RecallParams(window_days=2, max_items_per_user=3, min_co_users=min_co, item_k=k, history_items=hist, size=3)
    df = events_frame(rows)
    ref_nb, ref_pool = reference(df, p)
    events = spark.createDataFrame(df)
    nb = build_item_neighbors(events, CUTOFF, p)
    got_nb = {}
    for r in sorted(nb.collect(), key=lambda r: (r.item_id, r.rank)):
        got_nb.setdefault(r.item_id, []).append((r.neighbor_item_id, round(r.similarity, 12), r.co_users))
    assert got_nb == ref_nb
    pool = build_recall_items(events, nb, CUTOFF, p)
    got_pool = {}
    for r in sorted(pool.collect(), key=lambda r: (r.user_id, r.rank)):
        got_pool.setdefault(r.user_id, []).append(r.item_id)
    assert got_pool == {u: v for u, v in ref_pool.items() if v}
    # Events at or after the cutoff (hour 72) change nothing.
    future = df[df.event_ts >= pd.Timestamp(CUTOFF)]
    past = spark.createDataFrame(df[df.event_ts < pd.Timestamp(CUTOFF)], schema=events.schema) if len(future) else events
    assert sorted(build_item_neighbors(past, CUTOFF, p).collect()) == sorted(nb.collect())
