"""Look-alike users: SimHash candidates + exact re-ranking against brute force; user vectors."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks._vectors import synthetic_user_vectors
from features.lookalike.kernels import (
    LshParams,
    VectorParams,
    band_keys,
    build_user_vectors,
    encode_profiles,
    hash_projection,
    lookalike_topk,
    profile_columns,
)

T0 = dt.datetime(2022, 4, 8, tzinfo=dt.timezone.utc)
CUTOFF = T0 + dt.timedelta(days=5)


def brute_force(ids, mat, k):
    """Reference from the spec: every other user by cosine desc, then id asc; top k."""
    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
    out = {}
    for i, u in enumerate(ids):
        sims = sorted(((-round(float(unit[i] @ unit[j]), 9), ids[j]) for j in range(len(ids)) if j != i))
        out[u] = [(v, -s) for s, v in sims[:k]]
    return out


def _frame(spark, ids, mat):
    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
    return spark.createDataFrame(pd.DataFrame({"user_id": list(ids), "vector": [list(map(float, r)) for r in unit]}))


def test_hand_computed_neighbours(spark):
    # a and b point the same way, c is 90 degrees from a, d is opposite to a.
    ids = ["a", "b", "c", "d"]
    mat = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    out, stats = lookalike_topk(_frame(spark, ids, mat), LshParams(k=2, bands=2, bits_per_band=3, window=2, auto_bands=False))
    got = {(r.user_id, r.rank): (r.neighbor_user_id, round(r.similarity, 9)) for r in out.collect()}
    assert got[("a", 1)] == ("b", 1.0) and got[("a", 2)] == ("c", 0.0)
    assert got[("c", 1)] == ("a", 0.0) and got[("c", 2)] == ("b", 0.0)  # tie: id order
    assert got[("d", 1)] == ("c", 0.0) and got[("d", 2)] == ("a", -1.0)
    assert len(got) == 8 and stats["users"] == 4


def test_band_keys_read_sign_bits_most_significant_first():
    planes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    keys = band_keys(np.array([[1.0, 1.0], [-1.0, 0.5]]), planes, bands=2, bits=2)
    assert keys.tolist() == [[3, 0], [1, 2]]  # (1,1),(0,0) and (0,1),(1,0)


VECTORS = st.integers(3, 30).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.lists(st.integers(-3, 3), min_size=3, max_size=3).filter(any), min_size=n, max_size=n),
        st.integers(1, 6),
    )
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=VECTORS)
def test_window_covering_everyone_equals_brute_force(spark, data):
    """With 2·window >= users every pair is a candidate: the result is the exact top-k."""
    n, rows, k = data
    ids = [f"u{i:02d}" for i in range(n)]
    mat = np.array(rows, dtype=float)
    out, stats = lookalike_topk(_frame(spark, ids, mat), LshParams(k=k, bands=2, bits_per_band=4, window=max(n, k), auto_bands=False))
    got = out.toPandas()
    ref = brute_force(ids, mat.astype(np.float32).astype(float), k)
    assert len(got) == n * min(k, n - 1)
    for u, rows_u in got.groupby("user_id"):
        rows_u = rows_u.sort_values("rank")
        assert list(rows_u["rank"]) == list(range(1, len(rows_u) + 1))
        assert u not in set(rows_u["neighbor_user_id"])
        expected = ref[u]
        # Same similarities in the same order; ids equal except among float ties.
        assert np.allclose(rows_u["similarity"], [s for _, s in expected], atol=1e-6)
        assert (np.diff(rows_u["similarity"].to_numpy()) <= 1e-12).all()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(60, 200), seed=st.integers(0, 10_000))
def test_small_windows_still_give_k_distinct_neighbours(spark, n, seed):
    ids, mat = synthetic_user_vectors(n, dim=8, seed=seed)
    out, stats = lookalike_topk(_frame(spark, ids, mat.astype(float)), LshParams(k=10, bands=2, bits_per_band=6, window=5, auto_bands=False))
    got = out.toPandas()
    assert len(got) == n * 10
    assert got.groupby("user_id")["neighbor_user_id"].nunique().eq(10).all()
    assert (got["user_id"] != got["neighbor_user_id"]).all()
    assert got["similarity"].between(-1, 1).all()
    assert 0 < got.loc[got["rank"] == 1, "n_candidates"].max() <= 2 * 5 * 2


def test_deterministic_for_a_seed(spark):
    ids, mat = synthetic_user_vectors(300, dim=16, seed=3)
    df = _frame(spark, ids, mat.astype(float))
    p = LshParams(k=10, bands=3, bits_per_band=8, window=8, seed=5, auto_bands=False)
    a = lookalike_topk(df, p)[0].toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True)
    b = lookalike_topk(df.repartition(3), p)[0].toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_recall_at_50_on_20000_synthetic_users(spark):
    """Acceptance: LSH top-50 against exact brute force on 20,000 clustered users, recall >= 0.95."""
    n, k = 20_000, 50
    ids, mat = synthetic_user_vectors(n, dim=32, seed=1)
    m = mat.astype(np.float64)
    truth = {}
    for s in range(0, n, 2000):
        sim = m[s : s + 2000] @ m.T
        sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        truth.update({ids[s + r]: set(ids[top[r]]) for r in range(sim.shape[0])})
    df = spark.createDataFrame(pd.DataFrame({"user_id": ids, "vector": list(mat)}))
    params = LshParams(k=k)  # the defaults: from 32 bands of 16 bits (auto), window 32, 32 principal directions
    out, stats = lookalike_topk(df, params)
    got = out.select("user_id", "neighbor_user_id").toPandas().groupby("user_id")["neighbor_user_id"].apply(set)
    recall = np.mean([len(got[u] & truth[u]) / k for u in ids])
    print(f"recall@50 = {recall:.4f} (bands {stats['bands']}, bits {params.bits_per_band}, window {params.window}, "
          f"projection {params.projection_dims}); held-out estimate {stats['recall_estimate']}, tried {stats.get('bands_tried')}")
    assert recall >= 0.95
    assert abs(stats["recall_estimate"] - recall) < 0.02  # 1,000 held-out users estimate the whole


def test_hash_projection_centres_and_keeps_leading_directions():
    rng = np.random.default_rng(0)
    mat = rng.standard_normal((500, 6)) * np.array([5.0, 3.0, 1.0, 0.1, 0.1, 0.1]) + 7.0
    mean, comps = hash_projection(mat, 3, seed=1)
    assert np.allclose(mean, mat.mean(axis=0))  # fewer rows than the fit sample: every row is used
    assert comps.shape == (3, 6) and np.allclose(comps @ comps.T, np.eye(3), atol=1e-9)
    assert np.allclose(np.abs(comps[:, :3]), np.eye(3), atol=0.1)  # the three high-variance axes, in order
    assert (comps[np.arange(3), np.abs(comps).argmax(axis=1)] > 0).all()  # sign convention
    again = hash_projection(mat, 3, seed=1)
    assert np.array_equal(again[0], mean) and np.array_equal(again[1], comps)
    zero_mean, identity = hash_projection(mat, 0, seed=1)
    assert not zero_mean.any() and np.array_equal(identity, np.eye(6))
    assert hash_projection(mat, 99, seed=1)[1].shape == (6, 6)  # capped at the vector width


def _tie_aware_recall(got: pd.DataFrame, ids, mat, k: int, users, normalize: bool = True) -> float:
    """Reference: the share of each of ``users``' returned neighbours whose cosine reaches the
    user's exact k-th cosine (NumPy brute force), over ``users``. ``normalize=False``: ``mat``
    is the matrix as the job stored it (float32 rows, unit to float32 precision), used as is."""
    m = mat.astype(np.float64)
    if normalize:
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
    sim = np.round(m @ m.T, 12)
    np.fill_diagonal(sim, -np.inf)
    kth = np.sort(sim, axis=1)[:, -k]
    index = {u: i for i, u in enumerate(ids)}
    wanted = {ids[i] for i in users}
    rows = got[got["user_id"].isin(wanted)]
    found = sum(int(r.similarity >= kth[index[r.user_id]] - 1e-9) for r in rows.itertuples())
    return found / (len(wanted) * k)


@pytest.mark.parametrize("window,projection", [(3, 8), (3, 0), (40, 8)])
def test_recall_estimate_equals_the_recall_of_the_output(spark, window, projection):
    """The estimate is the tie-aware recall@k of the rows the job returns, over the held-out users."""
    from features.lookalike.kernels import recall_samples

    n, k = 150, 6
    ids, mat = synthetic_user_vectors(n, dim=8, clusters=5, seed=4)
    params = LshParams(k=k, bands=2, bits_per_band=5, window=window, projection_dims=projection, recall_sample=n,
                       auto_bands=False)
    out, stats = lookalike_topk(_frame(spark, ids, mat.astype(float)), params)
    _, held_out = recall_samples(n, n, params.seed)
    assert stats["recall_sample_users"] == len(held_out) == n // 2
    assert stats["recall_estimate"] == pytest.approx(_tie_aware_recall(out.toPandas(), ids, mat, k, held_out), abs=1e-4)
    if window >= n:
        assert stats["recall_estimate"] == 1.0
    assert stats["projection_dims"] == projection
    assert "selection_recall_estimate" not in stats  # fixed bands: nothing is chosen


def test_selection_and_held_out_samples_are_disjoint_and_seeded():
    from features.lookalike.kernels import recall_samples

    for n, size in [(10_000, 1000), (1500, 1000), (7, 1000), (2, 5)]:
        selection, held_out = recall_samples(n, size, seed=3)
        assert len(selection) == len(held_out) == min(size, n // 2)
        assert not set(selection) & set(held_out)
        assert len(set(selection)) == len(selection) and set(selection) | set(held_out) <= set(range(n))
        again = recall_samples(n, size, seed=3)
        assert np.array_equal(again[0], selection) and np.array_equal(again[1], held_out)
    assert not np.array_equal(recall_samples(10_000, 1000, seed=4)[1], recall_samples(10_000, 1000, seed=3)[1])
    assert recall_samples(1, 1000, seed=3)[1].size == 0


def test_auto_bands_are_chosen_on_one_sample_and_the_recall_reported_on_the_other(spark):
    """The bands are chosen on the selection sample; the reported recall is the output's recall
    over the held-out users, which differ from the selection users."""
    from features.lookalike.kernels import recall_samples

    n, k = 400, 10
    ids, mat = synthetic_user_vectors(n, dim=16, clusters=8, seed=7)
    params = LshParams(k=k, bands=1, bits_per_band=8, window=5, recall_sample=150, target_recall=0.9, max_bands=64)
    assert params.auto_bands  # the default
    out, stats = lookalike_topk(_frame(spark, ids, mat.astype(float)), params)
    got = out.toPandas()
    selection, held_out = recall_samples(n, 150, params.seed)
    assert not set(selection) & set(held_out)
    assert stats["selection_sample_users"] == stats["recall_sample_users"] == 150
    chosen = float(stats["bands_tried"].split()[-1].split(":")[1])
    assert stats["selection_recall_estimate"] == chosen
    assert chosen == pytest.approx(_tie_aware_recall(got, ids, mat, k, selection), abs=1e-4)
    assert chosen >= 0.9 or stats["bands"] * 2 > 64
    assert stats["recall_estimate"] == pytest.approx(_tie_aware_recall(got, ids, mat, k, held_out), abs=1e-4)


def test_recall_sample_zero_skips_the_estimate(spark):
    ids, mat = synthetic_user_vectors(40, dim=4, seed=2)
    _, stats = lookalike_topk(_frame(spark, ids, mat.astype(float)), LshParams(k=5, bands=2, bits_per_band=4, window=4, recall_sample=0, auto_bands=False))
    assert "recall_estimate" not in stats


# ---------------------------------------------------------------------------------------------
# user vectors


def test_profile_encoding_hand_computed(spark):
    users = spark.createDataFrame(
        pd.DataFrame({"user_id": ["a", "b"], "source": ["s", "s"], "n": [0, 2], "g": ["M", "F"], "zip_code": ["1", "2"]})
    )
    numeric, cats = profile_columns(users, ("zip_code",), ())
    assert (numeric, cats) == (["n"], ["g"])
    enc, width = encode_profiles(users, numeric, cats, max_categories=5)
    got = {r.user_id: r.profile for r in enc.collect()}
    # log1p: 0 and log 3; z-scores -1 and +1; one-hot in order F, M (equal counts: by value).
    assert width == 3
    assert np.allclose(got["a"], np.array([-1.0, 0.0, 1.0]) / np.sqrt(2))
    assert np.allclose(got["b"], np.array([1.0, 1.0, 0.0]) / np.sqrt(2))


def test_ml100k_profile_encoding_matches_pandas(spark, ml100k_dir):
    raw = pd.read_csv(ml100k_dir / "ml-100k.user", sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    raw["user_id"] = raw["user_id"].astype(str)
    raw["source"] = "ml-100k"
    users = spark.createDataFrame(raw)
    numeric, cats = profile_columns(users, ("zip_code",), ())
    assert (numeric, cats) == (["age"], ["gender", "occupation"])
    enc, width = encode_profiles(users, numeric, cats, max_categories=8)
    got = {r.user_id: np.array(r.profile) for r in enc.collect()}
    # Reference written from the spec with pandas.
    s = np.log1p(raw["age"].astype(float))
    cols = [((s - s.mean()) / s.std(ddof=0)).to_numpy()]
    for c in ("gender", "occupation"):
        counts = raw[c].value_counts()
        top = sorted(counts.index, key=lambda v: (-counts[v], v))[:8]
        cols += [(raw[c] == v).astype(float).to_numpy() for v in top]
    ref = np.stack(cols, axis=1)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert width == 1 + 2 + 8
    for i, u in enumerate(raw["user_id"]):
        assert np.allclose(got[u], ref[i], atol=1e-9)


def events_frame(rows):
    """rows: (user, item, hours after T0, is_click)."""
    return pd.DataFrame(
        {
            "event_id": [f"e{i:04d}" for i in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_ts": [T0 + dt.timedelta(hours=r[2]) for r in rows],
            "is_click": [r[3] for r in rows],
            "rating": [None] * len(rows),
        }
    ).astype({"rating": "float64"})


def _vectors(spark, rows, users=None, **kw):
    events = spark.createDataFrame(events_frame(rows))
    params = VectorParams(als_rank=4, als_iterations=5, **kw)
    return {r.user_id: r for r in build_user_vectors(events, users, CUTOFF, params).collect()}


def test_user_vectors_use_only_events_before_the_cutoff(spark):
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(12)}", f"i{rng.integers(20)}", float(rng.integers(0, 200)), bool(rng.integers(2))) for _ in range(300)]
    users = spark.createDataFrame(pd.DataFrame({"user_id": [f"u{i}" for i in range(12)], "source": "s", "age": range(12)}))
    before = _vectors(spark, rows, users)
    after_cutoff = [(f"u{rng.integers(15)}", f"i{rng.integers(25)}", 120.0 + float(rng.integers(0, 50)), True) for _ in range(100)]
    with_future = _vectors(spark, rows + after_cutoff, users)
    assert before.keys() == with_future.keys()
    past_users = {r[0] for r in rows if r[2] < 120}
    assert set(before) == past_users  # cutoff = T0 + 120 h
    for u, r in before.items():
        assert r.vector == with_future[u].vector
        assert r.n_events == sum(1 for x in rows if x[0] == u and x[2] < 120)
        assert len(r.vector) == r.profile_dim + r.behaviour_dim == 1 + 4
        assert abs(np.linalg.norm(r.vector) - 1) < 1e-5


@pytest.mark.slow  # three ALS fits: over 20 s on two cores
def test_weights_split_cosine_between_blocks(spark):
    """cos(u, v) = (wp²·cos_profile + wb²·cos_behaviour) / (wp² + wb²) for users with both blocks."""
    rows = [("a", "x", 1, True), ("a", "y", 2, True), ("b", "x", 3, True), ("b", "z", 4, True), ("c", "y", 5, True), ("c", "z", 6, True)]
    users = spark.createDataFrame(pd.DataFrame({"user_id": ["a", "b", "c"], "source": "s", "g": ["M", "F", "M"], "h": ["p", "p", "q"]}))
    v = _vectors(spark, rows, users, profile_weight=2.0, behaviour_weight=1.0)
    a, b = np.array(v["a"].vector), np.array(v["b"].vector)
    pd_ = v["a"].profile_dim
    cp = a[:pd_] @ b[:pd_] / (np.linalg.norm(a[:pd_]) * np.linalg.norm(b[:pd_]))
    cb = a[pd_:] @ b[pd_:] / (np.linalg.norm(a[pd_:]) * np.linalg.norm(b[pd_:]))
    assert abs(a @ b - (4 * cp + cb) / 5) < 1e-5
    only_profile = _vectors(spark, rows, users, behaviour_weight=0.0)
    assert only_profile["a"].behaviour_dim == 0 and len(only_profile["a"].vector) == only_profile["a"].profile_dim


def test_auto_bands_double_until_the_sampled_recall_reaches_the_target(spark):
    ids, mat = synthetic_user_vectors(400, dim=16, clusters=8, seed=7)
    df = _frame(spark, ids, mat.astype(float))
    auto = LshParams(k=10, bands=1, bits_per_band=8, window=5, recall_sample=400, auto_bands=True, target_recall=0.9, max_bands=64)
    out, stats = lookalike_topk(df, auto)
    tries = [t.split(":") for t in stats["bands_tried"].split()]
    assert [int(b) for b, _ in tries] == [2 ** i for i in range(len(tries))]  # 1, 2, 4, ...
    assert all(float(e) < 0.9 for _, e in tries[:-1])  # stopped at the first try reaching the target
    assert stats["bands"] == int(tries[-1][0]) > 1
    assert stats["recall_estimate"] >= 0.9 or stats["bands"] * 2 > 64
    # The result is the fixed-bands build with the chosen count.
    fixed = LshParams(k=10, bands=stats["bands"], bits_per_band=8, window=5, recall_sample=400, auto_bands=False)
    a = out.toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True)
    b = lookalike_topk(df, fixed)[0].toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_auto_bands_stop_at_the_cap_and_are_validated(spark):
    ids, mat = synthetic_user_vectors(200, dim=8, seed=8)
    capped = LshParams(k=10, bands=1, bits_per_band=8, window=5, recall_sample=50, auto_bands=True, target_recall=1.0, max_bands=4)
    _, stats = lookalike_topk(_frame(spark, ids, mat.astype(float)), capped)
    assert stats["bands"] == 4 and [t.split(":")[0] for t in stats["bands_tried"].split()] == ["1", "2", "4"]
    with pytest.raises(ValueError, match="auto_bands"):
        LshParams(bands=8, max_bands=4, auto_bands=True).validate()
    with pytest.raises(ValueError, match="auto_bands"):
        LshParams(recall_sample=0, auto_bands=True).validate()


# ---------------------------------------------------------------------------------------------
# HNSW candidates (faiss): the same ranking as the SimHash path, graph candidates


def _hnsw(spark, ids, mat, **kw):
    import pyarrow as pa

    from features.lookalike.kernels import HnswParams, hnsw_topk, vectors_matrix

    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
    table = pa.table({"user_id": list(ids), "vector": pa.array([list(map(float, r)) for r in unit], pa.list_(pa.float32()))})
    order, m = vectors_matrix(table)
    out, stats = hnsw_topk(spark, order, m, HnswParams(**kw))
    stats["stored"] = m  # the float32 vectors the job ranked by (rows in id order)
    return out.toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True), stats


def test_hnsw_hand_computed_neighbours(spark):
    """The four users of the SimHash hand-computed case: same rows, ties by id, self excluded."""
    ids = ["a", "b", "c", "d"]
    mat = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    got, stats = _hnsw(spark, ids, mat, k=2)  # ef_search 128 >= 4 users: the search returns everyone
    rows = {(r.user_id, r.rank): (r.neighbor_user_id, round(r.similarity, 9)) for r in got.itertuples()}
    assert rows[("a", 1)] == ("b", 1.0) and rows[("a", 2)] == ("c", 0.0)
    assert rows[("c", 1)] == ("a", 0.0) and rows[("c", 2)] == ("b", 0.0)  # tie: id order
    assert rows[("d", 1)] == ("c", 0.0) and rows[("d", 2)] == ("a", -1.0)
    assert len(rows) == 8 and stats["users"] == 4 and stats["candidates"] == "hnsw"
    assert (got["n_candidates"] == 3).all()  # the search returns all 4 users; 3 besides the user


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=VECTORS)
def test_hnsw_on_tiny_data_equals_the_exact_ranking_row_for_row(spark, data):
    """With fewer users than ef_search the graph search returns every user: the rows are the
    exact top-k, identical to the SimHash path with a window covering everyone (which is exact),
    ties included."""
    n, rows, k = data
    ids = [f"u{i:02d}" for i in range(n)]
    mat = np.array(rows, dtype=float)
    got, stats = _hnsw(spark, ids, mat, k=k, ef_search=max(k, 32))
    stored = spark.createDataFrame(pd.DataFrame({"user_id": ids, "vector": [list(map(float, r)) for r in stats["stored"]]}))
    covering = LshParams(k=k, bands=2, bits_per_band=4, window=max(n, k), auto_bands=False)
    ref = lookalike_topk(stored, covering)[0]  # the same float32 vectors, every pair a candidate
    ref = ref.toPandas().sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got.drop(columns="n_candidates"), ref.drop(columns="n_candidates"))
    assert (got["n_candidates"] == n - 1).all()


def test_hnsw_parity_with_brute_force_on_3000_users(spark):
    """A few thousand clustered users with a high ef_search: recall@20 against the exact top-k
    (tie-aware) is at least 0.99, every user has k distinct neighbours, the estimate is the
    output's recall over the held-out users."""
    from features.lookalike.kernels import recall_samples

    n, k = 3000, 20
    ids, mat = synthetic_user_vectors(n, dim=16, seed=11)
    got, stats = _hnsw(spark, ids, mat.astype(float), k=k, ef_search=256, recall_sample=500)
    assert len(got) == n * k and got.groupby("user_id")["neighbor_user_id"].nunique().eq(k).all()
    assert (got["user_id"] != got["neighbor_user_id"]).all()
    assert (got.groupby("user_id")["similarity"].diff().dropna() <= 0).all()
    stored = stats.pop("stored")
    recall = _tie_aware_recall(got, ids, stored, k, range(n), normalize=False)
    assert recall >= 0.99, recall
    _, held_out = recall_samples(n, 500, 20220408)
    assert stats["recall_sample_users"] == 500
    assert stats["recall_estimate"] == pytest.approx(_tie_aware_recall(got, ids, stored, k, held_out, normalize=False), abs=1e-4)


def test_hnsw_is_deterministic_and_independent_of_the_partitioning(spark, monkeypatch):
    """Twice the same rows (single-threaded build), and the same rows with the users cut into
    many small query tasks."""
    from features.lookalike import hnsw

    ids, mat = synthetic_user_vectors(1500, dim=16, seed=5)
    a, sa = _hnsw(spark, ids, mat.astype(float), k=10, ef_search=16, m=8)
    b, sb = _hnsw(spark, ids, mat.astype(float), k=10, ef_search=16, m=8)
    pd.testing.assert_frame_equal(a, b)
    assert {k: v for k, v in sa.items() if k != "stored"} == {k: v for k, v in sb.items() if k != "stored"}
    monkeypatch.setattr(hnsw, "USERS_PER_TASK", 97)
    monkeypatch.setattr(hnsw, "QUERY_BLOCK", 31)
    c, _ = _hnsw(spark, ids, mat.astype(float), k=10, ef_search=16, m=8)
    pd.testing.assert_frame_equal(a, c)


def test_hnsw_with_a_weak_graph_still_gives_k_neighbours_and_a_lower_estimate(spark):
    """ef_search = k on a small graph misses some true neighbours: the estimate says so, and every
    user still gets k distinct neighbours."""
    ids, mat = synthetic_user_vectors(2000, dim=16, latent_dim=16, spread=1.0, noise=0.3, seed=2)
    weak, ws = _hnsw(spark, ids, mat.astype(float), k=20, ef_search=20, m=4, ef_construction=8, recall_sample=500,
                     auto_ef_search=False)
    strong, ss = _hnsw(spark, ids, mat.astype(float), k=20, ef_search=400, m=32, recall_sample=500, auto_ef_search=False)
    assert weak.groupby("user_id")["neighbor_user_id"].nunique().eq(20).all() and len(weak) == 2000 * 20
    assert ws["recall_estimate"] < ss["recall_estimate"]
    assert ss["recall_estimate"] >= 0.99


def test_hnsw_auto_ef_search_doubles_until_the_selection_reaches_the_target(spark):
    """On a weak graph ``auto_ef_search`` doubles ef_search from 20 while the selection sample's
    recall is below the target (up to the cap); every user is then searched with the chosen
    value, so the rows are those of a fixed search at that value, and the held-out recall
    (which chose nothing) beats the fixed starting value's."""
    ids, mat = synthetic_user_vectors(2000, dim=16, latent_dim=16, spread=1.0, noise=0.3, seed=2)
    weak = dict(k=20, m=4, ef_construction=8, recall_sample=500)
    auto, sa = _hnsw(spark, ids, mat.astype(float), ef_search=20, auto_ef_search=True, target_recall=0.99,
                     max_ef_search=320, **weak)
    tried = [t.split(":") for t in sa["ef_search_tried"].split()]
    steps = [int(ef) for ef, _ in tried]
    assert steps[0] == 20 and steps == [20 * 2 ** i for i in range(len(steps))] and len(steps) >= 2
    assert sa["ef_search"] == steps[-1] <= 320 and sa["selection_sample_users"] == 500
    assert sa["selection_recall_estimate"] == float(tried[-1][1])
    assert all(float(r) < 0.99 for _, r in tried[:-1])  # it stopped at the first that reached it, or at the cap
    recalls = [float(r) for _, r in tried]  # each try searched further (regression: all tries searched at 20)
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]
    assert float(tried[-1][1]) >= 0.99 or 2 * steps[-1] > 320
    fixed, sf = _hnsw(spark, ids, mat.astype(float), ef_search=sa["ef_search"], auto_ef_search=False, **weak)
    pd.testing.assert_frame_equal(auto, fixed)
    assert sa["recall_estimate"] == sf["recall_estimate"]
    _, start = _hnsw(spark, ids, mat.astype(float), ef_search=20, auto_ef_search=False, **weak)
    assert sa["recall_estimate"] > start["recall_estimate"] and "ef_search_tried" not in start


def test_hnsw_auto_ef_search_keeps_ef_search_where_it_reaches_the_target(spark):
    ids, mat = synthetic_user_vectors(1500, dim=16, seed=5)
    got, stats = _hnsw(spark, ids, mat.astype(float), k=10, ef_search=64, recall_sample=300)
    assert stats["ef_search"] == 64 and stats["ef_search_tried"].split()[0].startswith("64:")
    assert len(stats["ef_search_tried"].split()) == 1 and stats["selection_recall_estimate"] >= 0.95


def test_hnsw_auto_ef_search_is_validated():
    from features.lookalike.kernels import HnswParams

    with pytest.raises(ValueError, match="auto_ef_search"):
        HnswParams(recall_sample=0).validate()
    with pytest.raises(ValueError, match="auto_ef_search"):
        HnswParams(ef_search=256, max_ef_search=128).validate()
    HnswParams(recall_sample=0, auto_ef_search=False).validate()


def test_hnsw_with_most_users_on_one_vector_keeps_everyone_s_neighbours(spark):
    """Three quarters of the users share one vector (one index entry for them all): the other
    users' recall stays high (a node per copy wrecked it: recall 0.07 at this share), and each
    of the shared users gets the k smallest other ids of the group, at similarity 1."""
    n_other, n_blob, k = 1000, 3000, 20
    ids, mat = synthetic_user_vectors(n_other + 1, dim=16, seed=13)
    blob = np.repeat(mat[-1:], n_blob, axis=0)
    all_ids = [f"x{i:05d}" for i in range(n_other + n_blob)]  # blob users get the larger ids
    full = np.vstack([mat[:n_other], blob]).astype(float)
    got, stats = _hnsw(spark, all_ids, full, k=k, ef_search=64, recall_sample=0, auto_ef_search=False)
    assert stats["index_entries"] == n_other + 1 and stats["largest_identical_group"] == n_blob
    stored = stats.pop("stored")
    assert _tie_aware_recall(got, all_ids, stored, k, range(n_other), normalize=False) >= 0.99
    blob_ids = all_ids[n_other:]
    for user in (blob_ids[0], blob_ids[5], blob_ids[-1]):
        rows = got[got["user_id"] == user]
        assert rows["neighbor_user_id"].tolist() == [u for u in blob_ids if u != user][:k]
        assert np.allclose(rows["similarity"], 1.0)


def test_hnsw_falls_back_to_brute_force_where_the_graph_reaches_too_few_users(spark):
    """A graph this weak returns fewer than k other users for some: those are ranked over
    every user (n_candidates = n - 1) and still get k distinct, exactly ranked neighbours."""
    from features.lookalike.hnsw import HnswParams, hnsw_topk

    n, k = 600, 20
    ids, mat = synthetic_user_vectors(n, dim=16, seed=3)
    import pyarrow as pa

    out, _ = hnsw_topk(spark, pa.array(sorted(ids)), mat[np.argsort(ids)], HnswParams(k=k, ef_search=20, m=2,
                                                                                       ef_construction=1, recall_sample=0,
                                                                                       auto_ef_search=False))
    got = out.toPandas()
    fallback = got[got["n_candidates"] == n - 1]
    assert fallback["user_id"].nunique() > 0
    assert got.groupby("user_id")["neighbor_user_id"].nunique().eq(k).all()
    m = mat[np.argsort(ids)].astype(np.float64)
    sim = np.round(m @ m.T, 12)
    np.fill_diagonal(sim, -np.inf)
    index = {u: i for i, u in enumerate(sorted(ids))}
    for user, rows in fallback.groupby("user_id"):
        kth = np.sort(sim[index[user]])[-k]
        assert (rows["similarity"] >= kth - 1e-9).all()


def test_hnsw_params_are_validated_and_vectors_must_share_a_width():
    import pyarrow as pa

    from features.lookalike.kernels import HnswParams, vectors_matrix

    with pytest.raises(ValueError, match="ef_search"):
        HnswParams(k=50, ef_search=10).validate()
    with pytest.raises(ValueError, match="threads"):
        HnswParams(threads=0).validate()
    table = pa.table({"user_id": ["b", "a"], "vector": pa.array([[1.0, 0.0], [1.0]], pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="several widths"):
        vectors_matrix(table)
    ids, m = vectors_matrix(pa.table({"user_id": ["b", "a"], "vector": pa.array([[0.0, 1.0], [1.0, 0.0]], pa.list_(pa.float32()))}))
    assert ids.to_pylist() == ["a", "b"] and m.dtype == np.float32 and m.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    nan = pa.table({"user_id": ["a", "b"], "vector": pa.array([[1.0, 0.0], [float("nan"), 0.0]], pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="NaN or infinite.*user_id 'b'"):
        vectors_matrix(nan)
