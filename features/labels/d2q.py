"""D2Q: equal-frequency duration bins and the watch-time rank table within each bin."""
from __future__ import annotations

import numpy as np
import pandas as pd


# ---- D2Q -----------------------------------------------------------------------------------
def _np_linear_quantile(sorted_values_at, n: int, qs: np.ndarray) -> np.ndarray:
    """numpy's 'linear' quantile (as pandas' Series.quantile calls it) for a sorted sample of n."""
    # pandas passes percentages to np.percentile, which divides them by 100 again.
    q = np.true_divide(np.asarray(qs, dtype=float) * 100.0, 100)
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    gamma = virtual - prev
    prev_i = np.clip(prev.astype(np.int64), 0, n - 1)
    next_i = np.clip(prev_i + 1, 0, n - 1)
    a = sorted_values_at(prev_i).astype(float)
    b = sorted_values_at(next_i).astype(float)
    diff = b - a
    out = a + diff * gamma
    hi = gamma >= 0.5
    out[hi] = (b - diff * (1 - gamma))[hi]
    return out


def d2q_bin_edges(durations, counts, n_bins: int) -> np.ndarray:
    """Equal-frequency bin edges over the *rows* (``pd.qcut(duration, n_bins, duplicates='drop')``).

    ``durations`` (sorted, distinct) with their row ``counts``: the edges are computed from the
    counts (no expansion to rows), with numpy's linear interpolation, then de-duplicated.
    """
    d = np.asarray(durations)
    c = np.asarray(counts, dtype=np.int64)
    keep = c > 0
    d, c = d[keep], c[keep]
    if d.size == 0:
        raise ValueError("no rows to fit D2Q bins on")
    cum = np.cumsum(c)
    n = int(cum[-1])

    def at(i):
        return d[np.searchsorted(cum, np.asarray(i) + 1, side="left")]

    edges = _np_linear_quantile(at, n, np.linspace(0, 1, int(n_bins) + 1))
    return np.unique(edges)


def d2q_bin_of(durations, edges) -> np.ndarray:
    """The bin (0-based) of each duration for ``edges`` (right-closed, lowest edge included).

    Durations outside the fitted range go to the first or last bin.
    """
    e = np.asarray(edges, dtype=float)
    x = np.asarray(durations, dtype=float)
    if e.size < 2:
        return np.zeros(x.shape, dtype=np.int32)
    ids = np.searchsorted(e, x, side="left")
    ids[x == e[0]] = 1
    return np.clip(ids - 1, 0, e.size - 2).astype(np.int32)


def d2q_rank_table(bins, w, counts, max_w: int | None = None) -> pd.DataFrame:
    """Per (bin, watch second) the D2Q labels of a row with that w, against the training rows.

    ``bins``, ``w``, ``counts``: the training rows aggregated by (d2q_bin, watch_time_s). For
    every bin and every w from 0 to max(``max_w``, the bin's largest training w + 1) (larger w
    clamp to the last entry, whose labels are 1.0):

    * ``d2q`` = scipy ``percentileofscore(train_w_of_bin, w, kind='rank') / 100``; for a training
      row this equals pandas' average-rank ``rank(pct=True)`` of the reference;
    * ``d2q_dense`` = (distinct training values <= w) / (distinct values in the bin), CWM's
      dense rank ratio for training rows.

    New rows (other days) are scored against the training rows only, so labels of the training
    rows never depend on other days.
    """
    df = pd.DataFrame({"bin": np.asarray(bins, dtype=np.int64), "w": np.asarray(w, dtype=np.int64), "n": np.asarray(counts, dtype=np.int64)})
    df = df[df["n"] > 0].groupby(["bin", "w"], as_index=False)["n"].sum()
    frames = []
    for b, g in df.groupby("bin", sort=True):
        top = max(int(g["w"].max()) + 1, int(max_w or 0))
        grid = np.zeros(top + 1, dtype=np.int64)
        grid[g["w"].to_numpy()] = g["n"].to_numpy()
        total = grid.sum()
        le = np.cumsum(grid)
        lt = le - grid
        distinct_le = np.cumsum(grid > 0)
        pct = (lt + le + (grid > 0)) / (2.0 * total)
        frames.append(
            pd.DataFrame(
                {
                    "d2q_bin": np.int32(b),
                    "watch_time_s": np.arange(top + 1, dtype=np.int64),
                    "d2q": pct,
                    "d2q_dense": distinct_le / float(distinct_le[-1]),
                }
            )
        )
    if not frames:
        return pd.DataFrame({"d2q_bin": pd.Series([], dtype=np.int32), "watch_time_s": pd.Series([], dtype=np.int64),
                             "d2q": pd.Series([], dtype=float), "d2q_dense": pd.Series([], dtype=float)})
    return pd.concat(frames, ignore_index=True)


def d2q_lookup(table: pd.DataFrame, bins, w) -> tuple[np.ndarray, np.ndarray]:
    """Look up (d2q, d2q_dense) of rows (bin, w) in :func:`d2q_rank_table`; w beyond a bin's grid
    takes its top entry (1.0, 1.0); a bin without training rows gives 0.5 / 0.5."""
    bins = np.asarray(bins, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    top = table.groupby("d2q_bin")["watch_time_s"].max()
    cap = top.reindex(bins).to_numpy()
    has = np.isfinite(cap)
    wc = np.where(has, np.minimum(w, np.nan_to_num(cap, nan=0).astype(np.int64)), 0)
    idx = pd.MultiIndex.from_arrays([table["d2q_bin"].astype(np.int64), table["watch_time_s"]])
    pos = idx.get_indexer(pd.MultiIndex.from_arrays([bins, wc]))
    d2q_v = np.where(pos >= 0, table["d2q"].to_numpy()[np.maximum(pos, 0)], 0.5)
    dense = np.where(pos >= 0, table["d2q_dense"].to_numpy()[np.maximum(pos, 0)], 0.5)
    return d2q_v, dense
