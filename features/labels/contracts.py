"""Contracts of the labels family: ``duration_stats`` and ``watch_time_labels`` (docs/labels.md).

Units: ``*_s`` columns are seconds (watch times truncated to the duration, rounded), ``*_ms``
milliseconds, ``event_ts`` a UTC timestamp, ``event_date`` its UTC date; labels are unitless.
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import WARNING, TableContract, between, one_of, ordered, row_count_band, utc_date_of
from features.events import TS_TYPE
from features.labels.names import UNIT_LABELS

DURATION_STATS = TableContract(
    name="duration_stats",
    schema=pa.schema(
        [
            pa.field("duration_s", pa.int64(), nullable=False),
            pa.field("rows", pa.int64(), nullable=False),
            pa.field("wt_mean_s", pa.float64()),
            pa.field("wt_std_s", pa.float64()),
            pa.field("noise_wt_s", pa.float64()),
            pa.field("interest_wt_s", pa.float64()),
            pa.field("noise_wt_smoothed_s", pa.float64(), nullable=False),
            pa.field("interest_wt_smoothed_s", pa.float64(), nullable=False),
            pa.field("d2q_bin", pa.int32(), nullable=False),
            pa.field("fit_start", pa.date32(), nullable=False),
            pa.field("fit_end", pa.date32(), nullable=False),
            pa.field("fit_status", pa.string(), nullable=False),
            pa.field("is_interpolated", pa.bool_(), nullable=False),
            pa.field("long_view_cwm_threshold_s", pa.float64(), nullable=False),
        ]
    ),
    column_docs={
        "duration_s": "duration in whole seconds (rounded half to even from `duration_ms`)",
        "rows": "training rows (events in the fit window) with this duration; 0 if none",
        "wt_mean_s": "mean truncated watch time of those rows, s (null when `rows` = 0)",
        "wt_std_s": "their sample standard deviation, s (null when `rows` < 2)",
        "noise_wt_s": "w⁻: mean of the low-mean GMM component, s (null when not fitted, see `fit_status`)",
        "interest_wt_s": "w⁺: mean of the high-mean GMM component, s (null when not fitted)",
        "noise_wt_smoothed_s": "w⁻ after the frequency-weighted moving average over 2T-1 durations (or borrowed), s; never null",
        "interest_wt_smoothed_s": "w⁺ smoothed (or borrowed), s; never null, ≥ `noise_wt_smoothed_s`",
        "d2q_bin": "the equal-frequency D2Q duration bin of this duration (0-based)",
        "fit_start": "first UTC day of the fit window (inclusive)",
        "fit_end": "end of the fit window, a UTC day (exclusive)",
        "fit_status": "`fitted`, `too_few_rows` (< `labels.min_rows`), `single_value` (every row the same w: degenerate mixture) or `no_rows`",
        "is_interpolated": "the smoothed w⁻/w⁺ were borrowed from fitted neighbours (linear in seconds), not fitted here",
        "long_view_cwm_threshold_s": "CWM's long-view threshold τ: the `labels.long_view_cwm_quantile` quantile of w over the fit window, s (same on every row)",
    },
    expectations=(
        between("duration_s", 0),
        between("rows", 0),
        between("wt_mean_s", 0),
        between("wt_std_s", 0),
        ordered("noise_wt_smoothed_s", "interest_wt_smoothed_s"),
        between("d2q_bin", 0),
        ordered("fit_start", "fit_end", strict=True),
        one_of("fit_status", ("fitted", "too_few_rows", "single_value", "no_rows")),
        between("long_view_cwm_threshold_s", 0),
    ),
    key=("duration_s",),
    description="One row per duration second of the configured range: watch-time statistics and D²Co GMM fits on the training window.",
    invariants=(
        "one row per duration second in [duration_min_s, duration_max_s]",
        "rows counts only events dated in [fit_start, fit_end)",
        "noise_wt_smoothed_s <= interest_wt_smoothed_s, both finite",
    ),
)

WATCH_TIME_LABELS = TableContract(
    name="watch_time_labels",
    schema=pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("event_ts", TS_TYPE, nullable=False),
            pa.field("event_date", pa.date32(), nullable=False),
            pa.field("duration_s", pa.int64(), nullable=False),
            pa.field("watch_time_s", pa.int64(), nullable=False),
            pa.field("play_time_ms", pa.int64(), nullable=False),
            pa.field("is_complete", pa.bool_(), nullable=False),
            pa.field("is_in_fit_window", pa.bool_(), nullable=False),
            pa.field("pcr", pa.float64(), nullable=False),
            pa.field("wtg_gain", pa.float64(), nullable=False),
            pa.field("wtg", pa.float64(), nullable=False),
            pa.field("d2q_bin", pa.int32(), nullable=False),
            pa.field("d2q", pa.float64(), nullable=False),
            pa.field("d2q_dense", pa.float64(), nullable=False),
            pa.field("d2co", pa.float64(), nullable=False),
            pa.field("cwm_target", pa.float64(), nullable=False),
            pa.field("is_censored", pa.bool_(), nullable=False),
            pa.field("is_long_view_d2co", pa.bool_(), nullable=False),
            pa.field("is_long_view_cwm", pa.bool_(), nullable=False),
        ]
    ),
    column_docs={
        "event_id": "the event (as in `events`)",
        "user_id": "the event's user (as in `events`)",
        "item_id": "the event's item (as in `events`)",
        "event_ts": "the event's time, UTC (as in `events`)",
        "event_date": "UTC date of `event_ts` (the partition)",
        "duration_s": "`duration_ms` / 1000 rounded half to even, s",
        "watch_time_s": "`min(play_time_ms, duration_ms)` / 1000 rounded half to even, s (0 ≤ w ≤ d)",
        "play_time_ms": "untruncated play time from `events`, ms (replays exceed the duration)",
        "is_complete": "`play_time_ms >= duration_ms` (the play really reached the end)",
        "is_in_fit_window": "`event_date` in `[fit_start, fit_end)`: a training row of the stats",
        "pcr": "play completion rate w/d, in [0, 1]",
        "wtg_gain": "WTG z-score (w − mean_d)/std_d with the training mean/std of the duration; 0 where std is missing or 0",
        "wtg": "Φ(`wtg_gain`), the standard-normal CDF, in [0, 1]",
        "d2q_bin": "the row's D2Q duration bin (as in `duration_stats`)",
        "d2q": "D2Q, average-rank variant: percentile of w among the training rows of the bin (scipy `percentileofscore`, kind `rank`), in [0, 1]",
        "d2q_dense": "D2Q, CWM's variant: distinct training values ≤ w / distinct values in the bin, in [0, 1]",
        "d2co": "D²Co label with `labels.alpha` (0: affine) from the smoothed w⁻/w⁺ of the duration, clipped to [0, 1]",
        "cwm_target": "CWM per-row target logit(clamp(exp(−c_inv/(w+1)), 1e-6, 1−1e-6)), within ±13.8156",
        "is_censored": "CWM's censoring: w ≥ d after rounding (a near-complete play can round into it)",
        "is_long_view_d2co": "D²Co relevance: (w ≥ d and d ≤ 18 s) or (w > 18 s and d > 18 s)",
        "is_long_view_cwm": "CWM relevance: (played to the end and d ≤ τ) or (w > τ and d > τ), τ from `duration_stats`; played to the end = round(play, s) ≥ d by default (official), or `play_time_ms ≥ duration_ms` with `labels.long_view_cwm_completion: raw_ms`",
    },
    expectations=(
        between("duration_s", 0),
        between("watch_time_s", 0),
        ordered("watch_time_s", "duration_s"),
        between("play_time_ms", 0),
        *(between(label, 0, 1) for label in UNIT_LABELS),
        between("d2q_bin", 0),
        # logit(1 - 1e-6) = 13.8155...: the clamp bounds the target
        between("cwm_target", -13.8156, 13.8156),
        utc_date_of("event_date", "event_ts"),
        row_count_band("version", severity=WARNING),
    ),
    key=("event_id",),
    partition_column="event_date",
    description="One row per event with a duration in range: truncated watch time and the PCR, WTG, D2Q, D²Co and CWM labels.",
    invariants=(
        "0 <= watch_time_s <= duration_s; pcr, wtg, d2q, d2q_dense, d2co in [0, 1]; no NaN or inf",
        "labels of rows in the fit window depend only on rows in the fit window",
    ),
)
