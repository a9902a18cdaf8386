"""Debiased watch-time labels in Spark: the rows of ``duration_stats`` and ``watch_time_labels``
(their contracts are in :mod:`features.labels.contracts`; docs/labels.md).

The numbers are defined once, in NumPy, in :mod:`features.labels.math`; the Spark expressions
here compute the same values (tests/features/test_labels.py checks the two agree). The GMM
fits run per duration group in parallel (``groupBy(duration_s).applyInPandas``) with the same
scikit-learn call as the reference; the per-duration finishing (smoothing, fallbacks, D2Q bins)
runs on the driver over at most ``duration_max_s - duration_min_s + 1`` rows, with
:func:`features.labels.math.finish_duration_stats`.

Pure DataFrame-to-DataFrame functions; no I/O, no global session.
"""
from __future__ import annotations

import datetime as dt

from features.labels.math import (
    CWM_COMPLETION_RAW,
    CWM_COMPLETION_ROUNDED,
    CWM_COMPLETIONS,
    CWM_EPS,
    D2CO_AFFINE_BELOW,
    FITTED,
    LabelParams,
)



GROUP_SCHEMA = "duration_s long, rows long, wt_mean_s double, wt_std_s double, noise_wt_s double, interest_wt_s double, fit_status string"


def _round_s(col):
    """Spark: integer milliseconds to whole seconds, rounded half to even (exact integer arithmetic)."""
    from pyspark.sql import functions as F

    ms = col.cast("long")
    r = F.pmod(ms, F.lit(1000))
    q = ((ms - r) / 1000).cast("long")
    up = (r > 500) | ((r == 500) & (F.pmod(q, F.lit(2)) == 1))
    return q + up.cast("long")


def prepare_rows(events, params: LabelParams, fit_start: dt.date, fit_end: dt.date):
    """Spark: ``events`` -> the labelled population with seconds, completeness and fit-window flag.

    Kept: ``duration_ms`` > 0 and ``play_time_ms`` not null, duration second in
    ``[duration_min_s, duration_max_s]``. Watch time: ``min(max(play, 0), duration)`` in ms, then
    rounded half to even.
    """
    from pyspark.sql import functions as F

    dur = F.col("duration_ms")
    play = F.greatest(F.col("play_time_ms"), F.lit(0))
    rows = events.where(dur.isNotNull() & (dur > 0) & F.col("play_time_ms").isNotNull()).select(
        "event_id",
        "user_id",
        "item_id",
        "event_ts",
        "event_date",
        "duration_ms",
        F.col("play_time_ms").cast("long").alias("play_time_ms"),
        _round_s(dur).alias("duration_s"),
        _round_s(F.least(play, dur)).alias("watch_time_s"),
        (F.col("play_time_ms") >= dur).alias("is_complete"),
        ((F.col("event_date") >= F.lit(fit_start)) & (F.col("event_date") < F.lit(fit_end))).alias("is_in_fit_window"),
    )
    return rows.where((F.col("duration_s") >= params.duration_min_s) & (F.col("duration_s") <= params.duration_max_s))


def duration_groups(train_rows, min_rows: int = 3):
    """Spark: per duration of the training rows, count, mean, sample std and the GMM fit.

    One ``applyInPandas`` call per duration group, each running
    :func:`features.labels.math.fit_duration_gmm` (sorted input, official sklearn settings).
    """
    import numpy as np

    def fit(pdf):
        import math

        import pandas as pd

        from features.labels.math import fit_duration_gmm

        w = pdf["watch_time_s"].to_numpy(dtype=float)
        g = fit_duration_gmm(w, min_rows)
        std = float(np.std(w, ddof=1)) if len(w) > 1 else math.nan
        return pd.DataFrame(
            {
                "duration_s": [int(pdf["duration_s"].iloc[0])],
                "rows": [len(w)],
                "wt_mean_s": [float(np.mean(w))],
                "wt_std_s": [std],
                "noise_wt_s": [g.noise_wt_s],
                "interest_wt_s": [g.interest_wt_s],
                "fit_status": [g.status],
            }
        )

    return train_rows.select("duration_s", "watch_time_s").groupBy("duration_s").applyInPandas(fit, GROUP_SCHEMA)


def d2co_expr(w, p, q, alpha: float, min_gap_s: float):
    """Spark column: the D²Co label of :func:`features.labels.math.d2co` (same overflow-free form,
    guards and clip): w clipped to [q, p'], then e^{x-A}·expm1(-x)/expm1(-A) for α > 0 and
    expm1(x)/expm1(A) for α < 0, with x = α(w - q) and A = α(p' - q)."""
    from pyspark.sql import functions as F

    span = F.greatest(p - q, F.lit(float(min_gap_s)))
    affine = (w - q) / span
    if alpha == 0:
        r = affine
    else:
        a = F.lit(float(alpha))
        x = a * (F.least(F.greatest(w, q), q + span) - q)
        big_a = a * span
        if alpha > 0:
            r = F.exp(x - big_a) * F.expm1(-x) / F.expm1(-big_a)
        else:
            r = F.expm1(x) / F.expm1(big_a)
        r = F.when(F.abs(big_a) < F.lit(D2CO_AFFINE_BELOW), affine).otherwise(r)
    return F.least(F.greatest(r, F.lit(0.0)), F.lit(1.0))


def cwm_target_expr(w, c_inv: float):
    """Spark column: :func:`features.labels.math.cwm_target`."""
    from pyspark.sql import functions as F

    r = F.exp(F.lit(-float(c_inv)) / (w + F.lit(1.0)))
    r = F.least(F.greatest(r, F.lit(CWM_EPS)), F.lit(1.0 - CWM_EPS))
    return F.log(r) - F.log1p(-r)


def label_rows(rows, stats, rank_table, wtg_table, params: LabelParams):
    """Spark: prepared rows + ``duration_stats`` + the D2Q rank table
    (:func:`features.labels.math.d2q_rank_table`) + the Φ table
    (:func:`features.labels.math.wtg_grid`), all Spark DataFrames -> the ``watch_time_labels``
    columns. The small tables are broadcast."""
    from pyspark.sql import functions as F

    st = stats.select(
        "duration_s",
        F.col("wt_mean_s").alias("_mean"),
        F.col("wt_std_s").alias("_std"),
        F.col("noise_wt_smoothed_s").alias("_q"),
        F.col("interest_wt_smoothed_s").alias("_p"),
        F.col("d2q_bin").cast("int").alias("d2q_bin"),
        F.col("fit_status").alias("_status"),
        F.col("long_view_cwm_threshold_s").alias("_tau"),
    )
    df = rows.join(F.broadcast(st), on="duration_s", how="inner")
    if params.min_rows_policy == "drop":
        df = df.where(F.col("_status") == FITTED)
    rt = rank_table.select(
        F.col("d2q_bin").cast("int").alias("d2q_bin"),
        F.col("watch_time_s").cast("long").alias("watch_time_s"),
        F.col("d2q").alias("_d2q"),
        F.col("d2q_dense").alias("_d2q_dense"),
    )
    df = df.join(F.broadcast(rt), on=["d2q_bin", "watch_time_s"], how="left")
    wt = wtg_table.select(
        F.col("duration_s").cast("long").alias("duration_s"),
        F.col("watch_time_s").cast("long").alias("watch_time_s"),
        F.col("wtg").alias("_wtg"),
    )
    df = df.join(F.broadcast(wt), on=["duration_s", "watch_time_s"], how="left")
    w = F.col("watch_time_s").cast("double")
    d = F.col("duration_s").cast("double")
    std_ok = F.col("_std").isNotNull() & ~F.isnan("_std") & (F.col("_std") > 0) & F.col("_mean").isNotNull()
    gain = F.when(std_ok, (w - F.col("_mean")) / F.col("_std")).otherwise(F.lit(0.0))
    tau = F.col("_tau")
    t = float(params.long_view_d2co_s)
    if params.long_view_cwm_completion == CWM_COMPLETION_ROUNDED:  # the official code: seconds, half to even
        played_to_end = _round_s(F.col("play_time_ms")) >= F.col("duration_s")
    elif params.long_view_cwm_completion == CWM_COMPLETION_RAW:
        played_to_end = F.col("play_time_ms") >= F.col("duration_ms")
    else:
        raise ValueError(
            f"unknown long_view_cwm_completion {params.long_view_cwm_completion!r} (one of {CWM_COMPLETIONS})"
        )
    df = df.withColumn("wtg_gain", gain)
    return df.select(
        "event_id",
        "user_id",
        "item_id",
        "event_ts",
        "event_date",
        "duration_s",
        "watch_time_s",
        "play_time_ms",
        "is_complete",
        "is_in_fit_window",
        (w / d).alias("pcr"),
        "wtg_gain",
        F.coalesce(F.col("_wtg"), F.lit(0.5)).alias("wtg"),
        "d2q_bin",
        F.coalesce(F.col("_d2q"), F.lit(0.5)).alias("d2q"),
        F.coalesce(F.col("_d2q_dense"), F.lit(0.5)).alias("d2q_dense"),
        d2co_expr(w, F.col("_p"), F.col("_q"), params.alpha, params.min_gap_s).alias("d2co"),
        cwm_target_expr(w, params.cwm_c_inv).alias("cwm_target"),
        (w >= d).alias("is_censored"),
        (((w >= d) & (d <= t)) | ((w > t) & (d > t))).alias("is_long_view_d2co"),
        ((played_to_end & (d <= tau)) | ((w > tau) & (d > tau))).alias("is_long_view_cwm"),
    )
