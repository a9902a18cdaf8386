"""Watch-time label math (PCR, WTG, D2Q, D²Co, CWM) in NumPy/pandas, importable without Spark.

This module is the single numeric definition of every label of ``watch_time_labels`` and of the
per-duration statistics of ``duration_stats`` (docs/labels.md). The Spark jobs call these very
functions on Arrow batches in their tasks (``features/labels/arrow_path.py``) and are tested to
equal the pandas path exactly; trainers use them to re-label the training rows for a hyperparameter
grid (α, T, c_inv, σ, bin count) from ``duration_stats`` and the rows, and to map model scores
back to seconds.

Units: watch time ``w`` and duration ``d`` are integer seconds, truncated then rounded half to
even (:func:`round_ms_to_s`). No function here returns NaN or ±inf for finite inputs: each
degenerate case has a documented fallback (docs/labels.md, "Where the official code breaks").

Nothing here imports pyspark; scikit-learn and scipy are imported lazily where needed.

The definitions live in modules of one concern each and are all importable from here:
:mod:`features.labels.simple` (units, per-row labels, scores to seconds),
:mod:`features.labels.fits` (per-duration GMM fits, smoothing), :mod:`features.labels.d2q`
(D2Q bins and ranks), :mod:`features.labels.long_views` (relevance labels, the CWM percentile)
and :mod:`features.labels.pandas_path` (every label of a whole table in pandas).
"""
from __future__ import annotations

from features.labels.d2q import (
    d2q_bin_edges,
    d2q_bin_of,
    d2q_lookup,
    d2q_rank_table,
)
from features.labels.fits import (
    fit_duration_gmm,
    GmmFit,
    smooth_and_fill,
    smooth_positional,
    smooth_seconds,
)
from features.labels.long_views import (
    CWM_COMPLETION_RAW,
    CWM_COMPLETION_ROUNDED,
    CWM_COMPLETIONS,
    long_view_cwm,
    long_view_d2co,
    watch_percentile,
)
from features.labels.pandas_path import (
    STATS_GROUP_COLUMNS,
    duration_groups_pandas,
    finish_duration_stats,
    fit_stats_pandas,
    label_frame_pandas,
    LabelParams,
    prepare_rows_pandas,
    wtg_grid,
)
from features.labels.simple import (
    CWM_EPS,
    D2CO_AFFINE_BELOW,
    FITTED,
    GMM_KWARGS,
    NO_ROWS,
    SINGLE_VALUE,
    TOO_FEW_ROWS,
    cwm_score_to_seconds,
    cwm_target,
    d2co,
    d2co_gap_fallbacks,
    d2co_score_to_seconds,
    d2q_score_to_seconds,
    normal_cdf,
    pcr,
    pcr_score_to_seconds,
    round_ms_to_s,
    truncated_watch_s,
    wtg_gain,
    wtg_score_to_seconds,
)
from features.labels.names import RELEVANCE_LABELS, TRAINING_LABELS, UNIT_LABELS

__all__ = [
    "CWM_COMPLETION_RAW", "CWM_COMPLETION_ROUNDED", "CWM_COMPLETIONS", "CWM_EPS", "D2CO_AFFINE_BELOW", "FITTED",
    "GMM_KWARGS", "NO_ROWS", "RELEVANCE_LABELS", "SINGLE_VALUE", "STATS_GROUP_COLUMNS", "TOO_FEW_ROWS",
    "TRAINING_LABELS", "UNIT_LABELS", "cwm_score_to_seconds", "cwm_target", "d2co", "d2co_gap_fallbacks",
    "d2co_score_to_seconds", "d2q_bin_edges", "d2q_bin_of", "d2q_lookup", "d2q_rank_table",
    "d2q_score_to_seconds", "duration_groups_pandas", "finish_duration_stats", "fit_duration_gmm",
    "fit_stats_pandas", "GmmFit", "label_frame_pandas", "LabelParams", "long_view_cwm", "long_view_d2co",
    "normal_cdf", "pcr", "pcr_score_to_seconds", "prepare_rows_pandas", "round_ms_to_s", "smooth_and_fill",
    "smooth_positional", "smooth_seconds", "truncated_watch_s", "watch_percentile", "wtg_gain", "wtg_grid",
    "wtg_score_to_seconds",
]  # fmt: skip
