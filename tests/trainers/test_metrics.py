"""trainers.metrics against hand-computed cases, brute force and scikit-learn."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score, roc_auc_score

from trainers import metrics as M


# ---- brute-force references written from the definitions (spec: labels, §5) ----------------
def xauc_brute(t, p):
    """Every pair once: equal truths concordant; otherwise 1 if the predictions agree, ½ if tied."""
    n = len(t)
    good = 0.0
    for i, j in itertools.combinations(range(n), 2):
        if t[i] == t[j]:
            good += 1
        elif p[i] == p[j]:
            good += 0.5
        else:
            good += (t[i] < t[j]) == (p[i] < p[j])
    return good / (n * (n - 1) / 2) if n > 1 else 1.0


def xauc_official_rule(t, p):
    """The CWM code's ``xauc_score`` rule, restated: Python's stable sort by prediction with
    ``reverse=True``, then the share of pairs (i before j) with truth_i >= truth_j."""
    rows = sorted(zip(t, p), key=lambda r: r[1], reverse=True)
    n = len(rows)
    if n < 2:
        return 1.0
    good = sum(rows[i][0] >= rows[j][0] for i, j in itertools.combinations(range(n), 2))
    return good / (n * (n - 1) / 2)


def ndcg_brute(users, rel, scores, k):
    vals = []
    for u in dict.fromkeys(users):
        idx = [i for i in range(len(users)) if users[i] == u]
        ideal = sorted((rel[i] for i in idx), reverse=True)[:k]
        idcg = sum((2**r - 1) / np.log2(n + 2) for n, r in enumerate(ideal))
        if idcg == 0:
            vals.append(0.0)
            continue
        ranked = sorted(idx, key=lambda i: (-scores[i], i))[:k]
        vals.append(sum((2 ** rel[i] - 1) / np.log2(n + 2) for n, i in enumerate(ranked)) / idcg)
    return float(np.mean(vals))


# ---- hand-computed ---------------------------------------------------------------------------
def test_auc_hand():
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs won 0.8>0.5, 0.8>0.1, 0.4>0.1 -> 3/4
    assert M.auc([1, 0, 1, 0], [0.8, 0.5, 0.4, 0.1]) == 0.75
    assert M.auc([1, 0], [0.3, 0.3]) == 0.5  # a tie counts half
    assert np.isnan(M.auc([1, 1], [0.1, 0.2]))


def test_gauc_hand_weights_by_positives():
    users = ["a"] * 4 + ["b"] * 3 + ["c"] * 2
    labels = [1, 0, 1, 0] + [1, 0, 0] + [1, 1]
    scores = [0.8, 0.5, 0.4, 0.1] + [0.1, 0.2, 0.3] + [0.5, 0.6]
    # a: AUC 0.75, 2 positives; b: AUC 0, 1 positive; c skipped (all positive)
    assert M.gauc(users, labels, scores) == pytest.approx((2 * 0.75 + 1 * 0.0) / 3)


def test_ndcg_hand():
    # one user, labels by score order [0, 1, 1]: DCG@3 = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
    got = M.ndcg_at_k(["u"] * 3, [0, 1, 1], [0.9, 0.5, 0.1], 3)
    assert got == pytest.approx((1 / np.log2(3) + 0.5) / (1 + 1 / np.log2(3)))
    # a user with no positive scores 0 and is averaged in
    assert M.ndcg_at_k(["u", "v"], [1, 0], [0.5, 0.5], 1) == 0.5
    # ties broken by row order: the first row is ranked first
    assert M.ndcg_at_k(["u", "u"], [0, 1], [0.5, 0.5], 1) == 0.0


def test_xauc_hand():
    # truths 1, 2, 3 with predictions 3, 2, 1: every pair discordant
    assert M.xauc([1, 2, 3], [3, 2, 1]) == 0.0
    assert M.xauc([1, 2, 3], [1, 2, 3]) == 1.0
    # equal truths count as concordant
    assert M.xauc([5, 5], [2, 1]) == 1.0
    # tied predictions with different truths count ½, in either row order
    assert M.xauc([2, 1], [0.0, 0.0]) == 0.5
    assert M.xauc([1, 2], [0.0, 0.0]) == 0.5
    # truths 1..4, predictions 0, 1, 1, 2: five concordant pairs and one tie (rows 1, 2) -> 5.5 / 6
    assert M.xauc([1, 2, 3, 4], [0, 1, 1, 2]) == pytest.approx(5.5 / 6)
    # truths 3, 3, 1, 2 with predictions 1, 1, 1, 0: pairs (0,1) equal truths: 1; (0,2), (1,2) tied: ½ each;
    # (0,3), (1,3): truth 3 > 2 and prediction 1 > 0: 1 each; (2,3): truth 1 < 2, prediction 1 > 0: 0
    assert M.xauc([3, 3, 1, 2], [1, 1, 1, 0]) == pytest.approx(4 / 6)


def test_xauc_constant_predictor_scores_half():
    truth = np.arange(50, dtype=float)  # rows sorted by truth, ascending: the old rule gave 1.0
    assert M.xauc(truth, np.zeros(50)) == 0.5
    assert M.xauc(truth[::-1], np.zeros(50)) == 0.5
    users = np.repeat(["a", "b"], 25)
    assert M.xgauc(users, truth, np.ones(50)) == 0.5


def test_xauc_official_variant_depends_on_row_order_hand():
    # descending stable sort: of two tied rows the earlier one counts as the higher prediction
    assert M.xauc([2, 1], [0.0, 0.0], ties="official") == 1.0
    assert M.xauc([1, 2], [0.0, 0.0], ties="official") == 0.0
    assert M.xauc(np.arange(50.0), np.zeros(50), ties="official") == 0.0
    assert M.xgauc(["u", "u"], [2, 1], [0.0, 0.0], ties="official") == 1.0
    with pytest.raises(ValueError, match="ties"):
        M.xauc([1, 2], [1, 2], ties="stable")


def test_xgauc_hand():
    users = ["a", "a", "b", "c", "c"]
    truth = [1, 2, 7, 0, 0]
    pred = [2, 1, 3, 1, 2]
    # a: 0 (2 rows), b: 1 (one row), c skipped (all zero) -> (2*0 + 1*1)/3
    assert M.xgauc(users, truth, pred) == pytest.approx(1 / 3)


def test_mae_hand():
    assert M.mae([1, 2, 3], [2, 2, 0]) == pytest.approx(4 / 3)


def test_full_ranking_hand():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3]])
    out = M.full_ranking_metrics(scores, [2, 0], ks=(1, 2))
    # user 0: target 0.5 behind 0.9 -> rank 1; user 1: all tied -> pessimistic rank 2
    assert out["hr@1"] == 0.0 and out["hr@2"] == 0.5
    assert out["ndcg@2"] == pytest.approx((1 / np.log2(3)) / 2)
    excl = M.full_ranking_metrics(scores, [2, 0], ks=(1,), exclude=np.array([[0, 1, 0], [0, 0, 0]], bool))
    assert excl["hr@1"] == 0.5


# ---- properties and parity ----------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_auc_matches_sklearn(rows):
    y = [r[0] for r in rows]
    s = [r[1] for r in rows]
    if len(set(y)) < 2:
        assert np.isnan(M.auc(y, s))
    else:
        assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s))


XAUC_ROWS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(XAUC_ROWS)
def test_xauc_matches_brute_force(rows):
    t = [r[1] for r in rows]
    p = [r[2] for r in rows]
    assert M.xauc(t, p) == pytest.approx(xauc_brute(t, p), abs=1e-12)
    # the default does not depend on row order
    rev = M.xauc(t[::-1], p[::-1])
    assert rev == pytest.approx(M.xauc(t, p), abs=1e-12)
    users = [r[0] for r in rows]
    ref = [(users.count(u), [t[i] for i in range(len(t)) if users[i] == u], [p[i] for i in range(len(t)) if users[i] == u])
           for u in dict.fromkeys(users)]
    ref = [(n, xauc_brute(tu, pu)) for n, tu, pu in ref if any(x != 0 for x in tu)]
    got = M.xgauc(users, t, p)
    if ref:
        assert got == pytest.approx(sum(n * x for n, x in ref) / sum(n for n, _ in ref), abs=1e-12)
    else:
        assert np.isnan(got)


@settings(max_examples=60, deadline=None)
@given(XAUC_ROWS)
def test_xauc_official_variant_matches_the_official_rule(rows):
    t = [r[1] for r in rows]
    p = [r[2] for r in rows]
    assert M.xauc(t, p, ties="official") == pytest.approx(xauc_official_rule(t, p), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 300, allow_nan=False), st.floats(-5, 5, allow_nan=False)), min_size=1, max_size=60))
def test_xauc_matches_brute_force_on_floats(rows):
    t = [r[0] for r in rows]
    p = [r[1] for r in rows]
    assert M.xauc(t, p) == pytest.approx(xauc_brute(t, p), abs=1e-12)
    assert M.xauc(t, p, ties="official") == pytest.approx(xauc_official_rule(t, p), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 6)), min_size=1, max_size=30),
    st.integers(1, 5),
)
def test_ndcg_matches_brute_force(rows, k):
    users = [r[0] for r in rows]
    rel = [r[1] for r in rows]
    s = [r[2] for r in rows]
    assert M.ndcg_at_k(users, rel, s, k) == pytest.approx(ndcg_brute(users, rel, s, k))


def test_ndcg_matches_sklearn_without_ties():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 8)
    rel = rng.integers(0, 2, users.size)
    s = rng.permutation(users.size).astype(float)  # distinct scores: sklearn's tie rule does not matter
    for k in (1, 3, 5):
        ref = []
        for u in range(40):
            m = users == u
            ref.append(ndcg_score([rel[m]], [s[m]], k=k) if rel[m].any() else 0.0)
        assert M.ndcg_at_k(users, rel, s, k) == pytest.approx(np.mean(ref))


def test_gauc_matches_sklearn_per_user():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 30, 600)
    y = rng.integers(0, 2, 600)
    s = rng.normal(size=600)
    num = den = 0.0
    for u in np.unique(users):
        m = users == u
        if 0 < y[m].sum() < m.sum():
            num += y[m].sum() * roc_auc_score(y[m], s[m])
            den += y[m].sum()
    assert M.gauc(users, y, s) == pytest.approx(num / den)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(2, 12), st.integers(0, 10_000))
def test_full_ranking_matches_brute_force(n_users, n_items, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (n_users, n_items)).astype(float)
    targets = rng.integers(0, n_items, n_users)
    out = M.full_ranking_metrics(scores, targets, ks=(1, 3))
    for k in (1, 3):
        hits, gains = [], []
        for u in range(n_users):
            rank = sum(1 for i in range(n_items) if i != targets[u] and scores[u, i] >= scores[u, targets[u]])
            hits.append(rank < k)
            gains.append(1 / np.log2(rank + 2) if rank < k else 0.0)
        assert out[f"hr@{k}"] == pytest.approx(np.mean(hits))
        assert out[f"ndcg@{k}"] == pytest.approx(np.mean(gains))


# --------------------------------------------------------------------------- vectorised forms vs the per-user loops


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 80), n_users=st.integers(1, 9), tied=st.booleans())
def test_vectorised_ndcg_and_xgauc_equal_the_per_user_loops(seed, n, n_users, tied):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n).astype(str)
    truth = rng.integers(0, 4, n).astype(float) * (rng.random(n) < 0.8)  # some all-zero users
    scores = np.round(rng.random(n) * 3) / 3 if tied else rng.random(n)

    def same(a, b):
        return a == b or (np.isnan(a) and np.isnan(b))

    fractional = truth * rng.random(n)
    for k in (1, 3, 5, 10):  # the same sums in the same order; array kernels may round the last bit
        for rel in (truth, fractional):
            got, ref = M.ndcg_at_k(users, rel, scores, k), M._ndcg_at_k_loop(users, rel, scores, k)
            assert same(got, ref) or got == pytest.approx(ref, rel=1e-12, abs=1e-15)
    for ties in M.XAUC_TIES:  # integer pair counts: exact
        assert same(M.xgauc(users, truth, scores, ties), M._xgauc_loop(users, truth, scores, ties))


def test_xgauc_pair_chunks_and_large_users_change_nothing(monkeypatch):
    rng = np.random.default_rng(3)
    users = rng.integers(0, 6, 300)
    truth, scores = rng.integers(0, 5, 300).astype(float), np.round(rng.random(300), 1)
    ref = {ties: M._xgauc_loop(users, truth, scores, ties) for ties in M.XAUC_TIES}
    for chunk in (1, 40, 2_000):  # 1: every user through xauc; 40: several chunks
        monkeypatch.setattr(M, "XGAUC_PAIR_CHUNK", chunk)
        for ties in M.XAUC_TIES:
            assert M.xgauc(users, truth, scores, ties) == ref[ties]
