"""Jobs: ``events`` -> ``duration_stats`` (fitted on the training window) -> ``watch_time_labels``.

Both jobs read ``events`` in Spark tasks straight into Arrow (pyarrow on the committed files)
and compute with :mod:`features.labels.arrow_path`: ``duration_stats`` makes one pass over the
fit window (the training histogram) and fits the GMMs from it in parallel tasks;
``watch_time_labels`` makes the same small pass for the D2Q ranks, then one pass over every
event that labels, writes (``Warehouse.write_from_spark_arrow``) and counts (docs/labels.md,
"How the jobs run").

Both tables are rebuilt whole and committed atomically. Each job returns a
:class:`pipelines.family.JobResult`: the manifest, the counts (rows kept and dropped, and every
fallback taken; also stored in the manifest's ``producer`` entry) and the figures' paths, which
the Dagster assets record as metadata.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.events import EVENTS
from features.labels.arrow_path import (
    BATCH_COUNTS,
    FIT_INPUT_COLUMNS,
    LABEL_INPUT_COLUMNS,
    Histogram,
    LabelGrid,
    d2q_grids,
    groups_of,
    label_batch,
    tau_of,
    training_histogram,
)
from features.labels.math import STATS_GROUP_COLUMNS, FITTED, NO_ROWS, SINGLE_VALUE, TOO_FEW_ROWS, LabelParams, finish_duration_stats
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from pipelines.family import JobContext, JobResult
from pipelines.labels.params import LabelSettings
from pipelines.warehouse import SIDE_OUTPUT, Warehouse


FIGURE_SAMPLE_ROWS = 200_000
#: Rows per Arrow batch a task reads from an events file (bounds a task's memory).
BATCH_ROWS = 262_144


def _producer(job: str, settings: LabelSettings, counts: dict[str, int]) -> dict[str, str]:
    return {
        "job": job,
        "settings": settings.model_dump_json(),
        "counts": json.dumps(counts, sort_keys=True),
    }


# ---- reading events in Spark tasks -----------------------------------------------------------
def _event_files(warehouse: Warehouse, fit_window: tuple[dt.date, dt.date] | None = None,
                 version: int | None = None) -> list[str]:
    """The data files of ``events`` at ``version`` (default: the current one); with ``fit_window``
    only the partitions (UTC days) inside ``[start, end)`` (the rows are filtered by
    ``event_date`` again)."""
    manifest = warehouse.manifest(EVENTS.name, version)
    parts = None
    if fit_window is not None:
        parts = [k for k in manifest.partitions if _day_in(k, *fit_window)]
    return manifest.file_paths(warehouse.root, parts)


def _day_in(partition: str, start: dt.date, end: dt.date) -> bool:
    try:
        day = dt.date.fromisoformat(partition.split("=")[-1])
    except ValueError:
        return True  # not a day: read it, the row filter decides
    return start <= day < end


def _file_frame(spark, files: list[str]):
    """A DataFrame of one row per task, ``files``: the event files that task reads, dealt round
    robin to as many tasks as the session has cores. A local relation: its rows reach the tasks
    without a Python stage of their own (a DataFrame made from a Python RDD costs one more)."""
    n = max(1, min(len(files), spark.sparkContext.defaultParallelism))
    groups = [(files[i::n],) for i in range(n)] if files else []
    return spark.createDataFrame(groups, "files array<string>")


def _batches(fs, files, columns):
    import pyarrow.parquet as pq

    for f in files:
        yield from pq.ParquetFile(f, filesystem=fs).iter_batches(batch_size=BATCH_ROWS, columns=list(columns))


def training_histogram_of(spark, warehouse: Warehouse, settings: LabelSettings, version: int | None = None) -> Histogram:
    """The training histogram (:func:`features.labels.arrow_path.training_histogram`) of the
    committed events (at ``version``, default the current one) of the fit window: one Spark task
    per group of files, each reading only the fit window's partitions and the three columns it
    needs, straight into Arrow."""
    params = settings.params()
    width = params.duration_max_s + 1
    files = _event_files(warehouse, (settings.fit_start, settings.fit_end), version)
    if not files:
        return Histogram.merge([], width)
    fs, start, end = warehouse.fs, settings.fit_start, settings.fit_end

    def task(batches):
        for b in batches:
            parts = [training_histogram(rb, params, start, end)
                     for group in b.column("files").to_pylist() for rb in _batches(fs, group, FIT_INPUT_COLUMNS)]
            h = Histogram.merge(parts, width)
            yield pa.RecordBatch.from_pydict({"cells": [h.cells.tobytes()], "counts": [h.counts.tobytes()]})

    rows = _file_frame(spark, files).mapInArrow(task, "cells binary, counts binary").collect()
    return Histogram.merge(
        [Histogram(np.frombuffer(bytes(r["cells"]), np.int64), np.frombuffer(bytes(r["counts"]), np.int64), width)
         for r in rows],
        width,
    )


def _fit_groups(spark, hist: Histogram, params: LabelParams) -> pd.DataFrame:
    """The per-duration groups (GMM fits, mean, std) of the histogram, fitted in parallel Spark
    tasks: durations dealt to tasks by training rows, largest first (the fit time grows with them)."""
    rows = hist.rows_by_duration(len(params.durations))
    order = [int(i) for i in np.argsort(-rows, kind="stable") if rows[i] > 0]
    sc = spark.sparkContext
    n = max(1, min(len(order), sc.defaultParallelism))
    load, chunks = [0] * n, [[] for _ in range(n)]
    for i in order:
        k = load.index(min(load))
        chunks[k].append(i)
        load[k] += int(rows[i])

    def fit(chunk):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # the tasks are the parallelism: one thread each, no oversubscription
            return groups_of(hist, params, chunk).to_dict("records")

    out = sc.parallelize(chunks, n).map(fit).collect() if order else []
    groups = pd.DataFrame([r for chunk in out for r in chunk], columns=list(STATS_GROUP_COLUMNS))
    return groups.sort_values("duration_s", kind="stable").reset_index(drop=True)


# ---- duration_stats ------------------------------------------------------------------------
def stats_from_histogram(spark, hist: Histogram, settings: LabelSettings) -> tuple[pd.DataFrame, dict[str, int]]:
    """``duration_stats`` as pandas (one row per duration second) and its counts, from the
    training histogram."""
    params = settings.params()
    groups = _fit_groups(spark, hist, params)
    if groups.empty:
        raise ValueError(
            f"no events with a duration in [{params.duration_min_s}, {params.duration_max_s}] s in the fit window "
            f"[{settings.fit_start}, {settings.fit_end})"
        )
    stats = finish_duration_stats(groups, params, tau_of(hist, params.long_view_cwm_quantile))
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


def compute_duration_stats(spark, warehouse: Warehouse, settings: LabelSettings) -> tuple[pd.DataFrame, dict[str, int]]:
    """``duration_stats`` as pandas and its counts, from the committed events of the fit window
    (one pass: the training histogram; then the fits, in parallel, from it)."""
    return stats_from_histogram(spark, training_histogram_of(spark, warehouse, settings), settings)


def build_duration_stats(spark, warehouse: Warehouse, settings: LabelSettings, reports: str | None = None) -> JobResult:
    """Fit ``duration_stats`` on the committed events of the fit window and commit it.

    With ``reports`` (a local folder) also writes ``labels/gmm_fits.png`` there.
    """
    stats, counts = compute_duration_stats(spark, warehouse, settings)
    table = pa.Table.from_pandas(stats, preserve_index=False)
    manifest = warehouse.write_arrow(DURATION_STATS, table, producer=_producer("build_duration_stats", settings, counts))
    figures = {}
    if reports:
        from pipelines.labels.figures import figure_dir, gmm_figure

        figures["gmm_fits"] = gmm_figure(stats, os.path.join(figure_dir(reports), "gmm_fits.png"))
    return JobResult({manifest.table: manifest}, {manifest.table: counts}, {manifest.table: figures})


# ---- watch_time_labels ---------------------------------------------------------------------
def label_grid(stats: pd.DataFrame, hist: Histogram, params: LabelParams) -> LabelGrid:
    """The per-(duration, watch second) labels from ``duration_stats`` and the training histogram
    (the D2Q ranks are the training rows of each bin)."""
    n_bins = int(stats["d2q_bin"].max()) + 1
    d2q, dense = d2q_grids(hist, stats["d2q_bin"].to_numpy(np.int64), n_bins)
    return LabelGrid.build(stats, d2q, dense, params)


def finish_counts(raw: dict[str, int]) -> dict[str, int]:
    """The job's counts (rows kept and dropped, every fallback) from the summed batch counts."""
    counts = {k: int(raw.get(k, 0)) for k in BATCH_COUNTS if k not in ("kept", "beyond")}
    kept = int(raw.get("kept", 0))
    counts["events_out_of_duration_range"] = (
        counts["events"] - counts["events_without_duration"] - counts["events_with_zero_duration"]
        - counts["events_without_play_time"] - kept
    )
    counts["rows_dropped_min_rows_policy"] = kept - counts["label_rows"]
    counts["rows_play_beyond_duration_truncated"] = int(raw.get("beyond", 0))
    return counts


def build_watch_time_labels(spark, warehouse: Warehouse, settings: LabelSettings, reports: str | None = None) -> JobResult:
    """Label every event with a duration in range, from the committed ``duration_stats``.

    One pass over the fit window's partitions (three columns) gives the training histogram the
    D2Q ranks need; one pass over every event file labels the rows in Spark tasks, in Arrow, and
    writes them from the tasks (``write_from_spark_arrow``), counting every fallback on the way.
    Fails when the committed stats were fitted on another window or duration range than
    ``settings`` (re-materialize ``duration_stats`` first).
    """
    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    if stats.empty:
        raise ValueError("duration_stats is empty: materialize it first")
    fs, fe = stats["fit_start"].iloc[0], stats["fit_end"].iloc[0]
    if (fs, fe) != (settings.fit_start, settings.fit_end):
        raise ValueError(f"duration_stats was fitted on [{fs}, {fe}), the settings say [{settings.fit_start}, {settings.fit_end}): rebuild it")
    want = list(range(settings.duration_min_s, settings.duration_max_s + 1))
    if stats["duration_s"].tolist() != want:
        raise ValueError("duration_stats covers another duration range than the settings: rebuild it")
    params = settings.params()
    version = warehouse.current_version(EVENTS.name)  # both passes read the same events
    grid = label_grid(stats, training_histogram_of(spark, warehouse, settings, version), params)
    files = _event_files(warehouse, version=version)
    wfs, start, end = warehouse.fs, settings.fit_start, settings.fit_end

    def kernel(batches):
        total = dict.fromkeys(BATCH_COUNTS, 0)
        for b in batches:
            for group in b.column("files").to_pylist():
                for rb in _batches(wfs, group, LABEL_INPUT_COLUMNS):
                    table, c = label_batch(rb, grid, start, end)
                    for k, v in c.items():
                        total[k] += v
                    if table.num_rows:
                        yield WATCH_TIME_LABELS.name, table
        yield SIDE_OUTPUT, pa.table({k: pa.array([v], pa.int64()) for k, v in total.items()})

    counts: dict[str, int] = {}

    def gather(tables):
        raw = {k: sum(int(pc.sum(t.column(k)).as_py() or 0) for t in tables) for k in BATCH_COUNTS}
        counts.update(finish_counts(raw))
        return {"counts": json.dumps(counts, sort_keys=True)}

    producer = _producer("build_watch_time_labels", settings, {})
    del producer["counts"]  # the tasks' counts: ``gather`` sets it, before the commit
    manifests = warehouse.write_from_spark_arrow(
        _file_frame(spark, files), kernel, [WATCH_TIME_LABELS], producer=producer, side_output=gather
    )
    manifest = manifests[WATCH_TIME_LABELS.name]
    figures = {}
    if reports and counts["label_rows"]:
        figures = _label_figures(warehouse.read_spark(spark, WATCH_TIME_LABELS.name), counts["label_rows"], reports)
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
