"""Every label of whole Arrow batches: the kernels the Spark tasks of the label jobs run.

The two label jobs need far less than the rows themselves (docs/labels.md, "How the jobs run"):

* **Fit.** A duration's GMM fit, mean and std depend only on its sorted watch times, and those
  are ``np.repeat(w, count)`` of its cells of the **training histogram**: rows of the fit
  window per (duration second, watch second), at most one count per cell that occurs
  (:class:`Histogram`, :func:`training_histogram`, summed over batches). τ and the D2Q rank
  table are sums of the same histogram (:func:`tau_of`, :func:`d2q_grids`).
* **Label.** :class:`LabelGrid` holds the per-duration stats and the D2Q labels per (bin, watch
  second); :func:`label_batch` computes every label of a batch with the functions the pandas
  path (:func:`features.labels.math.label_frame_pandas`) calls, on the same values, so the two
  agree bit for bit (tests/pipelines/test_labels_arrow.py).

Units: durations and watch times are whole seconds (rounded half to even from milliseconds),
``event_date`` a UTC day. Pure functions of Arrow/NumPy data: no I/O, no Spark.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.labels.d2q import d2q_rank_table
from features.labels.fits import fit_duration_gmm
from features.labels.long_views import long_view_cwm, long_view_d2co, watch_percentile
from features.labels.pandas_path import STATS_GROUP_COLUMNS, LabelParams
from features.labels.simple import FITTED, CWM_EPS, cwm_target, d2co, normal_cdf, pcr, round_ms_to_s, truncated_watch_s, wtg_gain

#: The ``events`` columns the label pass reads (the fit pass reads the last three).
LABEL_INPUT_COLUMNS = ("event_id", "user_id", "item_id", "event_ts", "event_date", "duration_ms", "play_time_ms")
FIT_INPUT_COLUMNS = ("event_date", "duration_ms", "play_time_ms")

#: The counts :func:`label_batch` returns (summed over batches, they are the job's raw counts).
BATCH_COUNTS = (
    "events", "events_without_duration", "events_with_zero_duration", "events_without_play_time", "kept",
    "beyond", "label_rows", "label_rows_in_fit_window", "rows_wtg_gain_zero_fallback", "rows_d2co_min_gap_guard",
    "rows_d2co_interpolated_fit", "rows_cwm_target_clamped", "rows_censored",
)  # fmt: skip


def _int_column(batch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, validity mask) of an integer column as int64."""
    col = batch.column(name)
    valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return values, valid


def _days(batch) -> np.ndarray:
    """``event_date`` as days since 1970-01-01 (int64)."""
    col = batch.column("event_date").cast(pa.date32())
    return np.asarray(pc.fill_null(col.cast(pa.int32()), np.iinfo(np.int32).min).to_numpy(zero_copy_only=False), dtype=np.int64)


def _epoch_day(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


@dataclass(frozen=True)
class _Prepared:
    """The rows of a batch with a duration in range (:func:`features.labels.math.prepare_rows_pandas`)."""

    keep: np.ndarray  # bool per input row
    duration_ms: np.ndarray  # of the kept rows
    play_time_ms: np.ndarray
    duration_s: np.ndarray
    watch_time_s: np.ndarray
    in_fit_window: np.ndarray
    counts: dict[str, int]


def _prepare(batch, params: LabelParams, fit_start: dt.date, fit_end: dt.date) -> _Prepared:
    dur, dur_ok = _int_column(batch, "duration_ms")
    play, play_ok = _int_column(batch, "play_time_ms")
    present = dur_ok & play_ok & (dur > 0)
    d_all = np.where(present, round_ms_to_s(np.where(present, dur, 0)), -1)
    keep = present & (d_all >= params.duration_min_s) & (d_all <= params.duration_max_s)
    dur_k, play_k = dur[keep], play[keep]
    days = _days(batch)[keep]
    counts = {
        "events": int(batch.num_rows),
        "events_without_duration": int((~dur_ok).sum()),
        "events_with_zero_duration": int((dur_ok & (dur <= 0)).sum()),
        "events_without_play_time": int((dur_ok & (dur > 0) & ~play_ok).sum()),
        "kept": int(keep.sum()),
        "beyond": int((play_k > dur_k).sum()),
    }
    return _Prepared(
        keep=keep,
        duration_ms=dur_k,
        play_time_ms=play_k,
        duration_s=d_all[keep],
        watch_time_s=truncated_watch_s(play_k, dur_k),
        in_fit_window=(days >= _epoch_day(fit_start)) & (days < _epoch_day(fit_end)),
        counts=counts,
    )


# ---- fit ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Histogram:
    """The training histogram, sparse: rows of the fit window per (duration second, watch
    second) cell, ``cell = (d - duration_min_s) * width + w`` with ``width = duration_max_s + 1``;
    ``cells`` sorted ascending and distinct, ``counts`` > 0."""

    cells: np.ndarray  # int64
    counts: np.ndarray  # int64
    width: int

    @classmethod
    def of(cls, cells, counts, width: int) -> "Histogram":
        """Sum ``counts`` per cell (cells in any order, repeated or not)."""
        cells = np.asarray(cells, dtype=np.int64)
        u, inv = np.unique(cells, return_inverse=True)
        summed = np.zeros(u.size, dtype=np.int64)
        np.add.at(summed, inv.ravel(), np.asarray(counts, dtype=np.int64))
        return cls(u, summed, int(width))

    @classmethod
    def merge(cls, parts: list["Histogram"], width: int) -> "Histogram":
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), int(width))
        return cls.of(np.concatenate([p.cells for p in parts]), np.concatenate([p.counts for p in parts]), width)

    @property
    def duration_index(self) -> np.ndarray:
        return self.cells // self.width

    @property
    def w(self) -> np.ndarray:
        return self.cells % self.width

    def rows_by_duration(self, n_durations: int) -> np.ndarray:
        return np.bincount(self.duration_index, weights=self.counts, minlength=n_durations).astype(np.int64)

    def sorted_w(self, index: int) -> np.ndarray:
        """The watch times (float, ascending) of the training rows of duration ``index``."""
        lo, hi = np.searchsorted(self.cells, [index * self.width, (index + 1) * self.width])
        return np.repeat((self.cells[lo:hi] - index * self.width).astype(float), self.counts[lo:hi])


def training_histogram(batch, params: LabelParams, fit_start: dt.date, fit_end: dt.date) -> Histogram:
    """The :class:`Histogram` of the rows of a batch (:data:`FIT_INPUT_COLUMNS`) dated in the fit
    window ``[fit_start, fit_end)`` (UTC days) with a duration in range."""
    p = _prepare(batch, params, fit_start, fit_end)
    width = params.duration_max_s + 1
    cell = (p.duration_s[p.in_fit_window] - params.duration_min_s) * width + p.watch_time_s[p.in_fit_window]
    u, n = np.unique(cell, return_counts=True)
    return Histogram(u.astype(np.int64), n.astype(np.int64), width)


def duration_group(duration_s: int, w_sorted: np.ndarray, min_rows: int) -> tuple:
    """One row of :data:`features.labels.math.STATS_GROUP_COLUMNS` from a duration's watch times
    sorted ascending: rows, mean, sample std (NaN below 2 rows) and the GMM fit."""
    w = np.asarray(w_sorted, dtype=float)
    fit = fit_duration_gmm(w, min_rows)
    std = float(w.std(ddof=1)) if len(w) > 1 else math.nan
    return (int(duration_s), len(w), float(w.mean()), std, fit.noise_wt_s, fit.interest_wt_s, fit.status)


def groups_of(hist: Histogram, params: LabelParams, indices: list[int] | None = None) -> pd.DataFrame:
    """The per-duration groups (:func:`features.labels.math.duration_groups_pandas`) of the
    durations ``indices`` (offsets from ``duration_min_s``; default: every one with training rows)."""
    if indices is None:
        indices = [int(i) for i in np.unique(hist.duration_index)]
    out = [duration_group(params.duration_min_s + i, w, params.min_rows)
           for i in indices if (w := hist.sorted_w(i)).size]
    return pd.DataFrame(out, columns=list(STATS_GROUP_COLUMNS))


def tau_of(hist: Histogram, q: float) -> float:
    """CWM's long-view threshold: the q-quantile (numpy linear) of every training w."""
    by_w = np.bincount(hist.w, weights=hist.counts, minlength=hist.width).astype(np.int64)
    return watch_percentile(np.arange(by_w.size, dtype=np.int64), by_w, q)


def d2q_grids(hist: Histogram, bin_of_duration: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(d2q, d2q_dense) per (bin, w), shape (n_bins, width), from the training histogram and each
    duration's D2Q bin: :func:`features.labels.math.d2q_rank_table` of the training rows of each
    bin as a dense grid (a bin without training rows: 0.5 everywhere, as ``d2q_lookup``)."""
    width = hist.width
    d2q = np.full((n_bins, width), 0.5)
    dense = np.full((n_bins, width), 0.5)
    if hist.cells.size:
        bins = np.asarray(bin_of_duration, dtype=np.int64)[hist.duration_index]
        table = d2q_rank_table(bins, hist.w, hist.counts, max_w=width - 1)
        tb = table["d2q_bin"].to_numpy(np.int64)
        tw = table["watch_time_s"].to_numpy(np.int64)
        inside = tw < width
        d2q[tb[inside], tw[inside]] = table["d2q"].to_numpy()[inside]
        dense[tb[inside], tw[inside]] = table["d2q_dense"].to_numpy()[inside]
    return d2q, dense


# ---- label ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelGrid:
    """What :func:`label_batch` needs of ``duration_stats`` (one row per duration second of the
    range, sorted), per duration, and the D2Q labels per (bin, watch second)."""

    params: LabelParams
    mean: np.ndarray  # per duration: wt_mean_s
    std: np.ndarray  # wt_std_s
    p: np.ndarray  # interest_wt_smoothed_s
    q: np.ndarray  # noise_wt_smoothed_s
    d2q_bin: np.ndarray  # int32
    fitted: np.ndarray  # bool: fit_status == fitted
    no_std: np.ndarray  # WTG gain fallback (std missing or 0)
    gap: np.ndarray  # D²Co denominator guard (p - q < min_gap_s)
    interpolated: np.ndarray
    tau_s: float
    d2q: np.ndarray  # (bins, width)
    d2q_dense: np.ndarray

    @classmethod
    def build(cls, stats: pd.DataFrame, d2q: np.ndarray, d2q_dense: np.ndarray, params: LabelParams) -> "LabelGrid":
        d = stats["duration_s"].to_numpy(np.int64)
        if d.tolist() != params.durations.tolist():
            raise ValueError("duration_stats must hold one row per duration second of the range, sorted")
        p = stats["interest_wt_smoothed_s"].to_numpy(float)
        q = stats["noise_wt_smoothed_s"].to_numpy(float)
        return cls(
            params=params,
            mean=stats["wt_mean_s"].to_numpy(float),
            std=stats["wt_std_s"].to_numpy(float),
            p=p,
            q=q,
            d2q_bin=stats["d2q_bin"].to_numpy().astype(np.int32),
            fitted=(stats["fit_status"] == FITTED).to_numpy(),
            no_std=~(stats["wt_std_s"].fillna(0).to_numpy(float) > 0),
            gap=(p - q) < params.min_gap_s,
            interpolated=stats["is_interpolated"].to_numpy(bool),
            tau_s=float(stats["long_view_cwm_threshold_s"].iloc[0]),
            d2q=np.ascontiguousarray(d2q, dtype=float),
            d2q_dense=np.ascontiguousarray(d2q_dense, dtype=float),
        )


def label_batch(batch, grid: LabelGrid, fit_start: dt.date, fit_end: dt.date) -> tuple[pa.Table, dict[str, int]]:
    """The ``watch_time_labels`` rows of a batch of ``events`` (:data:`LABEL_INPUT_COLUMNS`) and its
    counts (:data:`BATCH_COUNTS`). Columns in the contract's order, rows in input order; every
    label is computed by the function :func:`features.labels.math.label_frame_pandas` calls, on the
    same values."""
    params = grid.params
    p = _prepare(batch, params, fit_start, fit_end)
    counts = dict(p.counts)
    idx = p.duration_s - params.duration_min_s
    sel = grid.fitted[idx] if params.min_rows_policy == "drop" else np.ones(idx.size, dtype=bool)
    keep = p.keep.copy()
    keep[keep] = sel
    idx, w, d = idx[sel], p.watch_time_s[sel], p.duration_s[sel]
    play, dur, in_fit = p.play_time_ms[sel], p.duration_ms[sel], p.in_fit_window[sel]
    bins = grid.d2q_bin[idx]
    clamp_w = params.cwm_c_inv / np.log(1.0 / CWM_EPS) - 1.0  # below it exp(-c/(w+1)) < 1e-6: the CWM clamp
    censored = w >= d
    counts.update(
        label_rows=int(w.size),
        label_rows_in_fit_window=int(in_fit.sum()),
        rows_wtg_gain_zero_fallback=int(grid.no_std[idx].sum()),
        rows_d2co_min_gap_guard=int(grid.gap[idx].sum()),
        rows_d2co_interpolated_fit=int(grid.interpolated[idx].sum()),
        rows_cwm_target_clamped=int((w < clamp_w).sum()),
        rows_censored=int(censored.sum()),
    )
    gain = wtg_gain(w, grid.mean[idx], grid.std[idx])
    mask = pa.array(keep)
    passed = {name: pc.filter(batch.column(name), mask) for name in LABEL_INPUT_COLUMNS[:5]}
    cols = {
        **passed,
        "duration_s": pa.array(d, pa.int64()),
        "watch_time_s": pa.array(w, pa.int64()),
        "play_time_ms": pa.array(play, pa.int64()),
        "is_complete": pa.array(play >= dur),
        "is_in_fit_window": pa.array(in_fit),
        "pcr": pa.array(pcr(w, d)),
        "wtg_gain": pa.array(gain),
        "wtg": pa.array(normal_cdf(gain)),
        "d2q_bin": pa.array(bins, pa.int32()),
        "d2q": pa.array(grid.d2q[bins, w]),
        "d2q_dense": pa.array(grid.d2q_dense[bins, w]),
        "d2co": pa.array(d2co(w, grid.p[idx], grid.q[idx], params.alpha, params.min_gap_s)),
        "cwm_target": pa.array(cwm_target(w, params.cwm_c_inv)),
        "is_censored": pa.array(censored),
        "is_long_view_d2co": pa.array(long_view_d2co(w, d, threshold_s=params.long_view_d2co_s)),
        "is_long_view_cwm": pa.array(long_view_cwm(w, d, play, dur, grid.tau_s, params.long_view_cwm_completion)),
    }
    return pa.table(cols), counts
