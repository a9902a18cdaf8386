"""Training targets for each label, and the map from a model score back to seconds.

All label math comes from ``features.labels.math`` (the same definitions the labels table is
built with). The hyperparameters of a label (D²Co's α and T, D2Q's bin count, CWM's c_inv) are
re-applied here from ``duration_stats`` and the training rows, so a grid over them needs no
re-run of the labels job. Every statistic is taken from the training split only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, ndtri

from features.labels import math as lm
from features.labels.names import TRAINING_LABELS
from trainers.watch_time.data import WatchTimeData

LABELS = TRAINING_LABELS


@dataclass
class LabelParams:
    label: str
    d2co_alpha: float = 0.0
    d2co_window: int = 3
    d2co_smoothing: str = "positional"
    d2q_bins: int | None = None  # None: the table's d2q_bin / d2q columns
    cwm_c_inv: float = 40.0


@dataclass
class PreparedLabels:
    """Per split: the training target; and what the seconds map needs."""

    targets: dict[str, np.ndarray]
    bins: dict[str, np.ndarray] | None = None
    bin_sorted_w: dict[int, np.ndarray] | None = None
    p: dict[str, np.ndarray] | None = None
    q: dict[str, np.ndarray] | None = None
    wt_mean: float = 0.0
    wt_std: float = 1.0


def _stat(data: WatchTimeData, column: str, d: np.ndarray) -> np.ndarray:
    return data.stats[column].reindex(d.astype(np.int64)).to_numpy(dtype=np.float64)


def d2co_bounds(data: WatchTimeData, window: int, smoothing: str = "positional") -> tuple[pd.Series, pd.Series]:
    """Smoothed w⁺ (p) and w⁻ (q) per duration second, with window T, from duration_stats."""
    st = data.stats
    d = st.index.to_numpy(dtype=np.float64)
    n = st["rows"].to_numpy(dtype=np.float64)
    p, _ = lm.smooth_and_fill(d, st["interest_wt_s"].to_numpy(np.float64), n, window, smoothing)
    q, _ = lm.smooth_and_fill(d, st["noise_wt_s"].to_numpy(np.float64), n, window, smoothing)
    return pd.Series(p, index=st.index), pd.Series(q, index=st.index)


def _lookup(series: pd.Series, d: np.ndarray) -> np.ndarray:
    """Value per duration; durations outside the stats get the linear interpolation (constant at the ends)."""
    idx = series.index.to_numpy(dtype=np.float64)
    return np.interp(d.astype(np.float64), idx, series.to_numpy(dtype=np.float64))


def prepare_labels(data: WatchTimeData, hp: LabelParams) -> PreparedLabels:
    cols = {k: s.columns for k, s in data.splits.items()}
    if hp.label == "pcr":
        return PreparedLabels({k: c["pcr"] for k, c in cols.items()})
    if hp.label == "wtg":
        return PreparedLabels({k: c["wtg"] for k, c in cols.items()})
    if hp.label == "watch_time":
        w = cols["train"]["watch_time_s"]
        mean, std = float(w.mean()), float(w.std()) or 1.0
        return PreparedLabels({k: (c["watch_time_s"] - mean) / std for k, c in cols.items()}, wt_mean=mean, wt_std=std)
    if hp.label == "cwm":
        return PreparedLabels({k: lm.cwm_target(c["watch_time_s"], hp.cwm_c_inv) for k, c in cols.items()})
    if hp.label == "d2co":
        p_s, q_s = d2co_bounds(data, hp.d2co_window, hp.d2co_smoothing)
        p = {k: _lookup(p_s, c["duration_s"]) for k, c in cols.items()}
        q = {k: _lookup(q_s, c["duration_s"]) for k, c in cols.items()}
        targets = {k: lm.d2co(c["watch_time_s"], p[k], q[k], hp.d2co_alpha) for k, c in cols.items()}
        return PreparedLabels(targets, p=p, q=q)
    if hp.label == "d2q":
        train = cols["train"]
        if hp.d2q_bins is None:
            bins = {k: c["d2q_bin"].astype(np.int64) for k, c in cols.items()}
            targets = {k: c["d2q"] for k, c in cols.items()}
        else:
            dur, counts = np.unique(train["duration_s"].astype(np.int64), return_counts=True)
            edges = lm.d2q_bin_edges(dur, counts, hp.d2q_bins)
            bins = {k: lm.d2q_bin_of(c["duration_s"], edges).astype(np.int64) for k, c in cols.items()}
            agg = pd.DataFrame({"b": bins["train"], "w": train["watch_time_s"].astype(np.int64)}).value_counts().reset_index()
            table = lm.d2q_rank_table(agg["b"], agg["w"], agg["count"])
            targets = {k: lm.d2q_lookup(table, bins[k], c["watch_time_s"])[0] for k, c in cols.items()}
        tw = pd.Series(train["watch_time_s"]).groupby(bins["train"])
        sorted_w = {int(b): np.sort(g.to_numpy(np.float64)) for b, g in tw}
        return PreparedLabels(targets, bins=bins, bin_sorted_w=sorted_w)
    raise ValueError(f"unknown label {hp.label!r}; known: {LABELS}")


def score_to_seconds(data: WatchTimeData, prep: PreparedLabels, hp: LabelParams, split: str, score: np.ndarray) -> np.ndarray:
    """Predicted (observed, truncated) watch time in seconds for the rows of ``split``, in [0, d]."""
    c = data.splits[split].columns
    d = c["duration_s"]
    if hp.label == "pcr":
        return lm.pcr_score_to_seconds(score, d)
    if hp.label == "wtg":
        gain = ndtri(np.clip(expit(score), 1e-6, 1 - 1e-6))  # the label is Φ(gain): invert it first
        return lm.wtg_score_to_seconds(gain, _stat(data, "wt_mean_s", d), _stat(data, "wt_std_s", d), d)
    if hp.label == "watch_time":
        return np.clip(score * prep.wt_std + prep.wt_mean, 0.0, d)
    if hp.label == "cwm":
        return lm.cwm_score_to_seconds(score, hp.cwm_c_inv, d)
    if hp.label == "d2co":
        return lm.d2co_score_to_seconds(expit(score), prep.p[split], prep.q[split], d, hp.d2co_alpha)
    if hp.label == "d2q":
        out = np.zeros(score.shape, dtype=np.float64)
        bins = prep.bins[split]
        for b in np.unique(bins):
            m = bins == b
            out[m] = lm.d2q_score_to_seconds(score[m], prep.bin_sorted_w.get(int(b), np.array([])))
        return np.clip(out, 0.0, d)
    raise ValueError(f"unknown label {hp.label!r}")
