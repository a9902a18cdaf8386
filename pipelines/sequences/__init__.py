"""The sequences family: ``user_sequences`` and ``rote_features`` from ``events`` (docs/sequences.md).

``params`` is the ``sequences`` settings section, ``job`` builds both tables in one pass,
``checks`` counts their invariant violations. :data:`FAMILY` is the catalog entry.
"""
from features.events import EVENTS
from features.sequences import ROTE_FEATURES, USER_SEQUENCES
from pipelines.family import Family, JobContext, Step
from pipelines.sequences.checks import check_coverage, check_rote, check_sequences
from pipelines.sequences.job import (
    FINGERPRINTS_KEY,
    SETTINGS_KEY,
    SIDE_COLUMNS,
    build_sequences_table,
    build_signature,
    current_fingerprints,
    events_fingerprints,
    flag_filter,
    run,
    stored_fingerprints,
)
from pipelines.sequences.params import KCoreSettings, SequenceSettings


def _sequences_invariants(ctx: JobContext) -> dict[str, int]:
    return check_sequences(ctx.spark, ctx.warehouse, ctx.params)


def _rote_invariants(ctx: JobContext) -> dict[str, int]:
    return check_rote(ctx.spark, ctx.warehouse, ctx.params)


FAMILY = Family(
    name="sequences",
    description="point-in-time user histories and their RoTE time features (docs/sequences.md)",
    group="features",
    params=SequenceSettings,
    steps=(
        Step(
            name="sequences",
            tables=(USER_SEQUENCES, ROTE_FEATURES),
            run=run,
            deps=(EVENTS.name,),
            description="One pass over the events builds both tables (docs/sequences.md).",
        ),
    ),
    invariants={USER_SEQUENCES.name: _sequences_invariants, ROTE_FEATURES.name: _rote_invariants},
    partitioned=lambda settings: settings.sequences.build == "incremental",
    docs="docs/sequences.md",
)

__all__ = [
    "FAMILY", "FINGERPRINTS_KEY", "SETTINGS_KEY", "SIDE_COLUMNS", "KCoreSettings", "SequenceSettings",
    "build_sequences_table", "build_signature", "check_coverage", "check_rote", "check_sequences",
    "current_fingerprints", "events_fingerprints", "flag_filter", "run", "stored_fingerprints",
]
