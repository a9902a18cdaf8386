"""Watch-time label math (PCR, WTG, D2Q, D²Co, CWM) in NumPy/pandas, importable without Spark.

This module is the single numeric definition of every label of ``watch_time_labels`` and of the
per-duration statistics of ``duration_stats`` (docs/labels.md). The Spark job in
``features/labels.py`` computes the same quantities with Spark expressions and is tested
against these functions; trainers use them to re-label the training rows for a hyperparameter
grid (α, T, c_inv, σ, bin count) from ``duration_stats`` and the rows, and to map model scores
back to seconds.

Units: watch time ``w`` and duration ``d`` are integer seconds, truncated then rounded half to
even (:func:`round_ms_to_s`). No function here returns NaN or ±inf for finite inputs: each
degenerate case has a documented fallback (docs/labels.md, "Where the official code breaks").

Nothing here imports pyspark; scikit-learn and scipy are imported lazily where needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: GaussianMixture settings of the official D²Co code (``cal_gmm_label.py``).
GMM_KWARGS = dict(n_components=2, covariance_type="spherical", init_params="kmeans", max_iter=500, random_state=61)
#: The CWM target clamp (``train_model2.py``).
CWM_EPS = 1e-6
#: Fit status of a duration group in ``duration_stats.fit_status``.
FITTED, TOO_FEW_ROWS, SINGLE_VALUE, NO_ROWS = "fitted", "too_few_rows", "single_value", "no_rows"


# ---- units ---------------------------------------------------------------------------------
def round_ms_to_s(ms) -> np.ndarray:
    """Milliseconds to whole seconds, rounded half to even, in exact integer arithmetic.

    Equals ``np.round(ms / 1000)`` of the reference code (4500 ms -> 4 s, 5500 ms -> 6 s).
    """
    ms = np.asarray(ms, dtype=np.int64)
    q, r = np.divmod(ms, 1000)
    up = (r > 500) | ((r == 500) & (q % 2 == 1))
    return q + up.astype(np.int64)


def truncated_watch_s(play_time_ms, duration_ms) -> np.ndarray:
    """Truncated watch time in seconds: ``min(play, duration)`` in ms (play < 0 -> 0), then rounded."""
    play = np.maximum(np.asarray(play_time_ms, dtype=np.int64), 0)
    return round_ms_to_s(np.minimum(play, np.asarray(duration_ms, dtype=np.int64)))


# ---- simple labels -------------------------------------------------------------------------
def pcr(w, d) -> np.ndarray:
    """Play completion rate w/d, in [0, 1] (d >= 1 s by the duration filter; d <= 0 gives 0)."""
    w = np.asarray(w, dtype=float)
    d = np.asarray(d, dtype=float)
    return np.where(d > 0, np.minimum(w, np.maximum(d, 0)) / np.where(d > 0, d, 1.0), 0.0)


def wtg_gain(w, mean_s, std_s) -> np.ndarray:
    """WTG z-score (w - mean_d) / std_d; 0 where the std is missing, NaN or 0 (CWM repo's rule)."""
    w = np.asarray(w, dtype=float)
    mean_s = np.asarray(mean_s, dtype=float)
    std_s = np.asarray(std_s, dtype=float)
    ok = np.isfinite(mean_s) & np.isfinite(std_s) & (std_s > 0)
    return np.where(ok, (w - np.where(ok, mean_s, 0.0)) / np.where(ok, std_s, 1.0), 0.0)


def normal_cdf(x) -> np.ndarray:
    """Φ(x), the standard normal CDF (scipy's ``ndtr``), used for the WTG label."""
    from scipy.special import ndtr

    return ndtr(np.asarray(x, dtype=float))


def cwm_target(w, c_inv: float = 40.0) -> np.ndarray:
    """CWM per-row target logit(clamp(exp(-c_inv/(w+1)), 1e-6, 1-1e-6)), finite for w >= 0."""
    r = np.exp(-float(c_inv) / (np.asarray(w, dtype=float) + 1.0))
    r = np.clip(r, CWM_EPS, 1.0 - CWM_EPS)
    return np.log(r) - np.log1p(-r)


def cwm_score_to_seconds(score, c_inv: float = 40.0, duration_s=None) -> np.ndarray:
    """CWM score (logit of interest) to seconds: CWT = c_inv / (-log σ(s) + 1e-6) - 1.

    With ``duration_s`` the result is the predicted observed watch time, clipped to [0, d]; without
    it the counterfactual watch time, clipped below at 0. ``-log σ(s)`` is computed as
    ``log1p(exp(-s))`` (no overflow).
    """
    s = np.asarray(score, dtype=float)
    neg_log_sig = np.logaddexp(0.0, -s)
    cwt = float(c_inv) / (neg_log_sig + CWM_EPS) - 1.0
    if duration_s is None:
        return np.maximum(cwt, 0.0)
    return np.clip(cwt, 0.0, np.asarray(duration_s, dtype=float))


#: Below this |α·(p - q)| the D²Co label and its inverse use the affine form (they agree to ~|α·(p - q)|).
D2CO_AFFINE_BELOW = 1e-12


def d2co(w, p, q, alpha: float = 0.0, min_gap_s: float = 1.0) -> np.ndarray:
    """D²Co label, clipped to [0, 1].

    ``alpha != 0``: r = (e^{αw} - e^{αq}) / (e^{αp} - e^{αq}), evaluated in a form that neither
    overflows nor cancels for any α and any watch time. With x = α(w - q) and A = α(p - q):

    * α > 0: r = e^{x - A} · expm1(-x) / expm1(-A) (every exponent <= 0);
    * α < 0: r = expm1(x) / expm1(A) (every exponent <= 0 already).

    Because r is monotone in w, with r(q) = 0 and r(p) = 1, w is first clipped to [q, p], which
    gives the same clipped label and keeps x between 0 and A. ``alpha == 0``: the affine limit
    (w - q) / (p - q), also used where |A| < ``D2CO_AFFINE_BELOW`` (1e-12), where the two forms
    agree to within |A| and a subnormal α would lose every digit to underflow.

    Guard: where p - q < ``min_gap_s`` (p ≈ q, including p < q) the denominator uses
    p' = q + min_gap_s, so the label stays finite and monotone in w. See
    :func:`d2co_gap_fallbacks` to count the guarded rows.
    """
    w = np.asarray(w, dtype=float)
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    span = np.maximum(p - q, float(min_gap_s))
    affine = (w - q) / span
    if alpha == 0:
        return np.clip(affine, 0.0, 1.0)
    a = float(alpha)
    x = a * (np.clip(w, q, q + span) - q)
    big_a = a * span
    with np.errstate(invalid="ignore", divide="ignore"):
        if a > 0:
            r = np.exp(x - big_a) * np.expm1(-x) / np.expm1(-big_a)
        else:
            r = np.expm1(x) / np.expm1(big_a)
    r = np.where(np.abs(big_a) < D2CO_AFFINE_BELOW, affine, r)
    return np.clip(r, 0.0, 1.0)


def d2co_gap_fallbacks(p, q, min_gap_s: float = 1.0) -> np.ndarray:
    """Boolean mask of the rows whose D²Co denominator was guarded (p - q < min_gap_s)."""
    return (np.asarray(p, dtype=float) - np.asarray(q, dtype=float)) < float(min_gap_s)


def d2co_score_to_seconds(score, p, q, duration_s, alpha: float = 0.0, min_gap_s: float = 1.0) -> np.ndarray:
    """Inverse of :func:`d2co` (CWM's evaluation maps s·(p-q)+q for the affine form), clipped to [0, d].

    For α != 0 the exponential form is inverted exactly, w = q + log(1 + s·(e^{A} - 1))/α with
    A = α·(p - q) and s clipped to [0, 1]: as ``log1p(s·expm1(A))`` where |A| <= 1, and as
    ``logaddexp(log(1 - s), log(s) + A)`` (the same value, with no overflow and no cancellation)
    elsewhere; the affine inverse where |A| < ``D2CO_AFFINE_BELOW``, as in :func:`d2co`.
    """
    s = np.asarray(score, dtype=float)
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    span = np.maximum(p - q, float(min_gap_s))
    if alpha == 0:
        w = s * span + q
    else:
        a = float(alpha)
        s = np.clip(s, 0.0, 1.0)
        big_a = a * span
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            near = np.log1p(s * np.expm1(np.where(np.abs(big_a) <= 1.0, big_a, 0.0)))
            far = np.logaddexp(np.log1p(-s), np.log(s) + big_a)
            w = q + np.where(np.abs(big_a) <= 1.0, near, far) / a
        w = np.where(np.abs(big_a) < D2CO_AFFINE_BELOW, s * span + q, w)
    return np.clip(w, 0.0, np.asarray(duration_s, dtype=float))


def pcr_score_to_seconds(score, duration_s) -> np.ndarray:
    """PCR model score (a logit) to seconds: σ(s)·d, in [0, d]."""
    from scipy.special import expit

    d = np.asarray(duration_s, dtype=float)
    return np.clip(expit(np.asarray(score, dtype=float)) * d, 0.0, d)


def wtg_score_to_seconds(score, mean_s, std_s, duration_s) -> np.ndarray:
    """WTG model score (the gain) to seconds: s·std_d + mean_d, clipped to [0, d] (NaN stats -> 0)."""
    d = np.asarray(duration_s, dtype=float)
    mean_s = np.nan_to_num(np.asarray(mean_s, dtype=float), nan=0.0)
    std_s = np.nan_to_num(np.asarray(std_s, dtype=float), nan=0.0)
    return np.clip(np.asarray(score, dtype=float) * std_s + mean_s, 0.0, d)


def d2q_score_to_seconds(score, sorted_bin_w: np.ndarray) -> np.ndarray:
    """D2Q model score (a logit) to seconds: mean of the bin's sorted w at floor and ceil of (n-1)·σ(s).

    ``sorted_bin_w``: the training watch times of the row's bin, sorted (one bin for all scores).
    """
    from scipy.special import expit

    ws = np.asarray(sorted_bin_w, dtype=float)
    if ws.size == 0:
        return np.zeros_like(np.asarray(score, dtype=float))
    pos = (ws.size - 1) * expit(np.asarray(score, dtype=float))
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    return (ws[lo] + ws[hi]) / 2.0


# ---- GMM per duration ----------------------------------------------------------------------
@dataclass(frozen=True)
class GmmFit:
    noise_wt_s: float  # w⁻: mean of the low-mean component (NaN when not fitted)
    interest_wt_s: float  # w⁺: mean of the high-mean component (NaN when not fitted)
    status: str  # FITTED, TOO_FEW_ROWS, SINGLE_VALUE or NO_ROWS


def fit_duration_gmm(w, min_rows: int = 3) -> GmmFit:
    """Two-component 1-D GMM of one duration's watch times, as the official D²Co code fits it.

    ``GaussianMixture(2, spherical, kmeans init, max_iter=500, random_state=61)`` on the watch
    times **sorted ascending** (k-means initialisation depends on row order; sorting makes the
    fit independent of how rows arrive, in Spark or pandas). Groups with fewer than
    ``min_rows`` rows, or a single distinct value (a degenerate mixture), are not fitted: their
    w⁻/w⁺ come from fitted neighbours (:func:`smooth_and_fill`).
    """
    x = np.sort(np.asarray(w, dtype=float))
    if x.size == 0:
        return GmmFit(math.nan, math.nan, NO_ROWS)
    if x.size < max(int(min_rows), 3):
        return GmmFit(math.nan, math.nan, TOO_FEW_ROWS)
    if x[0] == x[-1]:
        return GmmFit(math.nan, math.nan, SINGLE_VALUE)
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(**GMM_KWARGS).fit(x.reshape(-1, 1))
    means = np.sort(gmm.means_.ravel())
    return GmmFit(float(means[0]), float(means[1]), FITTED)


# ---- smoothing -----------------------------------------------------------------------------
def smooth_positional(values, counts, T: int) -> np.ndarray:
    """Frequency-weighted centred moving average over 2T-1 *positions* (the official code's rule).

    ``values`` and ``counts`` are aligned with the sorted durations; the window shrinks at the
    ends (min_periods=1). Entries with NaN value or count 0 carry no weight.
    """
    v = np.asarray(values, dtype=float)
    n = np.asarray(counts, dtype=float)
    ok = np.isfinite(v) & (n > 0)
    nv = np.where(ok, n * np.where(ok, v, 0.0), 0.0)
    nw = np.where(ok, n, 0.0)
    win = 2 * int(T) - 1
    num = pd.Series(nv).rolling(win, center=True, min_periods=1).sum().to_numpy()
    den = pd.Series(nw).rolling(win, center=True, min_periods=1).sum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def smooth_seconds(durations, values, counts, T: int) -> np.ndarray:
    """Frequency-weighted moving average over the durations within T-1 *seconds* (|d' - d| <= T-1).

    Unlike the positional window it never averages across a gap wider than the window.
    """
    d = np.asarray(durations, dtype=float)
    v = np.asarray(values, dtype=float)
    n = np.asarray(counts, dtype=float)
    ok = np.isfinite(v) & (n > 0)
    nv = np.where(ok, n * np.where(ok, v, 0.0), 0.0)
    nw = np.where(ok, n, 0.0)
    half = int(T) - 1
    near = np.abs(d[:, None] - d[None, :]) <= half
    num = near @ nv
    den = near @ nw
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def smooth_and_fill(durations, values, counts, T: int, mode: str = "positional") -> tuple[np.ndarray, np.ndarray]:
    """Smoothed values for every duration, and a mask of those filled by interpolation.

    The window runs over the *fitted* durations (finite value, count > 0), positional or by
    seconds; every other duration (unfitted, or absent from the training window) gets the
    linear interpolation by seconds between the smoothed values of the nearest fitted
    durations (constant beyond the ends). No fitted duration at all: ``ValueError``.
    """
    d = np.asarray(durations, dtype=float)
    v = np.asarray(values, dtype=float)
    n = np.asarray(counts, dtype=float)
    if np.any(np.diff(d) <= 0):
        raise ValueError("durations must be strictly increasing")
    fitted = np.isfinite(v) & (n > 0)
    if not fitted.any():
        raise ValueError("no duration group could be fitted (every group has too few rows or one value)")
    if mode == "positional":
        sm = smooth_positional(v[fitted], n[fitted], T)
    elif mode == "seconds":
        sm = smooth_seconds(d[fitted], v[fitted], n[fitted], T)
    else:
        raise ValueError(f"unknown smoothing mode {mode!r} (positional or seconds)")
    out = np.interp(d, d[fitted], sm)
    return out, ~fitted


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


# ---- long views ----------------------------------------------------------------------------
def long_view_d2co(w, d, play_time_ms=None, duration_ms=None, threshold_s: float = 18.0) -> np.ndarray:
    """D²Co's relevance label: (PCR >= 1 and d <= 18 s) or (w > 18 s and d > 18 s)."""
    w = np.asarray(w, dtype=float)
    d = np.asarray(d, dtype=float)
    t = float(threshold_s)
    return ((w >= d) & (d <= t)) | ((w > t) & (d > t))


#: How CWM's long view decides "played to the end" (``LabelParams.long_view_cwm_completion``).
CWM_COMPLETION_ROUNDED, CWM_COMPLETION_RAW = "rounded_s", "raw_ms"
CWM_COMPLETIONS = (CWM_COMPLETION_ROUNDED, CWM_COMPLETION_RAW)


def long_view_cwm(w, d, play_time_ms, duration_ms, tau_s: float, completion: str = CWM_COMPLETION_ROUNDED) -> np.ndarray:
    """CWM's relevance label: (played to the end and d <= τ) or (w > τ and d > τ).

    "Played to the end" compares the untruncated play with the duration. ``completion``:

    * ``"rounded_s"`` (default, the official CWM code): both rounded to whole seconds first,
      half to even, ``round(play_time_ms / 1000) >= d``. For rounded seconds this is the same as
      ``w >= d`` (``is_censored``): 29.6 s of a 30.4 s video counts as played to the end.
    * ``"raw_ms"``: ``play_time_ms >= duration_ms`` (``is_complete``), the stricter reading.

    τ is the watch-time percentile fitted on the training window (:func:`watch_percentile`).
    """
    w = np.asarray(w, dtype=float)
    d = np.asarray(d, dtype=float)
    if completion == CWM_COMPLETION_ROUNDED:
        complete = round_ms_to_s(play_time_ms) >= d
    elif completion == CWM_COMPLETION_RAW:
        complete = np.asarray(play_time_ms, dtype=np.int64) >= np.asarray(duration_ms, dtype=np.int64)
    else:
        raise ValueError(f"unknown long_view_cwm_completion {completion!r} (one of {CWM_COMPLETIONS})")
    t = float(tau_s)
    return (complete & (d <= t)) | ((w > t) & (d > t))


def watch_percentile(w, counts, q: float) -> float:
    """The q-quantile (numpy linear) of the rows' watch times, from (value, count) pairs."""
    order = np.argsort(np.asarray(w))
    vals = np.asarray(w)[order]
    c = np.asarray(counts, dtype=np.int64)[order]
    keep = c > 0
    vals, c = vals[keep], c[keep]
    if vals.size == 0:
        return 0.0
    cum = np.cumsum(c)

    def at(i):
        return vals[np.searchsorted(cum, np.asarray(i) + 1, side="left")]

    return float(_np_linear_quantile(at, int(cum[-1]), np.array([q]))[0])


# ---- whole-table pandas path (the reference the Spark job is benchmarked against) ---------
@dataclass(frozen=True)
class LabelParams:
    """Every knob of the labels (``pipelines.settings.LabelSettings`` maps onto this)."""

    duration_min_s: int = 5
    duration_max_s: int = 240
    alpha: float = 0.0
    window_T: int = 3
    smoothing: str = "positional"  # positional | seconds
    d2q_bins: int = 30
    cwm_c_inv: float = 40.0
    min_rows: int = 3
    min_rows_policy: str = "borrow"  # borrow: neighbours' fits; drop: no label rows for such durations
    min_gap_s: float = 1.0
    long_view_d2co_s: float = 18.0
    long_view_cwm_quantile: float = 0.7
    long_view_cwm_completion: str = "rounded_s"  # rounded_s: round(play) >= d (official) | raw_ms: play_ms >= duration_ms

    @property
    def durations(self) -> np.ndarray:
        return np.arange(self.duration_min_s, self.duration_max_s + 1, dtype=np.int64)


STATS_GROUP_COLUMNS = ("duration_s", "rows", "wt_mean_s", "wt_std_s", "noise_wt_s", "interest_wt_s", "fit_status")


def duration_groups_pandas(train: pd.DataFrame, min_rows: int = 3) -> pd.DataFrame:
    """Per observed duration of the training rows (``duration_s``, ``watch_time_s``): row count,
    mean and sample std of w, and the GMM fit (:func:`fit_duration_gmm`)."""
    out = []
    for d, g in train.groupby("duration_s", sort=True):
        w = g["watch_time_s"].to_numpy(dtype=float)
        fit = fit_duration_gmm(w, min_rows)
        out.append((int(d), len(w), float(w.mean()), float(w.std(ddof=1)) if len(w) > 1 else math.nan,
                    fit.noise_wt_s, fit.interest_wt_s, fit.status))
    return pd.DataFrame(out, columns=list(STATS_GROUP_COLUMNS))


def finish_duration_stats(groups: pd.DataFrame, params: LabelParams, tau_s: float) -> pd.DataFrame:
    """From the per-duration groups to one row per duration second of the configured range:
    smoothed w⁻/w⁺ (with fallbacks), D2Q bin, and the CWM long-view threshold τ.

    Columns: ``duration_s rows wt_mean_s wt_std_s noise_wt_s interest_wt_s noise_wt_smoothed_s
    interest_wt_smoothed_s d2q_bin fit_status is_interpolated long_view_cwm_threshold_s``.
    """
    full = pd.DataFrame({"duration_s": params.durations})
    g = groups.copy()
    g["duration_s"] = g["duration_s"].astype(np.int64)
    full = full.merge(g, on="duration_s", how="left")
    full["rows"] = full["rows"].fillna(0).astype(np.int64)
    full["fit_status"] = full["fit_status"].fillna(NO_ROWS)
    d = full["duration_s"].to_numpy()
    n = full["rows"].to_numpy()
    noise_sm, filled = smooth_and_fill(d, full["noise_wt_s"].to_numpy(float), n, params.window_T, params.smoothing)
    interest_sm, _ = smooth_and_fill(d, full["interest_wt_s"].to_numpy(float), n, params.window_T, params.smoothing)
    full["noise_wt_smoothed_s"] = noise_sm
    full["interest_wt_smoothed_s"] = interest_sm
    full["d2q_bin"] = d2q_bin_of(d, d2q_bin_edges(d, n, params.d2q_bins))
    full["is_interpolated"] = filled
    full["long_view_cwm_threshold_s"] = float(tau_s)
    return full[
        ["duration_s", "rows", "wt_mean_s", "wt_std_s", "noise_wt_s", "interest_wt_s", "noise_wt_smoothed_s",
         "interest_wt_smoothed_s", "d2q_bin", "fit_status", "is_interpolated", "long_view_cwm_threshold_s"]
    ]


def prepare_rows_pandas(events: pd.DataFrame, params: LabelParams, fit_start, fit_end) -> pd.DataFrame:
    """Events -> the labelled population: duration and play present, duration_ms > 0, duration
    second in range; adds ``duration_s``, ``watch_time_s``, ``is_complete``, ``is_in_fit_window``."""
    e = events[events["duration_ms"].notna() & events["play_time_ms"].notna()]
    e = e[e["duration_ms"] > 0].copy()
    dur_ms = e["duration_ms"].to_numpy(np.int64)
    play_ms = e["play_time_ms"].to_numpy(np.int64)
    e["duration_s"] = round_ms_to_s(dur_ms)
    e["watch_time_s"] = truncated_watch_s(play_ms, dur_ms)
    e["is_complete"] = play_ms >= dur_ms
    e = e[(e["duration_s"] >= params.duration_min_s) & (e["duration_s"] <= params.duration_max_s)]
    day = pd.to_datetime(e["event_date"]).dt.date if "event_date" in e else pd.to_datetime(e["event_ts"], utc=True).dt.date
    e["is_in_fit_window"] = (day >= fit_start) & (day < fit_end)
    return e


def fit_stats_pandas(rows: pd.DataFrame, params: LabelParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit ``duration_stats`` and the D2Q rank table on the rows in the fit window."""
    train = rows[rows["is_in_fit_window"]]
    groups = duration_groups_pandas(train[["duration_s", "watch_time_s"]], params.min_rows)
    wc = train.groupby("watch_time_s").size()
    tau = watch_percentile(wc.index.to_numpy(), wc.to_numpy(), params.long_view_cwm_quantile)
    stats = finish_duration_stats(groups, params, tau)
    tb = train[["duration_s", "watch_time_s"]].merge(stats[["duration_s", "d2q_bin"]], on="duration_s")
    agg = tb.groupby(["d2q_bin", "watch_time_s"]).size().reset_index(name="n")
    table = d2q_rank_table(agg["d2q_bin"], agg["watch_time_s"], agg["n"])
    return stats, table


def wtg_grid(stats: pd.DataFrame) -> pd.DataFrame:
    """Φ(gain) for every (duration_s, watch_time_s) with 0 <= w <= d: WTG is a function of the
    duration's training mean/std and w only, so Spark looks it up (a broadcast join of at most
    Σ(d+1) rows, 29,000 for [5, 240] s) instead of calling Python per row."""
    d = stats["duration_s"].to_numpy(np.int64)
    reps = d + 1
    dd = np.repeat(d, reps)
    w = np.concatenate([np.arange(k, dtype=np.int64) for k in reps]) if len(d) else np.array([], dtype=np.int64)
    mean = np.repeat(stats["wt_mean_s"].to_numpy(float), reps)
    std = np.repeat(stats["wt_std_s"].to_numpy(float), reps)
    return pd.DataFrame({"duration_s": dd, "watch_time_s": w, "wtg": normal_cdf(wtg_gain(w, mean, std))})


def label_frame_pandas(rows: pd.DataFrame, stats: pd.DataFrame, rank_table: pd.DataFrame, params: LabelParams) -> pd.DataFrame:
    """Every label of ``watch_time_labels`` for prepared rows (:func:`prepare_rows_pandas`)."""
    if params.min_rows_policy == "drop":
        ok = stats.loc[stats["fit_status"] == FITTED, "duration_s"]
        rows = rows[rows["duration_s"].isin(ok)]
    s = stats.set_index("duration_s").loc[rows["duration_s"].to_numpy()]
    w = rows["watch_time_s"].to_numpy()
    d = rows["duration_s"].to_numpy()
    out = rows.copy()
    out["pcr"] = pcr(w, d)
    out["wtg_gain"] = wtg_gain(w, s["wt_mean_s"].to_numpy(float), s["wt_std_s"].to_numpy(float))
    out["wtg"] = normal_cdf(out["wtg_gain"].to_numpy())
    out["d2q_bin"] = s["d2q_bin"].to_numpy().astype(np.int32)
    out["d2q"], out["d2q_dense"] = d2q_lookup(rank_table, out["d2q_bin"].to_numpy(), w)
    p = s["interest_wt_smoothed_s"].to_numpy(float)
    q = s["noise_wt_smoothed_s"].to_numpy(float)
    out["d2co"] = d2co(w, p, q, params.alpha, params.min_gap_s)
    out["cwm_target"] = cwm_target(w, params.cwm_c_inv)
    out["is_censored"] = w >= d
    out["is_long_view_d2co"] = long_view_d2co(w, d, threshold_s=params.long_view_d2co_s)
    tau = float(stats["long_view_cwm_threshold_s"].iloc[0])
    out["is_long_view_cwm"] = long_view_cwm(
        w, d, rows["play_time_ms"].to_numpy(), rows["duration_ms"].to_numpy(), tau, params.long_view_cwm_completion
    )
    return out
