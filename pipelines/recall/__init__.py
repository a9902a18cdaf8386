"""The recall family (RAR i2i): ``item_neighbors`` and each user's ``recall_items`` as of a cutoff.

``params`` is the ``recall`` settings section, ``job`` the two steps and the recall evaluation,
``checks`` the invariant counters (docs/lookalike.md). :data:`FAMILY` is the catalog entry.
"""
from features.events import EVENTS
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
from pipelines.family import Family, JobContext, Step
from pipelines.recall.checks import check_item_neighbors, check_item_neighbors_arrow, check_recall, check_recall_arrow
from pipelines.recall.job import (
    build_item_neighbors_table,
    build_recall_table,
    evaluate_recall,
    run_item_neighbors,
    run_recall_items,
)
from pipelines.recall.params import RecallSettings

def _in_process(ctx: JobContext, table: str, events: bool = False) -> bool:
    """Count where the check validates: on Arrow in the process for a table it validates there
    (``quality.pandas_max_rows``), on Spark above. ``events``: the counter also reads the events
    up to the cutoff, which must fit too."""
    from pipelines.cutoffs import events_in, partitions_before

    rows = ctx.warehouse.manifest(table).row_count
    if events:
        rows = max(rows, events_in(ctx.warehouse, partitions_before(ctx.warehouse, ctx.params.cutoff_ts)))
    return ctx.settings.quality.in_process(rows)


def _neighbors_invariants(ctx: JobContext) -> dict[str, int]:
    if _in_process(ctx, ITEM_NEIGHBORS.name):
        return check_item_neighbors_arrow(ctx.warehouse, ctx.params)
    return check_item_neighbors(ctx.spark, ctx.warehouse, ctx.params)


def _recall_invariants(ctx: JobContext) -> dict[str, int]:
    if _in_process(ctx, RECALL_ITEMS.name, events=True):
        return check_recall_arrow(ctx.warehouse, ctx.params)
    return check_recall(ctx.spark, ctx.warehouse, ctx.params)


FAMILY = Family(
    name="recall",
    description="RAR recall items: item-to-item neighbours and each user's recall pool as of a cutoff (docs/lookalike.md)",
    group="lookalike",
    params=RecallSettings,
    resolve=lambda section, settings: section.resolved(settings.lookalike),
    steps=(
        Step(
            name=ITEM_NEIGHBORS.name,
            tables=(ITEM_NEIGHBORS,),
            run=run_item_neighbors,
            deps=(EVENTS.name,),
            description="Top-k item neighbours by co-occurrence cosine or Swing, from positives before the cutoff.",
        ),
        Step(
            name=RECALL_ITEMS.name,
            tables=(RECALL_ITEMS,),
            run=run_recall_items,
            deps=(EVENTS.name, ITEM_NEIGHBORS.name),
            description="Each user's recall pool: neighbours of their recent positives, unseen before the cutoff.",
        ),
    ),
    invariants={
        ITEM_NEIGHBORS.name: _neighbors_invariants,
        RECALL_ITEMS.name: _recall_invariants,
    },
    docs="docs/lookalike.md",
)

__all__ = [
    "FAMILY", "RecallSettings", "build_item_neighbors_table", "build_recall_table", "check_item_neighbors",
    "check_item_neighbors_arrow", "check_recall", "check_recall_arrow", "evaluate_recall", "run_item_neighbors", "run_recall_items",
]
