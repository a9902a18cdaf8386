"""``rote_features`` as a view: its rows derived on read from a committed ``user_sequences`` version.

With ``sequences.rote_storage: view`` (the default) the job stores the histories once
(``user_sequences``); every public read of ``rote_features`` (:func:`pipelines.api.read`,
``api.describe``, ``recfeat show`` / ``export``) derives the rows here with the job's own kernel,
:func:`features.sequences.rote.rote_batch`, so the math lives in one place and the rows equal,
column for column, what ``rote_storage: table`` stores for the same ``user_sequences`` rows.

Versions: a view has none of its own. ``version=N`` / ``as_of=T`` name a version of
``user_sequences``; ``partitions`` are its ``target_date`` days (UTC). The schema is
:func:`features.sequences.rote.rote_table_schema` of ``sequences.rote_levels``.
"""
from __future__ import annotations

import pyarrow as pa

from features.sequences import ROTE_FEATURES, USER_SEQUENCES
from features.sequences.rote import rote_batch, rote_table_schema
from pipelines.family import View
from pipelines.sequences.params import SequenceSettings
from pipelines.warehouse import Warehouse

#: The ``user_sequences`` columns the RoTE rows are a function of.
ROTE_INPUT_COLUMNS = ("event_id", "user_id", "hist_ts", "target_ts", "target_date")
#: Rows derived per kernel call on the Arrow path (bounds memory: one padded matrix per call).
ARROW_CHUNK_ROWS = 65_536


def _select(schema: pa.Schema, columns: list[str] | None) -> list[str]:
    if columns is None:
        return schema.names
    unknown = [c for c in columns if c not in schema.names]
    if unknown:
        raise KeyError(f"{ROTE_FEATURES.name} has no column(s) {unknown}; columns: {', '.join(schema.names)}")
    return list(columns)


def read_rote_arrow(warehouse: Warehouse, settings: SequenceSettings, version=None,
                    partitions: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
    """The ``rote_features`` rows of ``user_sequences`` at ``version`` (an int, an aware
    datetime, or ``None`` for the current one), its ``partitions`` (UTC days), as pyarrow.

    One row per ``user_sequences`` row, in its order; ``columns`` selects a subset (a
    ``KeyError`` names unknown ones).
    """
    levels = tuple(settings.rote_levels)
    schema = rote_table_schema(levels)
    names = _select(schema, columns)
    src = warehouse.read_arrow(USER_SEQUENCES.name, version=version, columns=list(ROTE_INPUT_COLUMNS),
                               partitions=partitions)
    parts = [rote_batch(src.slice(i, ARROW_CHUNK_ROWS), levels) for i in range(0, src.num_rows, ARROW_CHUNK_ROWS)]
    out = pa.concat_tables(parts) if parts else schema.empty_table()
    return out.select(names)


def derive_rote_spark(seqs, levels):
    """Spark: ``rote_features`` rows of a DataFrame of ``user_sequences`` rows (one per row),
    derived per Arrow batch by :func:`rote_batch` (no shuffle)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    levels = tuple(levels)
    schema = rote_table_schema(levels)

    def kernel(batches):
        for batch in batches:
            if batch.num_rows:
                yield from rote_batch(batch, levels).to_batches()

    return seqs.select(*ROTE_INPUT_COLUMNS).mapInArrow(kernel, from_arrow_schema(schema))


def read_rote_spark(spark, warehouse: Warehouse, settings: SequenceSettings, version=None,
                    partitions: list[str] | None = None):
    """The ``rote_features`` rows of ``user_sequences`` at ``version`` as a Spark DataFrame."""
    seqs = warehouse.read_spark(spark, USER_SEQUENCES.name, version=version, partitions=partitions)
    return derive_rote_spark(seqs, settings.rote_levels)


def views(settings) -> tuple[View, ...]:
    """The family's views under ``settings``: ``rote_features`` unless ``rote_storage: table``."""
    if settings.sequences.rote_storage != "view":
        return ()
    return (View(
        table=ROTE_FEATURES.name,
        source=USER_SEQUENCES.name,
        read_arrow=lambda ctx, version=None, partitions=None, columns=None: read_rote_arrow(
            ctx.warehouse, ctx.params, version, partitions, columns),
        read_spark=lambda ctx, version=None, partitions=None: read_rote_spark(
            ctx.spark, ctx.warehouse, ctx.params, version, partitions),
        schema=lambda ctx: rote_table_schema(ctx.params.rote_levels),
    ),)


__all__ = ["ARROW_CHUNK_ROWS", "ROTE_INPUT_COLUMNS", "derive_rote_spark", "read_rote_arrow", "read_rote_spark", "views"]
