"""Per-duration fits: the two-component GMM of D²Co, and the smoothing over neighbouring durations."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.labels.simple import FITTED, GMM_KWARGS, NO_ROWS, SINGLE_VALUE, TOO_FEW_ROWS


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
