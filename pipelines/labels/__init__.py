"""The labels family: ``duration_stats`` (fitted on the training window) and ``watch_time_labels``.

``params`` is the ``labels`` settings section, ``job`` the two steps, ``checks`` the invariant
counters, ``figures`` the report figures (docs/labels.md). :data:`FAMILY` is the catalog entry.
"""
from features.events import EVENTS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from pipelines.family import Family, Step
from pipelines.labels.checks import check_duration_stats, check_watch_time_labels
from pipelines.labels.job import (
    build_duration_stats,
    build_watch_time_labels,
    compute_duration_stats,
    run_duration_stats,
    run_watch_time_labels,
)
from pipelines.labels.params import LabelSettings

KINDS = frozenset({"spark", "sklearn", "delta"})

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
    invariants={
        DURATION_STATS.name: lambda ctx: check_duration_stats(ctx.spark, ctx.warehouse, ctx.params),
        WATCH_TIME_LABELS.name: lambda ctx: check_watch_time_labels(ctx.spark, ctx.warehouse, ctx.params),
    },
    docs="docs/labels.md",
)

__all__ = [
    "FAMILY", "LabelSettings", "build_duration_stats", "build_watch_time_labels", "check_duration_stats",
    "check_watch_time_labels", "compute_duration_stats", "run_duration_stats",
    "run_watch_time_labels",
]
