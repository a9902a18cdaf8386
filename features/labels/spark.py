"""The labelled population of ``events`` as Spark columns, for the invariant checks of the labels
family (docs/labels.md).

The jobs themselves compute in Arrow inside Spark tasks (:mod:`features.labels.arrow_path`);
:func:`prepare_rows` is the same selection and rounding as a DataFrame, so a check recounts
the training rows independently of the job. Pure DataFrame-to-DataFrame functions; no I/O.
"""
from __future__ import annotations

import datetime as dt

from features.labels.math import LabelParams


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
