"""Item neighbours (co-occurrence cosine) and recall pools against a pandas reference."""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.recall.kernels import RecallParams, build_item_neighbors, build_recall_items

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


def test_hand_computed_neighbours_and_pool(spark):
    # Users 1, 2 clicked a and b; user 3 clicked a and c; user 4 clicked b only.
    rows = [("1", "a", 1, True), ("1", "b", 2, True), ("2", "a", 3, True), ("2", "b", 4, True),
            ("3", "a", 5, True), ("3", "c", 6, True), ("4", "b", 7, True), ("4", "c", 8, False)]
    p = RecallParams(min_co_users=1, item_k=5, size=5, similarity="cosine")
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


def test_swing_hand_computed(spark):
    # Users 1 and 2 clicked a and b; user 3 clicked a, b and c.
    rows = [("1", "a", 1, True), ("1", "b", 2, True), ("2", "a", 3, True), ("2", "b", 4, True),
            ("3", "a", 5, True), ("3", "b", 6, True), ("3", "c", 7, True)]
    p = RecallParams(min_co_users=1, item_k=5, size=5, similarity="swing", swing_alpha=1.0)
    nb = build_item_neighbors(spark.createDataFrame(events_frame(rows)), CUTOFF, p)
    got = {(r.item_id, r.neighbor_item_id): (r.rank, r.similarity, r.co_users) for r in nb.collect()}
    # |I_1| = |I_2| = 2, |I_3| = 3. Pairs (1,2), (1,3), (2,3) each share {a, b}:
    # swing(a, b) = 1/(sqrt(2*2)*(1+2)) + 2/(sqrt(2*3)*(1+2)). Only user 3 holds c: no Swing pair for c.
    want = 1 / (2 * 3) + 2 / (math.sqrt(6) * 3)
    assert set(got) == {("a", "b"), ("b", "a")}
    assert got[("a", "b")][0] == 1 and abs(got[("a", "b")][1] - want) < 1e-12 and got[("a", "b")][2] == 3


def test_popular_fill_tops_up_short_pools_after_the_i2i_items(spark):
    rows = [("1", "a", 1, True), ("1", "b", 2, True), ("2", "a", 3, True), ("2", "c", 4, True),
            ("3", "c", 5, True), ("3", "d", 6, True), ("4", "e", 7, False)]
    p = RecallParams(min_co_users=1, item_k=5, size=3, fill="popular", similarity="cosine")
    events = spark.createDataFrame(events_frame(rows))
    nb = build_item_neighbors(events, CUTOFF, p)
    pool = {}
    for r in sorted(build_recall_items(events, nb, CUTOFF, p).collect(), key=lambda r: (r.user_id, r.rank)):
        pool.setdefault(r.user_id, []).append((r.item_id, r.source, round(r.score, 9)))
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


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, min_co=st.integers(1, 2), k=st.integers(1, 4), hist=st.integers(1, 4),
       similarity=st.sampled_from(["cosine", "swing"]), fill=st.sampled_from(["none", "popular"]), cap=st.integers(2, 5))
@example(rows=[("u", "a", 72, False)], min_co=1, k=1, hist=1, similarity="cosine", fill="none", cap=2)  # all in the future
@example(rows=[("u", "a", 72, False)], min_co=1, k=1, hist=1, similarity="swing", fill="popular", cap=2)
def test_matches_the_pandas_reference_and_ignores_the_future(spark, rows, min_co, k, hist, similarity, fill, cap):
    p = RecallParams(window_days=2, max_items_per_user=3, min_co_users=min_co, item_k=k, history_items=hist, size=3,
                     similarity=similarity, fill=fill, swing_max_users_per_item=cap, swing_alpha=0.5)
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
        got_pool.setdefault(r.user_id, []).append((r.item_id, r.source))
        assert r.score > 0
    assert got_pool == ref_pool
    # Events at or after the cutoff (hour 72) change nothing.
    future = df[df.event_ts >= pd.Timestamp(CUTOFF)]
    past = spark.createDataFrame(df[df.event_ts < pd.Timestamp(CUTOFF)], schema=events.schema) if len(future) else events
    assert sorted(build_item_neighbors(past, CUTOFF, p).collect()) == sorted(nb.collect())
