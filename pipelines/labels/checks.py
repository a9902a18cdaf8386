"""Invariant counters of the labels family: ``duration_stats`` and ``watch_time_labels``.

Each returns ``{violation: count}`` (all zero when the table is correct); docs/labels.md.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.events import EVENTS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.labels.names import UNIT_LABELS
from features.labels.spark import prepare_rows
from pipelines.labels.params import LabelSettings
from pipelines.quality.frames import count_true
from pipelines.warehouse import Warehouse


def check_duration_stats(spark, warehouse: Warehouse, settings: LabelSettings) -> dict[str, int]:
    """Violations of ``duration_stats``' invariants (all zero when correct), plus ``rows``.

    ``rows_outside_fit_window``: |sum(rows) - events of the fit window with a duration in range|,
    recounted from ``events``; the stats must count training rows and nothing else.
    """
    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    events = warehouse.read_spark(spark, EVENTS.name)
    train = prepare_rows(events, settings.params(), settings.fit_start, settings.fit_end).where("is_in_fit_window").count()
    return _stats_counts(stats, int(train), settings)


def _stats_counts(stats, train: int, settings: LabelSettings) -> dict[str, int]:
    """The ``duration_stats`` counts, given the table (pandas) and the recounted training rows."""
    sm = stats[["noise_wt_smoothed_s", "interest_wt_smoothed_s"]].to_numpy(float)
    want = set(range(settings.duration_min_s, settings.duration_max_s + 1))
    return {
        "rows": len(stats),
        "rows_outside_fit_window": abs(int(stats["rows"].sum()) - train),
        "fit_window_differs_from_settings": int(
            ((stats["fit_start"] != settings.fit_start) | (stats["fit_end"] != settings.fit_end)).sum()
        ),
        "missing_or_extra_durations": len(want.symmetric_difference(stats["duration_s"])),
        "smoothed_not_finite": int((~np.isfinite(sm)).any(axis=1).sum()),
        "noise_above_interest": int((sm[:, 0] > sm[:, 1] + 1e-9).sum()),
        "negative_d2q_bin": int((stats["d2q_bin"] < 0).sum()),
    }


def check_watch_time_labels(spark, warehouse: Warehouse, settings: LabelSettings) -> dict[str, int]:
    """Violations of ``watch_time_labels``' invariants (all zero when correct), plus ``rows``."""
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, WATCH_TIME_LABELS.name)
    dbl = ["pcr", "wtg_gain", "wtg", "d2q", "d2q_dense", "d2co", "cwm_target"]
    bad_num = None
    for c in dbl:
        e = F.col(c).isNull() | F.isnan(c) | (F.abs(F.col(c)) == float("inf"))
        bad_num = e if bad_num is None else (bad_num | e)
    out_of_unit = None
    for c in UNIT_LABELS:
        e = (F.col(c) < 0) | (F.col(c) > 1)
        out_of_unit = e if out_of_unit is None else (out_of_unit | e)
    nulls = None
    for c in WATCH_TIME_LABELS.columns:
        e = F.col(c).isNull()
        nulls = e if nulls is None else (nulls | e)
    window = (F.col("event_date") >= F.lit(settings.fit_start)) & (F.col("event_date") < F.lit(settings.fit_end))
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(nulls.cast("long")).alias("rows_with_nulls"),
        F.sum(bad_num.cast("long")).alias("labels_nan_or_inf"),
        F.sum(out_of_unit.cast("long")).alias("labels_outside_0_1"),
        F.sum(((F.col("watch_time_s") < 0) | (F.col("watch_time_s") > F.col("duration_s"))).cast("long")).alias("watch_time_outside_0_duration"),
        F.sum(((F.col("duration_s") < settings.duration_min_s) | (F.col("duration_s") > settings.duration_max_s)).cast("long")).alias("duration_outside_range"),
        F.sum((F.col("is_in_fit_window") != window).cast("long")).alias("fit_window_flag_wrong"),
        F.sum((F.col("is_censored") != (F.col("watch_time_s") >= F.col("duration_s"))).cast("long")).alias("censored_flag_wrong"),
        (F.count(F.lit(1)) - F.countDistinct("event_id")).alias("duplicate_event_ids"),
    ).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}


# ---- the same counters on Arrow, in this process (tables up to quality.pandas_max_rows rows) ----
def check_duration_stats_arrow(warehouse: Warehouse, settings: LabelSettings) -> dict[str, int]:
    """:func:`check_duration_stats` without Spark: the training rows recounted from ``events``
    with NumPy (the selection and rounding of :func:`features.labels.spark.prepare_rows`,
    written again, so that the check stays independent of the job's Arrow kernel)."""
    import pyarrow.compute as pc

    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    ev = warehouse.read_arrow(EVENTS.name, columns=["event_date", "duration_ms", "play_time_ms"])
    dur = ev.column("duration_ms")
    kept = pc.and_(pc.and_(pc.is_valid(dur), pc.fill_null(pc.greater(dur, 0), False)), pc.is_valid(ev.column("play_time_ms")))
    ms = pc.filter(dur, kept).to_numpy(zero_copy_only=False).astype(np.int64)
    days = pc.filter(ev.column("event_date"), kept)
    q, r = np.divmod(ms, 1000)  # ms > 0: floor division is Spark's pmod arithmetic
    seconds = q + ((r > 500) | ((r == 500) & (q % 2 == 1)))
    in_range = (seconds >= settings.duration_min_s) & (seconds <= settings.duration_max_s)
    lo, hi = pa.scalar(settings.fit_start, days.type), pa.scalar(settings.fit_end, days.type)
    in_fit = pc.fill_null(pc.and_kleene(pc.greater_equal(days, lo), pc.less(days, hi)), False).to_numpy(zero_copy_only=False)
    return _stats_counts(stats, int(np.count_nonzero(in_range & in_fit)), settings)


def check_watch_time_labels_arrow(warehouse: Warehouse, settings: LabelSettings) -> dict[str, int]:
    """:func:`check_watch_time_labels` without Spark, with Spark SQL's rules: a comparison with
    null is null and does not count; NaN is larger than every number (so ``NaN > 1`` holds);
    ``countDistinct`` skips nulls."""
    import pyarrow.compute as pc

    t = warehouse.read_arrow(WATCH_TIME_LABELS.name, columns=list(WATCH_TIME_LABELS.columns))
    col = t.column

    def greater(c, value):  # Spark: NaN > x for every x
        out = pc.greater(c, value)
        return pc.or_kleene(out, pc.is_nan(c)) if pa.types.is_floating(c.type) else out

    def any_of(masks):
        out = None
        for m in masks:
            out = m if out is None else pc.or_kleene(out, m)
        return out

    dbl = ["pcr", "wtg_gain", "wtg", "d2q", "d2q_dense", "d2co", "cwm_target"]
    bad_num = any_of(pc.or_(pc.is_null(col(c)), pc.fill_null(pc.or_(pc.is_nan(col(c)), pc.is_inf(col(c))), False)) for c in dbl)
    out_of_unit = any_of(pc.or_kleene(pc.less(col(c), 0), greater(col(c), 1)) for c in UNIT_LABELS)
    nulls = any_of(pc.is_null(col(c)) for c in WATCH_TIME_LABELS.columns)
    day = col("event_date")
    window = pc.and_kleene(pc.greater_equal(day, pa.scalar(settings.fit_start, day.type)),
                           pc.less(day, pa.scalar(settings.fit_end, day.type)))
    watch, duration = col("watch_time_s"), col("duration_s")
    distinct = pc.count_distinct(col("event_id"), mode="only_valid").as_py() if t.num_rows else 0
    return {
        "rows": t.num_rows,
        "rows_with_nulls": count_true(nulls),
        "labels_nan_or_inf": count_true(bad_num),
        "labels_outside_0_1": count_true(out_of_unit),
        "watch_time_outside_0_duration": count_true(pc.or_kleene(pc.less(watch, 0), greater(watch, duration))),
        "duration_outside_range": count_true(pc.or_kleene(pc.less(duration, settings.duration_min_s),
                                                     greater(duration, settings.duration_max_s))),
        "fit_window_flag_wrong": count_true(pc.not_equal(col("is_in_fit_window"), window)),
        "censored_flag_wrong": count_true(pc.not_equal(col("is_censored"), pc.greater_equal(watch, duration))),
        "duplicate_event_ids": t.num_rows - distinct,
    }

