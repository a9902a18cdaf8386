"""Invariant counters of the labels family: ``duration_stats`` and ``watch_time_labels``.

Each returns ``{violation: count}`` (all zero when the table is correct); docs/labels.md.
"""
from __future__ import annotations

import numpy as np

from features.events import EVENTS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.labels.names import UNIT_LABELS
from features.labels.spark import prepare_rows
from pipelines.labels.params import LabelSettings
from pipelines.warehouse import Warehouse


def check_duration_stats(spark, warehouse: Warehouse, settings: LabelSettings) -> dict[str, int]:
    """Violations of ``duration_stats``' invariants (all zero when correct), plus ``rows``.

    ``rows_outside_fit_window``: |sum(rows) - events of the fit window with a duration in range|,
    recounted from ``events``; the stats must count training rows and nothing else.
    """
    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    events = warehouse.read_spark(spark, EVENTS.name)
    train = prepare_rows(events, settings.params(), settings.fit_start, settings.fit_end).where("is_in_fit_window").count()
    sm = stats[["noise_wt_smoothed_s", "interest_wt_smoothed_s"]].to_numpy(float)
    want = set(range(settings.duration_min_s, settings.duration_max_s + 1))
    return {
        "rows": len(stats),
        "rows_outside_fit_window": abs(int(stats["rows"].sum()) - int(train)),
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
