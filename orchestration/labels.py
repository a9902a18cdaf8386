"""Dagster definitions of the labels family: ``duration_stats`` and ``watch_time_labels``
(docs/labels.md), each with a blocking invariant check. Asset bodies call one pipeline job."""

import dagster as dg

from features.events import EVENTS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from orchestration.commits import commit_conflicts, materialize_result, table_pool
from orchestration.extensions import Extension
from orchestration.metadata import invariant_check_result, table_metadata
from orchestration.resources import SettingsResource, SparkResource, WarehouseResource
from pipelines.settings import Settings

LABELS_GROUP = "labels"


def _reports(settings: Settings, wh) -> str:
    from pipelines.quality_suites import reports_root

    return reports_root(wh, settings.quality)


def _metadata(wh, result) -> dict:
    from pipelines.label_figures import as_markdown

    meta = table_metadata(wh, result.manifest)
    meta.update({k: int(v) for k, v in result.counts.items()})
    for name, path in result.figures.items():
        meta[f"figure_{name}"] = dg.MetadataValue.md(as_markdown(path))
        meta[f"figure_{name}_path"] = dg.MetadataValue.path(path)
    return meta




def build(settings: Settings) -> Extension:
    @dg.asset(
        name=DURATION_STATS.name,
        group_name=LABELS_GROUP,
        deps=[dg.AssetKey(EVENTS.name)],
        description=DURATION_STATS.description,
        kinds={"spark", "sklearn", "parquet"},
        pool=table_pool(DURATION_STATS.name),
    )
    def duration_stats(
        context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
    ) -> dg.MaterializeResult:
        from pipelines.labels import build_duration_stats

        s = settings.get()
        wh = warehouse.get()
        before = wh.current_version(DURATION_STATS.name)
        with commit_conflicts(context):
            result = build_duration_stats(spark.get_session(), wh, s.labels, reports=_reports(s, wh))
        meta = _metadata(wh, result)
        meta["fit_window"] = f"[{s.labels.fit_start}, {s.labels.fit_end})"
        return materialize_result(None, result.manifest, before, meta)

    @dg.asset(
        name=WATCH_TIME_LABELS.name,
        group_name=LABELS_GROUP,
        deps=[dg.AssetKey(EVENTS.name), dg.AssetKey(DURATION_STATS.name)],
        description=WATCH_TIME_LABELS.description,
        kinds={"spark", "parquet"},
        pool=table_pool(WATCH_TIME_LABELS.name),
    )
    def watch_time_labels(
        context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
    ) -> dg.MaterializeResult:
        from pipelines.labels import build_watch_time_labels

        s = settings.get()
        wh = warehouse.get()
        before = wh.current_version(WATCH_TIME_LABELS.name)
        with commit_conflicts(context):
            result = build_watch_time_labels(spark.get_session(), wh, s.labels, reports=_reports(s, wh))
        return materialize_result(None, result.manifest, before, _metadata(wh, result))

    @dg.asset_check(
        asset=DURATION_STATS.name,
        name="duration_stats_invariants",
        blocking=True,
        description="Fitted only on the training window (row counts recounted from events), window as configured, one row per duration, finite smoothed w⁻ <= w⁺.",
    )
    def duration_stats_check(settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource) -> dg.AssetCheckResult:
        from pipelines.labels import check_duration_stats

        return invariant_check_result(check_duration_stats(spark.get_session(), warehouse.get(), settings.get().labels))

    @dg.asset_check(
        asset=WATCH_TIME_LABELS.name,
        name="watch_time_labels_invariants",
        blocking=True,
        description="No nulls, no NaN/inf, labels in [0, 1], 0 <= watch_time_s <= duration_s, durations in range, flags consistent, unique event_id.",
    )
    def watch_time_labels_check(settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource) -> dg.AssetCheckResult:
        from pipelines.labels import check_watch_time_labels

        return invariant_check_result(check_watch_time_labels(spark.get_session(), warehouse.get(), settings.get().labels))

    return Extension(assets=[duration_stats, watch_time_labels], asset_checks=[duration_stats_check, watch_time_labels_check])
