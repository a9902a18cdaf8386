"""The item_codes family: each item's semantic ID (residual k-means code tokens) as of a cutoff.

``params`` is the ``item_codes`` settings section, ``job`` the step, ``checks`` the invariant
counter (docs/fair.md). :data:`FAMILY` is the catalog entry.
"""
from features.dimensions import ITEMS
from features.events import EVENTS
from features.item_codes import ITEM_CODES
from features.sequences import USER_SEQUENCES
from pipelines.family import Family, Step
from pipelines.item_codes.checks import check_item_codes
from pipelines.item_codes.job import build_item_codes_table, run_item_codes
from pipelines.item_codes.params import ItemCodeSettings

FAMILY = Family(
    name="item_codes",
    description="semantic IDs of items (residual k-means code tokens) for generative recommendation (docs/fair.md)",
    group="features",
    params=ItemCodeSettings,
    resolve=lambda section, settings: section.resolved(settings.lookalike),
    check_params=lambda settings: settings.item_codes.check_params(),
    steps=(
        Step(
            name=ITEM_CODES.name,
            tables=(ITEM_CODES,),
            run=run_item_codes,
            deps=(EVENTS.name, ITEMS.name, USER_SEQUENCES.name),
            description="Residual k-means semantic IDs of an item embedding fitted before the cutoff.",
        ),
    ),
    invariants={ITEM_CODES.name: lambda ctx: check_item_codes(ctx.warehouse, ctx.params)},
    docs="docs/fair.md",
)

__all__ = ["FAMILY", "ItemCodeSettings", "build_item_codes_table", "check_item_codes", "run_item_codes"]
