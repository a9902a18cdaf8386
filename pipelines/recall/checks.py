"""Invariant counters of the recall family: ``item_neighbors`` and ``recall_items`` (docs/lookalike.md)."""
from __future__ import annotations

from features.events import EVENTS
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
from pipelines.cutoffs import cutoff_provenance_violations
from pipelines.recall.params import RecallSettings
from pipelines.warehouse import Warehouse


def check_item_neighbors(spark, warehouse: Warehouse, settings: RecallSettings) -> dict[str, int]:
    """Count violations of ``item_neighbors``' invariants (all zero when it is correct)."""
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, ITEM_NEIGHBORS.name)
    upper = 1.0 if settings.similarity == "cosine" else float("inf")  # Swing scores are unbounded above
    per = df.groupBy("item_id").agg(F.count(F.lit(1)).alias("n"), F.max("rank").alias("m"))
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.col("item_id") == F.col("neighbor_item_id")).cast("long")).alias("self_neighbors"),
        F.sum(
            ((F.col("similarity") <= 0) | F.isnan("similarity") | (F.col("similarity") > F.lit(upper))).cast("long")
        ).alias("similarity_out_of_range"),
        F.sum((F.col("co_users") < settings.min_co_users).cast("long")).alias("co_users_below_min"),
        F.sum((F.col("cutoff_ts") != F.lit(settings.cutoff_ts)).cast("long")).alias("rows_with_other_cutoff"),
    ).collect()[0].asDict()
    row["items_with_bad_ranks"] = per.where((F.col("n") != F.col("m")) | (F.col("n") > settings.item_k)).count()
    row.update(cutoff_provenance_violations(warehouse, ITEM_NEIGHBORS.name, settings.cutoff_ts))
    return {k: int(v or 0) for k, v in row.items()}


def check_recall(spark, warehouse: Warehouse, settings: RecallSettings) -> dict[str, int]:
    """Count violations of ``recall_items``' invariants, including seen items (cutoff respected)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, RECALL_ITEMS.name)
    seen = (
        warehouse.read_spark(spark, EVENTS.name)
        .where(F.col("event_ts") < F.lit(settings.cutoff_ts))
        .select("user_id", "item_id")
        .distinct()
    )
    per = df.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"), F.max("rank").alias("m"),
        F.max(F.when(F.col("source") == "i2i", F.col("rank"))).alias("last_i2i"),
        F.min(F.when(F.col("source") == "popular", F.col("rank"))).alias("first_popular"),
    )
    w = Window.partitionBy("user_id", "source").orderBy("rank")
    allowed = ["i2i", "popular"] if settings.fill == "popular" else ["i2i"]
    row = df.select(
        "*", (F.lag("score").over(w) < F.col("score")).alias("_up")
    ).agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.col("score") <= 0).cast("long")).alias("nonpositive_scores"),
        F.sum(F.coalesce(F.col("_up"), F.lit(False)).cast("long")).alias("scores_not_sorted"),
        F.sum((~F.col("source").isin(*allowed)).cast("long")).alias("rows_with_unexpected_source"),
        F.sum((F.col("cutoff_ts") != F.lit(settings.cutoff_ts)).cast("long")).alias("rows_with_other_cutoff"),
    ).collect()[0].asDict()
    row["users_with_popular_before_i2i"] = per.where(F.col("first_popular") < F.col("last_i2i")).count()
    row["seen_items_recalled"] = df.join(seen, ["user_id", "item_id"], "left_semi").count()
    row["users_with_bad_ranks"] = per.where((F.col("n") != F.col("m")) | (F.col("n") > settings.size)).count()
    row.update(cutoff_provenance_violations(warehouse, RECALL_ITEMS.name, settings.cutoff_ts, inputs=(ITEM_NEIGHBORS.name,)))
    return {k: int(v or 0) for k, v in row.items()}
