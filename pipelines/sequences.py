"""Job: ``events`` to ``user_sequences`` (point-in-time histories with their split) and
``rote_features`` (the RoTE time features of every row).

Both tables are built in one pass and committed together (each atomically). Two ways to build
them (``sequences.build``):

* ``full``: every partition from all committed events (after the optional k-core filter), in one
  atomic commit. Leave-one-out needs this: a user's test row is their last event overall.
* ``incremental``: only the target days of a window. Each user active in the window continues
  from a seed read from the table's *earlier* partitions (their latest row holds their last
  ``max_len`` events); earlier partitions are neither read in full nor rewritten. A window is
  committed with ``replace_partitions``, so the other days stay byte-for-byte as they were.
  Days must be built in order: a late event for an already built day needs that day and every
  later day rebuilt (a Dagster backfill of the range does it in one run, oldest day first).
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa

from features.events import EVENTS
from features.layout import Manifest
from features.rote import ROTE_FEATURES, rote_batch, rote_table_schema
from features.sequences import USER_SEQUENCES, kcore_filter, seeds_from_sequences
from pipelines.settings import SequenceSettings
from pipelines.warehouse import Warehouse

SIDE_COLUMNS = ("play_time_ms",)


def _days(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days)]


def build_sequences_table(
    spark,
    warehouse: Warehouse,
    settings: SequenceSettings,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> dict[str, Manifest]:
    """Build ``user_sequences`` and ``rote_features`` in one pass over the events.

    ``settings.build == "full"``: every partition from all events (after the optional k-core
    filter). ``"incremental"``: the target days ``[start, end)``, continuing each user from the
    table's earlier partitions. One shuffle by user; each Spark task builds the histories of its
    users (Arrow/NumPy), derives their RoTE features, and writes both tables' Parquet files
    itself (:meth:`Warehouse.write_from_spark_arrow`). Returns the two committed manifests.
    """
    import pyarrow.compute as pc

    from features.sequences import check_split_args, histories_from_sorted, sorted_for_histories

    split = dict(split=settings.split, valid_from=settings.valid_from, test_from=settings.test_from)
    producer = {"job": "build_sequences_table", "max_len": str(settings.max_len), "split": settings.split,
                "build": settings.build, "rote_levels": ",".join(settings.rote_levels)}
    days = None
    seeds = None
    if settings.build == "full":
        events = warehouse.read_spark(spark, EVENTS.name)
        passes = 0
        if settings.k_core.enabled:
            k = settings.k_core
            events, passes = kcore_filter(events, k.min_user_events, k.min_item_events, k.max_iterations)
        producer["k_core_passes"] = str(passes)
    else:
        if start is None or end is None or end <= start:
            raise ValueError("an incremental user_sequences build needs a window of days [start, end)")
        days = _days(start, end)
        events = warehouse.read_spark(spark, EVENTS.name, partitions=days)
        if warehouse.exists(USER_SEQUENCES.name):
            earlier = [p for p in warehouse.manifest(USER_SEQUENCES.name).partitions if p < start.isoformat()]
            if earlier:
                prior = warehouse.read_spark(spark, USER_SEQUENCES.name, partitions=earlier)
                seeds = seeds_from_sequences(prior, events, settings.max_len, SIDE_COLUMNS)
        producer["window"] = f"{start.isoformat()}..{end.isoformat()}"
    check_split_args(settings.split, settings.valid_from, settings.test_from, seeds is not None)
    ordered = sorted_for_histories(events, SIDE_COLUMNS, seeds, settings.partitions)
    max_len, levels = settings.max_len, tuple(settings.rote_levels)

    def kernel(batches):
        for batch in histories_from_sorted(batches, max_len, SIDE_COLUMNS, **split):
            table = pa.Table.from_batches([batch])
            table = table.append_column("target_date", pc.cast(table.column("target_ts"), pa.date32()))
            yield USER_SEQUENCES.name, table
            yield ROTE_FEATURES.name, rote_batch(table, levels)

    return warehouse.write_from_spark_arrow(
        ordered, kernel, [USER_SEQUENCES, ROTE_FEATURES], replace_partitions=days, producer=producer
    )


def check_sequences(spark, warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """Count violations of ``user_sequences``' invariants (all zero when it is correct)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, USER_SEQUENCES.name)
    per_user = Window.partitionBy("user_id")
    flagged = df.select(
        F.exists("hist_ts", lambda t: t > F.col("target_ts")).alias("future"),
        (F.col("hist_len") > settings.max_len).alias("too_long"),
        ((F.size("hist_item_ids") != F.col("hist_len")) | (F.size("hist_ts") != F.col("hist_len"))
         | (F.size("hist_play_time_ms") != F.col("hist_len"))).alias("misaligned"),
        (F.col("hist_len") != F.least(F.col("seq_pos"), F.lit(settings.max_len))).alias("bad_len"),
        F.count(F.lit(1)).over(per_user).alias("n"),
        F.sum((F.col("split") == "test").cast("int")).over(per_user).alias("tests"),
        F.sum((F.col("split") == "valid").cast("int")).over(per_user).alias("valids"),
    )
    loo_bad = (F.col("n") >= 4) & ((F.col("tests") != 1) | (F.col("valids") != 1))
    loo_bad = loo_bad | ((F.col("n") < 4) & ((F.col("tests") + F.col("valids")) > 0))
    aggs = [
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("future").cast("long")).alias("history_after_target"),
        F.sum(F.col("too_long").cast("long")).alias("hist_len_over_max"),
        F.sum(F.col("misaligned").cast("long")).alias("arrays_misaligned"),
        F.sum(F.col("bad_len").cast("long")).alias("hist_len_not_min_seq_pos_max_len"),
    ]
    if settings.split == "leave_one_out":
        aggs.append(F.sum(loo_bad.cast("long")).alias("rows_of_users_with_bad_split_counts"))
    row = flagged.agg(*aggs).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}


def check_rote(spark, warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """Count violations of ``rote_features``' invariants against ``user_sequences``."""
    from pyspark.sql import functions as F

    rote = warehouse.read_spark(spark, ROTE_FEATURES.name)
    seqs = warehouse.read_spark(spark, USER_SEQUENCES.name).select("event_id", F.col("hist_len").alias("seq_hist_len"))
    joined = rote.join(seqs, "event_id", "full_outer")
    list_cols = [f.name for f in rote_table_schema(settings.rote_levels) if f.name.startswith(("hist_", "gap_")) and f.name != "hist_len"]
    misaligned = F.lit(False)
    for c in list_cols:
        misaligned = misaligned | (F.size(c) != F.col("hist_len"))
    row = joined.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.col("hist_len").isNull() | F.col("seq_hist_len").isNull()).cast("long")).alias("rows_not_matching_user_sequences"),
        F.sum((F.col("hist_len") != F.col("seq_hist_len")).cast("long")).alias("hist_len_differs"),
        F.sum(misaligned.cast("long")).alias("lists_misaligned"),
        F.sum(F.exists("gap_prev_s", lambda g: g < 0).cast("long")).alias("negative_gap_prev"),
        F.sum(F.exists("gap_to_target_s", lambda g: g < 0).cast("long")).alias("negative_gap_to_target"),
        F.sum((F.col("query_ts_s") > F.col("target_ts_s")).cast("long")).alias("query_after_target"),
    ).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}
