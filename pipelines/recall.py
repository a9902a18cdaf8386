"""Jobs: ``events`` to ``item_neighbors`` (i2i), then ``recall_items``; recall evaluation (docs/lookalike.md)."""
from __future__ import annotations

import datetime as dt

from features.events import EVENTS
from features.layout import Manifest
from features.lookalike import positive_column
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS, RecallParams, build_item_neighbors, build_recall_items, popular_items
from pipelines.lookalike import committed_cutoffs, cutoff_provenance_violations, read_input, require_cutoff
from pipelines.settings import LookalikeSettings
from pipelines.warehouse import Warehouse


def recall_params(s: LookalikeSettings) -> RecallParams:
    return RecallParams(
        window_days=s.window_days,
        max_items_per_user=s.max_items_per_user,
        min_co_users=s.min_co_users,
        item_k=s.item_k,
        history_items=s.history_items,
        decay=s.decay,
        size=s.recall_size,
        min_rating=s.min_rating,
        similarity=s.item_similarity,
        swing_alpha=s.swing_alpha,
        swing_max_users_per_item=s.swing_max_users_per_item,
        fill=s.recall_fill,
    )


def build_item_neighbors_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> Manifest:
    """Rebuild ``item_neighbors`` as of ``settings.cutoff_ts``."""
    events = warehouse.read_spark(spark, EVENTS.name)
    df = build_item_neighbors(events, settings.cutoff_ts, recall_params(settings))
    producer = {
        "job": "build_item_neighbors_table", "cutoff_ts": settings.cutoff_ts.isoformat(),
        "window_days": str(settings.window_days), "similarity": settings.item_similarity,
    }
    return warehouse.write_spark(df.select(*ITEM_NEIGHBORS.columns), ITEM_NEIGHBORS, producer=producer)


def build_recall_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> Manifest:
    """Rebuild ``recall_items`` from ``events`` and the committed ``item_neighbors`` (which must
    have been built as of ``settings.cutoff_ts``)."""
    neighbors, provenance = read_input(spark, warehouse, ITEM_NEIGHBORS.name, settings)
    events = warehouse.read_spark(spark, EVENTS.name)
    df = build_recall_items(events, neighbors, settings.cutoff_ts, recall_params(settings))
    producer = {
        "job": "build_recall_table", "cutoff_ts": settings.cutoff_ts.isoformat(),
        "size": str(settings.recall_size), "fill": settings.recall_fill,
        **provenance,  # what it was built from: the invariant check compares it with the settings
    }
    return warehouse.write_spark(df.select(*RECALL_ITEMS.columns), RECALL_ITEMS, producer=producer)


def check_item_neighbors(spark, warehouse: Warehouse, settings: LookalikeSettings) -> dict[str, int]:
    """Count violations of ``item_neighbors``' invariants (all zero when it is correct)."""
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, ITEM_NEIGHBORS.name)
    upper = 1.0 if settings.item_similarity == "cosine" else float("inf")  # Swing scores are unbounded above
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
    row.update(cutoff_provenance_violations(warehouse, ITEM_NEIGHBORS.name, settings))
    return {k: int(v or 0) for k, v in row.items()}


def check_recall(spark, warehouse: Warehouse, settings: LookalikeSettings) -> dict[str, int]:
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
    allowed = ["i2i", "popular"] if settings.recall_fill == "popular" else ["i2i"]
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
    row["users_with_bad_ranks"] = per.where((F.col("n") != F.col("m")) | (F.col("n") > settings.recall_size)).count()
    row.update(cutoff_provenance_violations(warehouse, RECALL_ITEMS.name, settings, inputs=(ITEM_NEIGHBORS.name,)))
    return {k: int(v or 0) for k, v in row.items()}


def evaluate_recall(spark, warehouse: Warehouse, settings: LookalikeSettings, horizon: dt.timedelta = dt.timedelta(days=1)) -> dict:
    """Hit rate of the committed ``recall_items`` on the positives in ``[cutoff, cutoff + horizon)``
    against a popularity pool of the same size (same exclusion of items seen before the cutoff).

    Targets: (user, item) positives after the cutoff for items the user had not seen before it,
    for users with a recall pool. ``item_recall`` = targets found in the pool / targets;
    ``user_hit_rate`` = users with at least one target in the pool / users with a target.
    The committed ``recall_items`` must have been built as of ``settings.cutoff_ts``
    (:class:`~pipelines.lookalike.CutoffMismatchError` otherwise).
    """
    from pyspark.sql import functions as F

    require_cutoff(RECALL_ITEMS.name, committed_cutoffs(spark, warehouse, RECALL_ITEMS.name), settings)
    events = warehouse.read_spark(spark, EVENTS.name)
    cutoff = settings.cutoff_ts
    params = recall_params(settings)
    pool = warehouse.read_spark(spark, RECALL_ITEMS.name).select("user_id", "item_id")
    users = pool.select("user_id").distinct()
    seen = events.where(F.col("event_ts") < F.lit(cutoff)).select("user_id", "item_id").distinct()
    targets = (
        events.where((F.col("event_ts") >= F.lit(cutoff)) & (F.col("event_ts") < F.lit(cutoff + horizon)))
        .where(positive_column(settings.min_rating))
        .select("user_id", "item_id")
        .distinct()
        .join(seen, ["user_id", "item_id"], "left_anti")
        .join(users, "user_id", "left_semi")
        .persist()
    )
    pop = popular_items(events, cutoff, params, targets.select("user_id").distinct()).select("user_id", "item_id")

    def score(p):
        hits = targets.join(p, ["user_id", "item_id"], "left_semi")
        return hits.count(), hits.select("user_id").distinct().count()

    n_targets = targets.count()
    n_users = targets.select("user_id").distinct().count()
    rh, ru = score(pool)
    ph, pu = score(pop)
    targets.unpersist()
    return {
        "pool_size": settings.recall_size,
        "users_with_pool": users.count(),
        "target_users": n_users,
        "targets": n_targets,
        "recall_item_recall": rh / n_targets if n_targets else 0.0,
        "recall_user_hit_rate": ru / n_users if n_users else 0.0,
        "popular_item_recall": ph / n_targets if n_targets else 0.0,
        "popular_user_hit_rate": pu / n_users if n_users else 0.0,
    }
