"""The sequences family: ``user_sequences`` and ``rote_features`` from ``events`` (docs/sequences.md).

``params`` is the ``sequences`` settings section, ``job`` builds the stored tables in one pass,
``view`` derives ``rote_features`` on read (``sequences.rote_storage: view``, the default),
``checks`` counts their invariant violations. :data:`FAMILY` is the catalog entry.

Storage modes: with ``rote_storage: table`` the step commits both tables and each gets its
asset and checks. With ``view`` only ``user_sequences`` is stored and is the step's one asset;
``rote_features`` has no asset (the graph shows what is stored), and its invariants are checked
by ``user_sequences_invariants`` on a derived sample (:func:`check_rote_view`).
"""
from features.events import EVENTS
from features.sequences import ROTE_FEATURES, USER_SEQUENCES
from pipelines.family import Family, JobContext, Step
from pipelines.sequences.checks import (
    ROTE_VIEW_SAMPLE_ROWS,
    check_coverage,
    check_rote,
    check_rote_view,
    check_rote_view_arrow,
    check_sequences,
    check_sequences_arrow,
)
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
    stored_tables,
)
from pipelines.sequences.params import KCoreSettings, SequenceSettings
from pipelines.sequences.view import derive_rote_spark, read_rote_arrow, read_rote_spark, views


def _sequences_invariants(ctx: JobContext) -> dict[str, int]:
    # Counted where the check validates: on Arrow in the process, or on Spark (docs/sequences.md).
    small = ctx.settings.quality.in_process(ctx.warehouse.manifest(USER_SEQUENCES.name).row_count)
    if small:
        counts = check_sequences_arrow(ctx.warehouse, ctx.params)
    else:
        counts = check_sequences(ctx.spark, ctx.warehouse, ctx.params)
    if ctx.params.rote_storage == "view":  # the view has no check of its own: check a derived sample here
        counts.update(check_rote_view_arrow(ctx.warehouse, ctx.params) if small
                      else check_rote_view(ctx.spark, ctx.warehouse, ctx.params))
    return counts


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
            description="One pass over the events builds the stored tables: user_sequences, and rote_features "
            "with sequences.rote_storage: table (docs/sequences.md).",
        ),
    ),
    invariants={USER_SEQUENCES.name: _sequences_invariants, ROTE_FEATURES.name: _rote_invariants},
    partitioned=lambda settings: settings.sequences.build == "incremental",
    views=views,
    docs="docs/sequences.md",
)

__all__ = [
    "FAMILY", "FINGERPRINTS_KEY", "ROTE_VIEW_SAMPLE_ROWS", "SETTINGS_KEY", "SIDE_COLUMNS", "KCoreSettings",
    "SequenceSettings", "build_sequences_table", "build_signature", "check_coverage", "check_rote", "check_rote_view",
    "check_rote_view_arrow", "check_sequences_arrow",
    "check_sequences", "current_fingerprints", "derive_rote_spark", "events_fingerprints", "flag_filter",
    "read_rote_arrow", "read_rote_spark", "run", "stored_fingerprints", "stored_tables", "views",
]
