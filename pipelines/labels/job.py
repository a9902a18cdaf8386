"""Jobs: ``events`` -> ``duration_stats`` (fitted on the training window) -> ``watch_time_labels``.

Both tables are rebuilt whole and committed atomically. Each job returns a
:class:`pipelines.family.JobResult`: the manifest, the counts (rows kept and dropped, and every
fallback taken; also stored in the manifest's ``producer`` entry) and the figures' paths, which
the Dagster assets record as metadata.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from features.events import EVENTS
from features.labels.math import (
    FITTED,
    NO_ROWS,
    SINGLE_VALUE,
    TOO_FEW_ROWS,
    LabelParams,
    d2q_rank_table,
    finish_duration_stats,
    watch_percentile,
    wtg_grid,
)
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.labels.spark import duration_groups, label_rows, prepare_rows
from pipelines.family import JobContext, JobResult
from pipelines.labels.params import LabelSettings
from pipelines.warehouse import Warehouse


FIGURE_SAMPLE_ROWS = 200_000


def _producer(job: str, settings: LabelSettings, counts: dict[str, int]) -> dict[str, str]:
    return {
        "job": job,
        "settings": settings.model_dump_json(),
        "counts": json.dumps(counts, sort_keys=True),
    }


def compute_duration_stats(spark, events, settings: LabelSettings) -> tuple[pd.DataFrame, dict[str, int]]:
    """``duration_stats`` as pandas (one row per duration second) and its counts, from events."""
    params = settings.params()
    rows = prepare_rows(events, params, settings.fit_start, settings.fit_end)
    train = rows.where("is_in_fit_window")
    groups = duration_groups(train, params.min_rows).toPandas()
    if groups.empty:
        raise ValueError(
            f"no events with a duration in [{params.duration_min_s}, {params.duration_max_s}] s in the fit window "
            f"[{settings.fit_start}, {settings.fit_end})"
        )
    wc = train.groupBy("watch_time_s").count().toPandas()
    tau = watch_percentile(wc["watch_time_s"].to_numpy(), wc["count"].to_numpy(), params.long_view_cwm_quantile)
    stats = finish_duration_stats(groups, params, tau)
    stats["fit_start"] = settings.fit_start
    stats["fit_end"] = settings.fit_end
    status = stats["fit_status"].value_counts()
    counts = {
        "durations": len(stats),
        "training_rows": int(stats["rows"].sum()),
        "durations_fitted": int(status.get(FITTED, 0)),
        "durations_too_few_rows": int(status.get(TOO_FEW_ROWS, 0)),
        "durations_single_value": int(status.get(SINGLE_VALUE, 0)),
        "durations_without_training_rows": int(status.get(NO_ROWS, 0)),
        "durations_interpolated": int(stats["is_interpolated"].sum()),
        "d2q_bins": int(stats["d2q_bin"].max()) + 1,
        "d2q_bins_requested": params.d2q_bins,
    }
    return stats, counts


def build_duration_stats(spark, warehouse: Warehouse, settings: LabelSettings, reports: str | None = None) -> JobResult:
    """Fit ``duration_stats`` on the committed events of the fit window and commit it.

    With ``reports`` (a local folder) also writes ``labels/gmm_fits.png`` there.
    """
    import pyarrow as pa

    events = warehouse.read_spark(spark, EVENTS.name)
    stats, counts = compute_duration_stats(spark, events, settings)
    table = pa.Table.from_pandas(stats, preserve_index=False)
    manifest = warehouse.write_arrow(DURATION_STATS, table, producer=_producer("build_duration_stats", settings, counts))
    figures = {}
    if reports:
        from pipelines.labels.figures import figure_dir, gmm_figure

        figures["gmm_fits"] = gmm_figure(stats, os.path.join(figure_dir(reports), "gmm_fits.png"))
    return JobResult({manifest.table: manifest}, {manifest.table: counts}, {manifest.table: figures})


def rank_table_for(spark, rows, stats_sdf, params: LabelParams) -> pd.DataFrame:
    """The D2Q rank table (label_math.d2q_rank_table) from the training rows and the stats' bins."""
    from pyspark.sql import functions as F

    agg = (
        rows.where("is_in_fit_window")
        .join(F.broadcast(stats_sdf.select("duration_s", "d2q_bin")), on="duration_s")
        .groupBy("d2q_bin", "watch_time_s")
        .count()
        .toPandas()
    )
    return d2q_rank_table(agg["d2q_bin"], agg["watch_time_s"], agg["count"], max_w=params.duration_max_s)


def compute_labels(spark, events, stats: pd.DataFrame, settings: LabelSettings):
    """Spark DataFrame of ``watch_time_labels`` and the prepared rows it was computed from."""
    import pyarrow as pa

    params = settings.params()
    rows = prepare_rows(events, params, settings.fit_start, settings.fit_end)
    stats_sdf = spark.createDataFrame(pa.Table.from_pandas(stats, preserve_index=False).to_pandas())
    table = rank_table_for(spark, rows, stats_sdf, params)
    rank_sdf = spark.createDataFrame(table)
    wtg_sdf = spark.createDataFrame(wtg_grid(stats))
    return label_rows(rows, stats_sdf, rank_sdf, wtg_sdf, params), rows


def _fallback_counts(spark, events, rows, labels, stats: pd.DataFrame, settings: LabelSettings) -> dict[str, int]:
    """One pass over events and one over the labels: rows kept/dropped and every fallback."""
    from pyspark.sql import functions as F

    params = settings.params()
    ev = events.agg(
        F.count(F.lit(1)).alias("events"),
        F.sum((F.col("duration_ms").isNull()).cast("long")).alias("events_without_duration"),
        F.sum((F.col("duration_ms") <= 0).cast("long")).alias("events_with_zero_duration"),
        F.sum(((F.col("duration_ms") > 0) & F.col("play_time_ms").isNull()).cast("long")).alias("events_without_play_time"),
    ).collect()[0].asDict()
    r = rows.agg(
        F.count(F.lit(1)).alias("kept"),
        F.sum((F.col("play_time_ms") > F.col("duration_ms")).cast("long")).alias("beyond"),
    ).collect()[0]
    kept = int(r["kept"])
    no_std = stats.loc[~(stats["wt_std_s"].fillna(0) > 0), "duration_s"].tolist() or [-1]
    gap = (stats["interest_wt_smoothed_s"] - stats["noise_wt_smoothed_s"]) < params.min_gap_s
    gap_d = stats.loc[gap, "duration_s"].tolist() or [-1]
    interp = stats.loc[stats["is_interpolated"], "duration_s"].tolist() or [-1]
    # w below which exp(-c/(w+1)) < 1e-6 (the CWM clamp): w + 1 < c / ln(1e6)
    clamp_w = params.cwm_c_inv / np.log(1e6) - 1.0
    lab = labels.agg(
        F.count(F.lit(1)).alias("label_rows"),
        F.sum(F.col("is_in_fit_window").cast("long")).alias("label_rows_in_fit_window"),
        F.sum(F.col("duration_s").isin(no_std).cast("long")).alias("rows_wtg_gain_zero_fallback"),
        F.sum(F.col("duration_s").isin(gap_d).cast("long")).alias("rows_d2co_min_gap_guard"),
        F.sum(F.col("duration_s").isin(interp).cast("long")).alias("rows_d2co_interpolated_fit"),
        F.sum((F.col("watch_time_s") < F.lit(clamp_w)).cast("long")).alias("rows_cwm_target_clamped"),
        F.sum(F.col("is_censored").cast("long")).alias("rows_censored"),
    ).collect()[0].asDict()
    counts = {k: int(v or 0) for k, v in {**ev, **lab}.items()}
    counts["events_out_of_duration_range"] = (
        counts["events"] - counts["events_without_duration"] - counts["events_with_zero_duration"]
        - counts["events_without_play_time"] - kept
    )
    counts["rows_dropped_min_rows_policy"] = kept - counts["label_rows"]
    counts["rows_play_beyond_duration_truncated"] = int(r["beyond"] or 0)
    return counts


def build_watch_time_labels(spark, warehouse: Warehouse, settings: LabelSettings, reports: str | None = None) -> JobResult:
    """Label every event with a duration in range, from the committed ``duration_stats``.

    Fails when the committed stats were fitted on another window or duration range than
    ``settings`` (re-materialize ``duration_stats`` first).
    """
    events = warehouse.read_spark(spark, EVENTS.name)
    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    if stats.empty:
        raise ValueError("duration_stats is empty: materialize it first")
    fs, fe = stats["fit_start"].iloc[0], stats["fit_end"].iloc[0]
    if (fs, fe) != (settings.fit_start, settings.fit_end):
        raise ValueError(f"duration_stats was fitted on [{fs}, {fe}), the settings say [{settings.fit_start}, {settings.fit_end}): rebuild it")
    want = list(range(settings.duration_min_s, settings.duration_max_s + 1))
    if stats["duration_s"].tolist() != want:
        raise ValueError("duration_stats covers another duration range than the settings: rebuild it")
    labels, rows = compute_labels(spark, events, stats, settings)
    labels = labels.cache()
    try:
        counts = _fallback_counts(spark, events, rows, labels, stats, settings)
        manifest = warehouse.write_spark(
            labels.select(*WATCH_TIME_LABELS.columns),
            WATCH_TIME_LABELS,
            producer=_producer("build_watch_time_labels", settings, counts),
        )
        figures = {}
        if reports and counts["label_rows"]:
            figures = _label_figures(labels, counts["label_rows"], reports)
    finally:
        labels.unpersist()
    return JobResult({manifest.table: manifest}, {manifest.table: counts}, {manifest.table: figures})


def _label_figures(labels, n: int, reports: str) -> dict[str, str]:
    from pipelines.labels.figures import distributions_figure, figure_dir, watch_time_figure

    cols = ["duration_s", "watch_time_s", "pcr", "wtg", "d2q", "d2co"]
    frac = min(1.0, FIGURE_SAMPLE_ROWS / n)
    sample = labels.select(*cols).sample(fraction=frac, seed=61).toPandas() if frac < 1 else labels.select(*cols).toPandas()
    out = figure_dir(reports)
    return {
        "watch_time_by_duration": watch_time_figure(sample, os.path.join(out, "watch_time_by_duration.png")),
        "label_distributions": distributions_figure(sample, os.path.join(out, "label_distributions.png")),
    }


def run_duration_stats(ctx: JobContext) -> JobResult:
    """Step ``duration_stats``: fit on the training window (figures under the reports root)."""
    result = build_duration_stats(ctx.spark, ctx.warehouse, ctx.params, reports=ctx.reports_root())
    result.stats[DURATION_STATS.name]["fit_window"] = f"[{ctx.params.fit_start}, {ctx.params.fit_end})"
    return result


def run_watch_time_labels(ctx: JobContext) -> JobResult:
    """Step ``watch_time_labels``: label every event from the committed stats."""
    return build_watch_time_labels(ctx.spark, ctx.warehouse, ctx.params, reports=ctx.reports_root())
