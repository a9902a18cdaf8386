"""The local engine of the recall family: ``item_neighbors`` and ``recall_items`` in one process.

The same definitions as the Spark kernels of :mod:`features.recall.kernels` (read their module
docstring for the math), computed on Arrow arrays with NumPy and SciPy's sparse products
instead of Spark joins: ``recall.engine`` chooses (docs/lookalike.md, "Engines").

The rows are the Spark kernels' rows. Sums of floats (Swing's weights, a pool's votes) are
taken in another order, so a score may differ from Spark's in its last bits; both round to
1e-12 before ranking, so mathematically equal scores tie on both engines and are ordered by
the same tie-breaks. String ids are ordered as Spark orders them (by their UTF-8 bytes).

Inputs are Arrow tables of ``events`` (``user_id``, ``item_id``, ``event_ts``, ``is_click``,
``rating``) and, for the pool, of ``item_neighbors``; outputs are Arrow tables with the
contracts' columns. Pure functions; no I/O.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.events import TS_TYPE
from features.recall.kernels import RecallParams
from features.columns import encode, micros
from features.lookalike.vectors import positive_mask
from features.timeutil import as_utc, to_micros

#: Engines of the recall family (``recall.engine``); see :func:`choose_engine`.
ENGINES = ("auto", "local", "spark")

#: Columns of ``events`` the local kernels read.
EVENT_COLUMNS = ("user_id", "item_id", "event_ts", "is_click", "rating")


def choose_engine(engine: str, events: int, local_max_events: int) -> str:
    """``local`` or ``spark``: ``engine`` itself unless it is ``auto``, which is ``local`` when
    the job reads at most ``local_max_events`` events and ``spark`` above."""
    if engine not in ENGINES:
        raise ValueError(f"recall.engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine != "auto":
        return engine
    return "local" if events <= local_max_events else "spark"


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Offsets of each run of equal values in ``sorted_keys`` (a sorted array)."""
    if not len(sorted_keys):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _rank_in_groups(groups_sorted: np.ndarray) -> np.ndarray:
    """0-based position of each row within its run of ``groups_sorted`` (rows already ordered)."""
    starts = _group_starts(groups_sorted)
    sizes = np.diff(np.r_[starts, len(groups_sorted)])
    return np.arange(len(groups_sorted)) - np.repeat(starts, sizes)


def recent_positive_items(user: np.ndarray, item: np.ndarray, ts: np.ndarray, limit: int):
    """``(user, item, pos, last_ts)`` sorted by user then ``pos``: each user's ``limit`` most
    recent distinct items (``pos`` 0 = most recent; ``last_ts`` its latest event, ties in time
    by item). Inputs are codes and microseconds of the events already filtered."""
    if not len(user):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    n_items = int(item.max()) + 1
    key = user * n_items + item
    order = np.lexsort((ts, key))
    key, ts = key[order], ts[order]
    last = np.r_[key[1:] != key[:-1], True]  # the last of each key's run holds its max ts
    key, ts = key[last], ts[last]
    u, i = key // n_items, key % n_items
    order = np.lexsort((i, -ts, u))
    u, i, ts = u[order], i[order], ts[order]
    pos = _rank_in_groups(u)
    keep = pos < limit
    return u[keep], i[keep], pos[keep], ts[keep]


def _sparse(rows: np.ndarray, cols: np.ndarray, values, shape):
    from scipy import sparse

    return sparse.csr_matrix((values, (rows, cols)), shape=shape)


def _user_pairs(user: np.ndarray, item: np.ndarray, ts: np.ndarray, cap: int):
    """Swing's user pairs: for every item, every pair ``u < v`` of its ``cap`` most recent users
    (ties by user). Returns ``(pair_u, pair_v, pair_item)``, one row per (pair, shared item)."""
    order = np.lexsort((user, -ts, item))
    user, item = user[order], item[order]
    keep = _rank_in_groups(item) < cap
    user, item = user[keep], item[keep]
    order = np.lexsort((user, item))  # each item's kept users in id order: u < v below
    user, item = user[order], item[order]
    starts = _group_starts(item)
    sizes = np.diff(np.r_[starts, len(item)])
    us, vs, its = [], [], []
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for start, m in zip(starts.tolist(), sizes.tolist()):
        if m < 2:
            continue
        if m not in cache:
            cache[m] = np.triu_indices(m, 1)
        a, b = cache[m]
        us.append(user[start + a])
        vs.append(user[start + b])
        its.append(np.full(len(a), item[start], dtype=np.int64))
    if not us:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(us), np.concatenate(vs), np.concatenate(its)


def swing_matrix(user: np.ndarray, item: np.ndarray, ts: np.ndarray, n_users: int, n_items: int, params: RecallParams):
    """Swing as a sparse ``n_items × n_items`` matrix (diagonal dropped), from the basket
    ``(user, item, last_ts)``: ``Σ_{u<v} w_u·w_v / (alpha + |I_u ∩ I_v|)`` over the user pairs
    whose kept intersection holds both items, for intersections of at least 2 items."""
    from scipy import sparse

    n_u = np.bincount(user, minlength=n_users).astype(np.int64)
    pu, pv, pi = _user_pairs(user, item, ts, params.swing_max_users_per_item)
    key = pu * n_users + pv
    order = np.argsort(key, kind="stable")
    key, pi = key[order], pi[order]
    starts = _group_starts(key)
    sizes = np.diff(np.r_[starts, len(key)])
    big = sizes >= 2  # |I_u ∩ I_v| >= 2: a pair sharing one item gives no (i, j)
    group = np.repeat(np.arange(len(starts)), sizes)
    rows = np.repeat(np.cumsum(big) - 1, sizes)
    keep = big[group]
    u0, v0 = key[starts[big]] // n_users, key[starts[big]] % n_users
    w = 1.0 / (np.sqrt((n_u[u0] * n_u[v0]).astype(np.float64)) * (float(params.swing_alpha) + sizes[big]))
    p = _sparse(rows[keep], pi[keep], np.ones(int(keep.sum())), (int(big.sum()), n_items))
    s = (p.T.tocsr() @ sparse.diags(w) @ p).tocoo()
    off = s.row != s.col
    return s.row[off].astype(np.int64), s.col[off].astype(np.int64), s.data[off]


def round12(x: np.ndarray) -> np.ndarray:
    """Rounded to 12 decimals, as the Spark kernels round sums before ranking."""
    return np.round(x, 12)


def _filtered_events(events: pa.Table, cutoff: dt.datetime, min_rating: float, since: dt.datetime | None):
    ts = micros(events["event_ts"])
    keep = ts < to_micros(cutoff)
    if since is not None:
        keep &= ts >= to_micros(since)
    return keep & positive_mask(events, min_rating), ts


def build_item_neighbors_local(events: pa.Table, cutoff_ts: dt.datetime, params: RecallParams) -> pa.Table:
    """The ``item_neighbors`` rows as of ``cutoff_ts`` (as :func:`features.recall.kernels.build_item_neighbors`),
    ordered by ``item_id`` then ``rank``."""
    from features.recall.contracts import ITEM_NEIGHBORS

    params.validate()
    cutoff = as_utc(cutoff_ts)
    start = cutoff - dt.timedelta(days=params.window_days)
    keep, ts = _filtered_events(events, cutoff, params.min_rating, start)
    window = events.select(["user_id", "item_id"]).filter(pa.array(keep))
    ts = ts[keep]
    if not window.num_rows:
        return ITEM_NEIGHBORS.schema.empty_table()
    user, _ = encode(window["user_id"])
    item, item_ids = encode(window["item_id"])
    bu, bi, _, bt = recent_positive_items(user, item, ts, params.max_items_per_user)
    n_users, n_items = int(user.max()) + 1, len(item_ids)
    b = _sparse(bu, bi, np.ones(len(bu), dtype=np.int64), (n_users, n_items))
    co = (b.T.tocsr() @ b).tocoo()
    sel = (co.row != co.col) & (co.data >= params.min_co_users)
    ci, cj, cc = co.row[sel].astype(np.int64), co.col[sel].astype(np.int64), co.data[sel].astype(np.int64)
    if params.similarity == "swing":
        si, sj, sv = swing_matrix(bu, bi, bt, n_users, n_items, params)
        _, a, s = np.intersect1d(ci * n_items + cj, si * n_items + sj, assume_unique=True, return_indices=True)
        ci, cj, cc, sim = ci[a], cj[a], cc[a], round12(sv[s])
    else:
        n_i = np.bincount(bi, minlength=n_items).astype(np.int64)
        sim = round12(cc / np.sqrt((n_i[ci] * n_i[cj]).astype(np.float64)))
    order = np.lexsort((cj, -cc, -sim, ci))
    ci, cj, cc, sim = ci[order], cj[order], cc[order], sim[order]
    rank = _rank_in_groups(ci) + 1
    top = rank <= params.item_k
    ci, cj, cc, sim, rank = ci[top], cj[top], cc[top], sim[top], rank[top]
    if params.similarity == "cosine":
        sim = np.minimum(sim, 1.0)
    n = len(ci)
    return pa.table(
        {
            "item_id": item_ids.take(pa.array(ci)),
            "rank": pa.array(rank, pa.int32()),
            "neighbor_item_id": item_ids.take(pa.array(cj)),
            "similarity": pa.array(sim, pa.float64()),
            "co_users": pa.array(cc, pa.int64()),
            "window_start_ts": pa.array(np.full(n, to_micros(start), dtype=np.int64), TS_TYPE),
            "cutoff_ts": pa.array(np.full(n, to_micros(cutoff), dtype=np.int64), TS_TYPE),
        },
        schema=ITEM_NEIGHBORS.schema,
    )


def build_recall_items_local(events: pa.Table, neighbors: pa.Table, cutoff_ts: dt.datetime, params: RecallParams) -> pa.Table:
    """The ``recall_items`` rows from ``events`` and ``item_neighbors`` as of the cutoff (as
    :func:`features.recall.kernels.build_recall_items`), ordered by ``user_id`` then ``rank``.

    ``events`` may hold events at or after the cutoff (they are ignored); the popular fill reads
    the same window as ``item_neighbors``."""
    from features.recall.contracts import RECALL_ITEMS

    params.validate()
    cutoff = as_utc(cutoff_ts)
    ts = micros(events["event_ts"])
    past = ts < to_micros(cutoff)
    events = events.filter(pa.array(past))
    ts = ts[past]
    if not events.num_rows:
        return RECALL_ITEMS.schema.empty_table()
    # One code space for users and one for items: the events' ids and the neighbours' ids.
    user, user_ids = encode(events["user_id"])
    items_all = pa.chunked_array(
        [pc.cast(c, pa.string()) for c in (events["item_id"], neighbors["item_id"], neighbors["neighbor_item_id"])]
    )
    codes, item_ids = encode(items_all)
    n_ev, n_nb = events.num_rows, neighbors.num_rows
    item, nb_i, nb_j = codes[:n_ev], codes[n_ev:n_ev + n_nb], codes[n_ev + n_nb:]
    n_users, n_items = len(user_ids), len(item_ids)
    positive = positive_mask(events, params.min_rating)

    hu, hi, hp, _ = recent_positive_items(user[positive], item[positive], ts[positive], params.history_items)
    seen = np.unique(user * n_items + item)

    # Votes: a history item i at position p gives similarity(i, j) · decay^p to each neighbour j.
    nb_sim = neighbors["similarity"].to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.argsort(nb_i, kind="stable")
    nb_i, nb_j, nb_sim = nb_i[order], nb_j[order], nb_sim[order]
    lo = np.searchsorted(nb_i, hi, side="left")
    hi_end = np.searchsorted(nb_i, hi, side="right")
    counts = hi_end - lo
    src = np.repeat(np.arange(len(hi)), counts)
    idx = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    vu, vj = hu[src], nb_j[idx]
    vv = nb_sim[idx] * np.power(float(params.decay), hp[src].astype(np.float64))
    vkey = vu * n_items + vj
    unseen = ~np.isin(vkey, seen, assume_unique=False)
    vkey, vv = vkey[unseen], vv[unseen]
    order = np.argsort(vkey, kind="stable")
    vkey, vv = vkey[order], vv[order]
    starts = _group_starts(vkey)
    score = round12(np.add.reduceat(vv, starts)) if len(starts) else np.zeros(0)
    pu, pj = vkey[starts] // n_items, vkey[starts] % n_items
    pos_score = score > 0
    pu, pj, score = pu[pos_score], pj[pos_score], score[pos_score]
    order = np.lexsort((pj, -score, pu))
    pu, pj, score = pu[order], pj[order], score[order]
    rank = _rank_in_groups(pu) + 1
    top = rank <= params.size
    pu, pj, score, rank = pu[top], pj[top], score[top], rank[top]
    source = np.zeros(len(pu), dtype=np.int8)  # 0 = i2i, 1 = popular

    if params.fill == "popular":
        fu, fj, frank, fshare = _popular_fill(user, item, ts, positive, seen, pu, pj, n_users, n_items, cutoff, params)
        pu, pj, rank = np.r_[pu, fu], np.r_[pj, fj], np.r_[rank, frank]
        score, source = np.r_[score, fshare], np.r_[source, np.ones(len(fu), dtype=np.int8)]
        order = np.lexsort((rank, pu))
        pu, pj, rank, score, source = pu[order], pj[order], rank[order], score[order], source[order]

    n = len(pu)
    return pa.table(
        {
            "user_id": user_ids.take(pa.array(pu)),
            "rank": pa.array(rank, pa.int32()),
            "item_id": item_ids.take(pa.array(pj)),
            "score": pa.array(score, pa.float64()),
            "source": pa.array(np.array(["i2i", "popular"])[source], pa.string()),
            "cutoff_ts": pa.array(np.full(n, to_micros(cutoff), dtype=np.int64), TS_TYPE),
        },
        schema=RECALL_ITEMS.schema,
    )


def _popular_fill(user, item, ts, positive, seen, pu, pj, n_users, n_items, cutoff, params: RecallParams):
    """The ``popular`` rows topping up pools shorter than ``size``: for every user with an event
    before the cutoff, the window's most popular items (users with a positive, ties by item)
    that the user has not seen and its pool lacks, ranked after its i2i rows. Returns
    ``(user, item, rank, share)``."""
    start = cutoff - dt.timedelta(days=params.window_days)
    win = positive & (ts >= to_micros(start))
    pairs = np.unique(user[win] * n_items + item[win])
    n_pop = np.bincount(pairs % n_items, minlength=n_items)
    window_users = len(np.unique(pairs // n_items))
    ranked = np.lexsort((np.arange(n_items), -n_pop))
    ranked = ranked[n_pop[ranked] > 0]
    taken = np.bincount(pu, minlength=n_users)
    excluded = np.union1d(seen, pu * n_items + pj)
    # A user excludes at most its seen items and its pool: that many + size of the ranking suffice.
    per_user_excluded = np.bincount(excluded // n_items, minlength=n_users)
    out_u, out_j, out_r = [], [], []
    users = np.unique(user)
    need = params.size - taken[users]
    users, need = users[need > 0], need[need > 0]
    depth = min(len(ranked), int(per_user_excluded[users].max(initial=0)) + params.size)
    top = ranked[:depth]
    cu = np.repeat(users, len(top))
    cj = np.tile(top, len(users))
    ok = ~np.isin(cu * n_items + cj, excluded)
    cu, cj = cu[ok], cj[ok]
    r = _rank_in_groups(cu) + 1  # rows stay in (user, popularity) order
    limit = np.repeat(need, np.bincount(cu, minlength=n_users)[users])
    keep = r <= limit
    out_u, out_j, out_r = cu[keep], cj[keep], r[keep] + taken[cu[keep]]
    share = n_pop[out_j] / max(window_users, 1)
    return out_u, out_j, out_r, share.astype(np.float64)
