"""The whole-table pandas path: every label of a table of rows (the reference the Spark job is tested against)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.labels.d2q import d2q_bin_edges, d2q_bin_of, d2q_lookup, d2q_rank_table
from features.labels.fits import fit_duration_gmm, smooth_and_fill
from features.labels.long_views import long_view_cwm, long_view_d2co, watch_percentile
from features.labels.simple import (
    FITTED,
    NO_ROWS,
    cwm_target,
    d2co,
    normal_cdf,
    pcr,
    round_ms_to_s,
    truncated_watch_s,
    wtg_gain,
)


# ---- whole-table pandas path (the reference the Spark job is benchmarked against) ---------
@dataclass(frozen=True)
class LabelParams:
    """Every knob of the labels (``pipelines.labels.params.LabelSettings`` has the same fields)."""

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
    mean and sample std of w, and the GMM fit (:func:`fit_duration_gmm`).

    The watch times are sorted first (the fit sorts them anyway), so the mean and std are summed
    in one order whatever order the rows come in: the Spark job, which has only the sorted
    values of each duration, gets the same floats."""
    out = []
    for d, g in train.groupby("duration_s", sort=True):
        w = np.sort(g["watch_time_s"].to_numpy(dtype=float))
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
    duration's training mean/std and w only, so it can be tabulated once (Σ(d+1) rows, 29,000
    for [5, 240] s) and looked up instead of computed per row."""
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
