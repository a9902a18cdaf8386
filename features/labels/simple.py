"""Label units, the per-row labels (PCR, WTG, CWM, D²Co) and the maps from model scores back to seconds."""
from __future__ import annotations

import numpy as np


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
