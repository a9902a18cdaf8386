"""Recall-stage items for RAR: ``item_neighbors`` (i2i) and ``recall_items`` (a user's pool).

* ``item_neighbors``: co-occurrence cosine over the positive events in
  ``[cutoff - window_days, cutoff)``. ``n_i`` = users with a positive on item ``i``;
  ``co(i, j)`` = users with a positive on both (each user's ``max_items_per_user`` most recent
  distinct items, so one heavy user cannot make the pair count quadratic);
  ``similarity = co / sqrt(n_i · n_j)`` in (0, 1]. Pairs with ``co < min_co_users`` are dropped;
  top ``k`` per item by similarity desc, then ``co_users`` desc, then ``neighbor_item_id``.
* ``recall_items``: a user's ``history_items`` most recent distinct positive items before the
  cutoff (position ``p`` = 0 for the most recent) vote for their neighbours:
  ``score(j) = Σ_i similarity(i, j) · decay^p(i)``. Items the user had any event with before the
  cutoff are excluded; top ``size`` by score desc, then ``item_id``.

Pure DataFrame-to-DataFrame functions; no I/O.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from features.contracts import TableContract, register
from features.events import TS_TYPE
from features.lookalike import as_utc, before_cutoff, positive_column

ITEM_NEIGHBORS = register(
    TableContract(
        name="item_neighbors",
        schema=pa.schema(
            [
                pa.field("item_id", pa.string(), nullable=False),
                pa.field("rank", pa.int32(), nullable=False),
                pa.field("neighbor_item_id", pa.string(), nullable=False),
                pa.field("similarity", pa.float64(), nullable=False),
                pa.field("co_users", pa.int64(), nullable=False),
                pa.field("window_start_ts", TS_TYPE, nullable=False),
                pa.field("cutoff_ts", TS_TYPE, nullable=False),
            ]
        ),
        key=("item_id", "rank"),
        description="Each item's top-K co-occurrence neighbours (cosine over users) from positives in the window before the cutoff.",
        invariants=(
            "neighbor_item_id != item_id; similarity in (0, 1]; co_users >= min_co_users",
            "rank = 1..n contiguous per item, at most k rows per item",
        ),
    )
)

RECALL_ITEMS = register(
    TableContract(
        name="recall_items",
        schema=pa.schema(
            [
                pa.field("user_id", pa.string(), nullable=False),
                pa.field("rank", pa.int32(), nullable=False),
                pa.field("item_id", pa.string(), nullable=False),
                pa.field("score", pa.float64(), nullable=False),
                pa.field("cutoff_ts", TS_TYPE, nullable=False),
            ]
        ),
        key=("user_id", "rank"),
        description="Each user's recall pool: up to N unseen items from the i2i neighbours of the recent history before the cutoff.",
        invariants=(
            "no item the user had an event with before the cutoff",
            "rank = 1..n contiguous per user, score > 0 and non-increasing with rank, at most size rows per user",
        ),
    )
)


@dataclass(frozen=True)
class RecallParams:
    """Item neighbours and recall pool (``LookalikeSettings`` carries the same fields)."""

    window_days: int = 7
    max_items_per_user: int = 100
    min_co_users: int = 2
    item_k: int = 50
    history_items: int = 20
    decay: float = 0.9
    size: int = 100
    min_rating: float = 4.0


def _recent_positive_items(events, cutoff_ts, min_rating: float, limit: int, since=None):
    """Spark: ``(user_id, item_id, pos)``: each user's ``limit`` most recent distinct positive
    items before the cutoff (``pos`` 0 = most recent; ties in time by item id)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    past = before_cutoff(events, cutoff_ts)
    if since is not None:
        past = past.where(F.col("event_ts") >= F.lit(since))
    last = past.where(positive_column(min_rating)).groupBy("user_id", "item_id").agg(F.max("event_ts").alias("last_ts"))
    w = Window.partitionBy("user_id").orderBy(F.desc("last_ts"), "item_id")
    return last.withColumn("pos", F.row_number().over(w) - 1).where(F.col("pos") < limit).select("user_id", "item_id", "pos")


def build_item_neighbors(events, cutoff_ts: dt.datetime, params: RecallParams):
    """Spark: the ``item_neighbors`` rows as of ``cutoff_ts``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cutoff = as_utc(cutoff_ts)
    start = cutoff - dt.timedelta(days=params.window_days)
    basket = _recent_positive_items(events, cutoff, params.min_rating, params.max_items_per_user, since=start).select(
        "user_id", "item_id"
    )
    n_i = basket.groupBy("item_id").agg(F.count(F.lit(1)).alias("n_i"))
    a, b = basket.alias("a"), basket.alias("b")
    pairs = (
        a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.item_id") != F.col("b.item_id")))
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("neighbor_item_id"))
        .agg(F.count(F.lit(1)).alias("co_users"))
        .where(F.col("co_users") >= params.min_co_users)
    )
    scored = (
        pairs.join(n_i, "item_id")
        .join(n_i.select(F.col("item_id").alias("neighbor_item_id"), F.col("n_i").alias("n_j")), "neighbor_item_id")
        .withColumn("similarity", F.round(F.col("co_users") / F.sqrt(F.col("n_i") * F.col("n_j")), 12))
    )
    w = Window.partitionBy("item_id").orderBy(F.desc("similarity"), F.desc("co_users"), "neighbor_item_id")
    return (
        scored.withColumn("rank", F.row_number().over(w).cast("int"))
        .where(F.col("rank") <= params.item_k)
        .select(
            "item_id",
            "rank",
            "neighbor_item_id",
            F.least(F.col("similarity"), F.lit(1.0)).alias("similarity"),
            F.col("co_users").cast("long"),
            F.lit(start).alias("window_start_ts"),
            F.lit(cutoff).alias("cutoff_ts"),
        )
    )


def build_recall_items(events, neighbors, cutoff_ts: dt.datetime, params: RecallParams):
    """Spark: the ``recall_items`` rows from ``events`` and ``item_neighbors`` as of the cutoff."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cutoff = as_utc(cutoff_ts)
    hist = _recent_positive_items(events, cutoff, params.min_rating, params.history_items)
    seen = before_cutoff(events, cutoff).select("user_id", "item_id").distinct()
    votes = (
        hist.join(neighbors.select("item_id", "neighbor_item_id", "similarity"), "item_id")
        .select(
            "user_id",
            F.col("neighbor_item_id").alias("item_id"),
            (F.col("similarity") * F.pow(F.lit(float(params.decay)), F.col("pos"))).alias("v"),
        )
        .join(seen, ["user_id", "item_id"], "left_anti")
        .groupBy("user_id", "item_id")
        .agg(F.round(F.sum("v"), 12).alias("score"))
        .where(F.col("score") > 0)
    )
    w = Window.partitionBy("user_id").orderBy(F.desc("score"), "item_id")
    return (
        votes.withColumn("rank", F.row_number().over(w).cast("int"))
        .where(F.col("rank") <= params.size)
        .select("user_id", "rank", "item_id", "score", F.lit(cutoff).alias("cutoff_ts"))
    )


def popular_items(events, cutoff_ts: dt.datetime, params: RecallParams, users):
    """Spark: the popularity baseline pool of the same size for ``users`` (``user_id``).

    Items ranked by users with a positive in the same window as ``item_neighbors``; each user's
    pool is the top ``size`` after removing items seen before the cutoff (as ``recall_items``).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cutoff = as_utc(cutoff_ts)
    start = cutoff - dt.timedelta(days=params.window_days)
    pos = before_cutoff(events, cutoff).where(F.col("event_ts") >= F.lit(start)).where(positive_column(params.min_rating))
    pop = pos.groupBy("item_id").agg(F.countDistinct("user_id").alias("n")).orderBy(F.desc("n"), "item_id")
    seen = before_cutoff(events, cutoff).select("user_id", "item_id").distinct()
    # Any user has seen at most all of its history; the top (size + longest history) suffice.
    longest = seen.groupBy("user_id").count().agg(F.max("count")).collect()[0][0] or 0
    top = pop.limit(params.size + int(longest))
    cand = users.select("user_id").crossJoin(top).join(seen, ["user_id", "item_id"], "left_anti")
    w = Window.partitionBy("user_id").orderBy(F.desc("n"), "item_id")
    return cand.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= params.size).select("user_id", "item_id", "rank")
