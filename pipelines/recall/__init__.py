"""The recall family (RAR i2i): ``item_neighbors`` and each user's ``recall_items`` as of a cutoff.

``params`` is the ``recall`` settings section, ``job`` the two steps and the recall evaluation,
``checks`` the invariant counters (docs/lookalike.md). :data:`FAMILY` is the catalog entry.
"""
from features.events import EVENTS
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
from pipelines.family import Family, Step
from pipelines.recall.checks import check_item_neighbors, check_recall
from pipelines.recall.job import (
    build_item_neighbors_table,
    build_recall_table,
    evaluate_recall,
    run_item_neighbors,
    run_recall_items,
)
from pipelines.recall.params import RecallSettings

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
        ITEM_NEIGHBORS.name: lambda ctx: check_item_neighbors(ctx.spark, ctx.warehouse, ctx.params),
        RECALL_ITEMS.name: lambda ctx: check_recall(ctx.spark, ctx.warehouse, ctx.params),
    },
    docs="docs/lookalike.md",
)

__all__ = [
    "FAMILY", "RecallSettings", "build_item_neighbors_table", "build_recall_table", "check_item_neighbors",
    "check_recall", "evaluate_recall", "run_item_neighbors", "run_recall_items",
]
