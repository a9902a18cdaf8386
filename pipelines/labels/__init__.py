"""The labels family: ``duration_stats`` (fitted on the training window) and ``watch_time_labels``.

``params`` is the ``labels`` settings section, ``job`` the two steps, ``checks`` the invariant
counters, ``figures`` the report figures (docs/labels.md). :data:`FAMILY` is the catalog entry.
"""
from features.events import EVENTS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from pipelines.family import Family, JobContext, Step
from pipelines.labels.checks import (
    check_duration_stats,
    check_duration_stats_arrow,
    check_watch_time_labels,
    check_watch_time_labels_arrow,
)
from pipelines.labels.job import (
    build_duration_stats,
    build_watch_time_labels,
    compute_duration_stats,
    run_duration_stats,
    run_watch_time_labels,
)
from pipelines.labels.params import LabelSettings

KINDS = frozenset({"spark", "sklearn", "delta"})


# Each counter runs where the check validates: on Arrow in the process, or on Spark
# (quality.engine, quality.pandas_max_rows; docs/labels.md). The stats' counter scans events.
def _duration_stats_invariants(ctx: JobContext) -> dict[str, int]:
    if ctx.settings.quality.in_process(ctx.warehouse.manifest(EVENTS.name).row_count):
        return check_duration_stats_arrow(ctx.warehouse, ctx.params)
    return check_duration_stats(ctx.spark, ctx.warehouse, ctx.params)


def _labels_invariants(ctx: JobContext) -> dict[str, int]:
    if ctx.settings.quality.in_process(ctx.warehouse.manifest(WATCH_TIME_LABELS.name).row_count):
        return check_watch_time_labels_arrow(ctx.warehouse, ctx.params)
    return check_watch_time_labels(ctx.spark, ctx.warehouse, ctx.params)


FAMILY = Family(
    name="labels",
    description="debiased watch-time labels: D²Co and CWM, with PCR, WTG and D2Q baselines (docs/labels.md)",
    params=LabelSettings,
    steps=(
        Step(
            name=DURATION_STATS.name,
            tables=(DURATION_STATS,),
            run=run_duration_stats,
            deps=(EVENTS.name,),
            kinds=KINDS,
            description="Per-duration watch-time statistics and GMM fits on the fit window.",
        ),
        Step(
            name=WATCH_TIME_LABELS.name,
            tables=(WATCH_TIME_LABELS,),
            run=run_watch_time_labels,
            deps=(EVENTS.name, DURATION_STATS.name),
            description="Every event with a duration in range, labelled from the committed statistics.",
        ),
    ),
    invariants={DURATION_STATS.name: _duration_stats_invariants, WATCH_TIME_LABELS.name: _labels_invariants},
    docs="docs/labels.md",
)

__all__ = [
    "FAMILY", "LabelSettings", "build_duration_stats", "build_watch_time_labels", "check_duration_stats",
    "check_duration_stats_arrow", "check_watch_time_labels", "check_watch_time_labels_arrow",
    "compute_duration_stats", "run_duration_stats", "run_watch_time_labels",
]
