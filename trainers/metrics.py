"""Evaluation metrics for the trainers (NumPy only).

Definitions follow the label-debiasing papers' official evaluation code (spec: labels, §5) where
they define one; every function documents its tie and edge-case rules, because those decide the
last digits and differ between libraries.

Ranking over impressions (one row per impression, grouped by user):

- :func:`auc`: global ROC-AUC, tied scores count half (as scikit-learn).
- :func:`gauc`: per-user AUC weighted by the user's number of positives (D²Co); users whose
  labels are all 0 or all 1 are skipped.
- :func:`gauc_impressions`: per-user AUC weighted by the user's number of impressions (rows),
  users with both classes only (the CTR papers' gAUC, FuxiCTR's ``gAUC``; DIN, CAPE).
- :func:`logloss`: mean binary cross-entropy of probabilities clipped to [eps, 1 - eps].
- :func:`ndcg_at_k`: per-user nDCG@k with exp2 gain (``2**rel - 1``, which is ``rel`` for binary
  labels), ties in score broken by row order; users with no positive score 0 and are averaged in.

Watch-time accuracy:

- :func:`mae`.
- :func:`xauc`: the fraction of all pairs whose predicted order agrees with the true watch-time
  order. Pairs with equal true watch time count as concordant (as in the CWM code). Pairs with
  different truths and tied predictions count ½ by default (``ties="half"``), so a constant
  predictor scores ½ on rows with distinct truths, whatever their order; ``ties="official"``
  reproduces the CWM code's ``xauc_score`` for parity: rows sorted by prediction, descending,
  with a stable sort, so a tied pair counts as concordant exactly when the earlier row has the
  larger (or equal) truth; the result then depends on row order.
- :func:`xgauc`: per-user XAUC weighted by the user's number of rows (same ``ties`` argument);
  users with one row score 1; users whose watch times are all zero are skipped.

Full ranking (one target item per user, a score for every item), for sequential models:

- :func:`full_ranking_metrics`: HR@k and NDCG@k, where the target's rank counts every other
  item scored at least as high (pessimistic ties, so a constant model scores 0, not 1).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _group_slices(groups: np.ndarray) -> list[np.ndarray]:
    """Row indices of each group, in order of first appearance, rows in input order."""
    groups = np.asarray(groups)
    if groups.size == 0:
        return []
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    by_first = np.argsort(first, kind="stable")
    return [order[starts[g] : starts[g] + counts[g]] for g in by_first]


def auc(labels, scores) -> float:
    """Global ROC-AUC of binary ``labels`` by ``scores``; NaN if only one class is present."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s`` with ties given their average rank."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def gauc(users, labels, scores, weight: str = "positives") -> float:
    """Σ_u w_u · AUC_u / Σ_u w_u over users with both classes; NaN if there are none.

    ``weight``: ``positives`` (w_u = the user's positives n⁺_u, the usual GAUC) or ``rows``
    (w_u = the user's rows, DIN's impression-weighted GAUC). Ties within a user count half (as
    :func:`auc`); users whose labels are all 0 or all 1 are skipped (their AUC is undefined).
    """
    if weight not in ("positives", "rows"):
        raise ValueError(f"weight must be 'positives' or 'rows', not {weight!r}")
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    num = den = 0.0
    for idx in _group_slices(np.asarray(users)):
        yu = y[idx]
        pos = int(yu.sum())
        if pos == 0 or pos == yu.size:
            continue
        w = pos if weight == "positives" else idx.size
        num += w * auc(yu, s[idx])
        den += w
    return float(num / den) if den else float("nan")


def gauc_impressions(users, labels, scores) -> float:
    """Per-user AUC weighted by the user's rows (impressions): ``gauc(..., weight="rows")``."""
    return gauc(users, labels, scores, weight="rows")


def logloss(labels, probabilities, eps: float = 1e-7) -> float:
    """Mean of ``-(y log p + (1 - y) log(1 - p))``, ``p`` clipped to ``[eps, 1 - eps]``; NaN if empty."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1.0 - eps)
    if y.size == 0:
        return float("nan")
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


def _dcg(rel: np.ndarray, k: int) -> float:
    top = rel[:k]
    return float(((2.0**top - 1.0) / np.log2(np.arange(2, top.size + 2))).sum())


def _first_appearance_groups(users: np.ndarray) -> tuple[np.ndarray, int]:
    """Per row its group number, groups numbered 0, 1, ... in order of first appearance (as
    :func:`_group_slices`), and the number of groups."""
    _, first, inverse = np.unique(users, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)], int(first.size)


def _grouped_inputs(users, a, b):
    """``users`` as an array, ``a`` and ``b`` as float64 arrays, and the rows' first-appearance
    groups (:func:`_first_appearance_groups`); ``None`` when there are no rows."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    users = np.asarray(users)
    if users.size == 0:
        return None
    gid, n_groups = _first_appearance_groups(users)
    return users, a, b, gid, n_groups


def _top_k_dcg(gid: np.ndarray, n_groups: int, rel: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
    """Per group, the DCG@k of ``rel`` with rows ranked by ``key`` ascending (ties by row order):
    the gains of each group's first ``k`` rows summed in rank order, as :func:`_dcg`."""
    order = np.lexsort((key, gid))  # stable: equal keys keep the row order
    g = gid[order]
    starts = np.searchsorted(g, np.arange(n_groups), side="left")
    pos = np.arange(g.size) - starts[g]
    top = pos < k
    gain = (2.0 ** rel[order][top] - 1.0) / np.log2(pos[top] + 2.0)
    return np.bincount(g[top], weights=gain, minlength=n_groups)


def ndcg_at_k(users, relevance, scores, k: int) -> float:
    """Mean over users of nDCG@k (exp2 gain; ties by row order; users without positives score 0).

    Vectorised over users (one sort for the ranking, one for the ideal order); each user's
    gains are summed in rank order. It equals the per-user loop (:func:`_ndcg_at_k_loop`) up
    to the last bit: NumPy's array kernels for ``2 ** rel`` and ``log2`` may round a value
    differently on a long array than on a short one, and for ``k >= 8`` NumPy sums the loop's
    terms pairwise (measured on the demo data: equal for the 0/1 labels, 1.1e-16 apart for
    the fractional planted interest).
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    grouped = _grouped_inputs(users, relevance, scores)
    if grouped is None:
        return float("nan")
    users, rel, s, gid, n_groups = grouped
    ideal = _top_k_dcg(gid, n_groups, rel, -rel, k)
    dcg = _top_k_dcg(gid, n_groups, rel, -s, k)
    positive = ideal > 0
    values = np.zeros(n_groups)
    values[positive] = dcg[positive] / ideal[positive]
    return float(np.mean(values))


def _ndcg_at_k_loop(users, relevance, scores, k: int) -> float:
    """:func:`ndcg_at_k` one user at a time (the reference its vectorised form is tested against)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    rel = np.asarray(relevance, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    values = []
    for idx in _group_slices(np.asarray(users)):
        ru = rel[idx]
        ideal = _dcg(np.sort(ru)[::-1], k)
        if ideal <= 0:
            values.append(0.0)
            continue
        order = np.argsort(-s[idx], kind="stable")
        values.append(_dcg(ru[order], k) / ideal)
    return float(np.mean(values)) if values else float("nan")


def mae(truth, predicted) -> float:
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    return float(np.abs(t - p).mean()) if t.size else float("nan")


def _count_strict_inversions(y: np.ndarray) -> int:
    """#{(a, b): a < b, y[a] > y[b]} in O(n log n) with a Fenwick tree over the ranks of y."""
    n = y.size
    if n < 2:
        return 0
    _, ranks = np.unique(y, return_inverse=True)
    ranks = ranks.astype(np.int64) + 1
    m = int(ranks.max())
    tree = [0] * (m + 1)
    inversions = 0
    seen = 0
    for r in ranks.tolist():
        # count seen values <= r, so greater = seen - that
        i, le = r, 0
        while i > 0:
            le += tree[i]
            i -= i & -i
        inversions += seen - le
        i = r
        while i <= m:
            tree[i] += 1
            i += i & -i
        seen += 1
    return inversions


XAUC_TIES = ("half", "official")


def _tied_pairs(*columns: np.ndarray) -> int:
    """#{(a, b): a < b, equal in every column}: Σ over the groups of equal rows of k·(k-1)/2."""
    n = columns[0].size
    if n < 2:
        return 0
    order = np.lexsort(columns[::-1])
    differs = np.zeros(n - 1, dtype=bool)
    for c in columns:
        sc = c[order]
        differs |= sc[1:] != sc[:-1]
    bounds = np.concatenate([[0], np.flatnonzero(differs) + 1, [n]])
    counts = np.diff(bounds).astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def xauc(truth, predicted, ties: str = "half") -> float:
    """Share of row pairs ordered concordantly; pairs with equal truths count as concordant.

    ``ties="half"`` (default): a pair with different truths and equal predictions counts ½, so
    the value does not depend on row order. ``ties="official"``: the CWM code's rule, rows
    sorted by prediction descending with a stable sort (a tied pair is concordant when the
    earlier row's truth is >= the later row's). Fewer than two rows: 1.0. O(n log n).
    """
    if ties not in XAUC_TIES:
        raise ValueError(f"ties must be one of {XAUC_TIES}, not {ties!r}")
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    n = t.size
    if n < 2:
        return 1.0
    pairs = n * (n - 1) // 2
    if ties == "official":
        # descending stable order; discordant = pairs (i < j) with t_i < t_j there, i.e. the strict
        # inversions of the reversed sequence
        seq = t[np.argsort(-p, kind="stable")]
        return float((pairs - _count_strict_inversions(seq[::-1])) / pairs)
    # sorted by prediction, then truth, ascending: the strict inversions are exactly the pairs
    # with p_a < p_b and t_a > t_b (discordant); tied predictions with different truths count ½
    order = np.lexsort((t, p))
    discordant = _count_strict_inversions(t[order])
    tied_pred_diff_truth = _tied_pairs(p) - _tied_pairs(p, t)
    return float((pairs - discordant - 0.5 * tied_pred_diff_truth) / pairs)


#: Within-user pairs enumerated at once by :func:`xgauc` (memory: about 40 bytes a pair).
XGAUC_PAIR_CHUNK = 4_000_000


def _discordant(ta, tb, pa, pb, ties: str):
    """Per pair (``a`` before ``b`` in row order): discordant, and tied-prediction-different-truth."""
    if ties == "official":  # descending stable order: a comes first unless p_a < p_b
        disc = np.where(pa < pb, tb < ta, ta < tb)
        return disc, np.zeros_like(disc)
    disc = ((pa < pb) & (ta > tb)) | ((pa > pb) & (ta < tb))
    return disc, (pa == pb) & (ta != tb)


def xgauc(users, truth, predicted, ties: str = "half") -> float:
    """Per-user XAUC (``ties`` as :func:`xauc`) weighted by rows; one-row users score 1;
    all-zero-watch-time users are skipped.

    Vectorised: every user's pairs are enumerated at once (in chunks of at most
    :data:`XGAUC_PAIR_CHUNK` pairs; a user with more pairs goes through :func:`xauc`), the
    integer pair counts are exact, and the per-user values are combined in the order of
    :func:`_xgauc_loop`, so the result equals it exactly.
    """
    if ties not in XAUC_TIES:
        raise ValueError(f"ties must be one of {XAUC_TIES}, not {ties!r}")
    grouped = _grouped_inputs(users, truth, predicted)
    if grouped is None:
        return float("nan")
    users, t, p, gid, n_groups = grouped
    order = np.argsort(gid, kind="stable")  # rows grouped, in row order within a group
    counts = np.bincount(gid, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    nonzero = np.bincount(gid, weights=(t != 0), minlength=n_groups) > 0
    ts, ps = t[order], p[order]
    pairs = counts * (counts - 1) // 2
    disc = np.zeros(n_groups, np.int64)
    tied = np.zeros(n_groups, np.int64)
    big = pairs > XGAUC_PAIR_CHUNK
    direct = {int(g): xauc(ts[starts[g]:starts[g] + counts[g]], ps[starts[g]:starts[g] + counts[g]], ties)
              for g in np.flatnonzero(big & nonzero)}  # too many pairs to enumerate: O(n log n)
    small = np.flatnonzero(~big & nonzero & (counts > 1))  # ascending: their rows are in order
    csum = np.cumsum(pairs[small])
    lo = 0
    while lo < small.size:
        done = int(csum[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(csum, done + XGAUC_PAIR_CHUNK, side="right")), lo + 1)
        grp = small[lo:hi]
        n_rows = counts[grp]
        group_of = np.repeat(grp, n_rows)
        rows = starts[group_of] + np.arange(n_rows.sum()) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
        later = starts[group_of] + counts[group_of] - rows - 1  # each row's partners: the later rows of its group
        a = np.repeat(rows, later)
        b = a + 1 + np.arange(a.size) - np.repeat(np.cumsum(later) - later, later)
        d, tie = _discordant(ts[a], ts[b], ps[a], ps[b], ties)
        pair_group = np.repeat(group_of, later)
        disc[grp] = np.bincount(pair_group, weights=d, minlength=n_groups)[grp].astype(np.int64)
        tied[grp] = np.bincount(pair_group, weights=tie, minlength=n_groups)[grp].astype(np.int64)
        lo = hi
    num = den = 0.0
    for g, (n, ok) in enumerate(zip(counts.tolist(), nonzero.tolist())):
        if not ok:
            continue
        if n < 2:
            x = 1.0
        elif g in direct:
            x = direct[g]
        else:
            npairs = n * (n - 1) // 2
            dg, tg = int(disc[g]), int(tied[g])
            x = float((npairs - dg) / npairs) if ties == "official" else float((npairs - dg - 0.5 * tg) / npairs)
        num += n * x
        den += n
    return float(num / den) if den else float("nan")


def _xgauc_loop(users, truth, predicted, ties: str = "half") -> float:
    """:func:`xgauc` one user at a time (the reference its vectorised form is tested against)."""
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    num = den = 0.0
    for idx in _group_slices(np.asarray(users)):
        tu = t[idx]
        if not np.any(tu != 0):
            continue
        num += idx.size * xauc(tu, p[idx], ties)
        den += idx.size
    return float(num / den) if den else float("nan")


def full_ranking_metrics(scores, targets, ks: Iterable[int] = (10, 20), exclude=None) -> dict[str, float]:
    """HR@k and NDCG@k with one target per row of ``scores`` (users × items).

    ``exclude`` is an optional boolean mask of the same shape: items not to rank (already seen);
    the target itself is never excluded. The target's 0-based rank is the number of other
    ranked items whose score is >= the target's (pessimistic ties).
    """
    s = np.asarray(scores, dtype=np.float64)
    tgt = np.asarray(targets, dtype=np.int64)
    if s.ndim != 2 or tgt.shape != (s.shape[0],):
        raise ValueError("scores must be users × items and targets one item index per user")
    rows = np.arange(s.shape[0])
    target_scores = s[rows, tgt]
    ahead = s >= target_scores[:, None]
    ahead[rows, tgt] = False
    if exclude is not None:
        mask = np.asarray(exclude, dtype=bool).copy()
        mask[rows, tgt] = False
        ahead &= ~mask
    rank = ahead.sum(axis=1)
    out: dict[str, float] = {}
    for k in ks:
        hit = rank < k
        out[f"hr@{k}"] = float(hit.mean()) if rank.size else float("nan")
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean()) if rank.size else float("nan")
    return out
