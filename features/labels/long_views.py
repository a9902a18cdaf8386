"""Long-view (relevance) labels of D²Co and CWM, and the watch-time percentile CWM's threshold is."""
from __future__ import annotations

import numpy as np

from features.labels.d2q import _np_linear_quantile
from features.labels.simple import round_ms_to_s


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
