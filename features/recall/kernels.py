"""Recall-stage items for RAR: ``item_neighbors`` (i2i) and ``recall_items`` (a user's pool).

* ``item_neighbors`` over the positive events in ``[cutoff - window_days, cutoff)``; a user's
  basket ``I_u`` is its ``max_items_per_user`` most recent distinct positive items (so one heavy
  user cannot make the pair count quadratic). ``n_i`` = baskets holding ``i``, ``co(i, j)`` =
  baskets holding both. Pairs with ``co < min_co_users`` are dropped; top ``k`` per item by
  similarity desc, then ``co_users`` desc, then ``neighbor_item_id``. Two scores:

  - ``cosine``: ``co / sqrt(n_i · n_j)``, in (0, 1];
  - ``swing`` (Swing with user weights, Yang et al. 2020): over pairs of users ``u < v`` who
    both hold ``i`` and ``j``, ``Σ w_u · w_v / (alpha + |I_u ∩ I_v|)`` with
    ``w_u = 1 / sqrt(|I_u|)``, in (0, ∞); users who share many items are one taste counted
    once, not a signal repeated. An item's users are capped at its ``swing_max_users_per_item``
    most recent ones (ties by user id), and ``I_u ∩ I_v`` counts the items whose capped user
    lists hold both, so the user-pair work is bounded per item.
* ``recall_items``: a user's ``history_items`` most recent distinct positive items before the
  cutoff (position ``p`` = 0 for the most recent) vote for their neighbours:
  ``score(j) = Σ_i similarity(i, j) · decay^p(i)``. Items the user had any event with before the
  cutoff are excluded; top ``size`` by score desc, then ``item_id`` (``source`` ``i2i``). With
  ``fill = "popular"``, a pool shorter than ``size`` is topped up with the most popular items of
  the same window that it lacks and the user has not seen (``source`` ``popular``, ranked after
  every i2i item, score = the item's share of the window's users), and every user with an event
  before the cutoff gets a pool.

Pure DataFrame-to-DataFrame functions; no I/O.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from features.events import TS_TYPE
from features.lookalike.kernels import before_cutoff, positive_column
from features.timeutil import as_utc




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
    similarity: str = "swing"
    swing_alpha: float = 1.0
    swing_max_users_per_item: int = 200
    fill: str = "none"

    def validate(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, not {self.similarity!r}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, not {self.fill!r}")
        if self.swing_alpha <= 0 or self.swing_max_users_per_item < 2:
            raise ValueError("swing_alpha must be > 0 and swing_max_users_per_item >= 2")


SIMILARITIES = ("cosine", "swing")
FILLS = ("none", "popular")


def _recent_positive_items(events, cutoff_ts, min_rating: float, limit: int, since=None):
    """Spark: ``(user_id, item_id, pos, last_ts)``: each user's ``limit`` most recent distinct
    positive items before the cutoff (``pos`` 0 = most recent; ties in time by item id)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    past = before_cutoff(events, cutoff_ts)
    if since is not None:
        past = past.where(F.col("event_ts") >= F.lit(since))
    last = past.where(positive_column(min_rating)).groupBy("user_id", "item_id").agg(F.max("event_ts").alias("last_ts"))
    w = Window.partitionBy("user_id").orderBy(F.desc("last_ts"), "item_id")
    return last.withColumn("pos", F.row_number().over(w) - 1).where(F.col("pos") < limit).select("user_id", "item_id", "pos", "last_ts")


def swing_scores(basket, params: RecallParams):
    """Spark: ``(item_id, neighbor_item_id, swing)`` from a basket ``(user_id, item_id, last_ts)``.

    ``swing(i, j) = Σ_{u < v} w_u · w_v / (alpha + |I_u ∩ I_v|)`` over user pairs whose
    intersection holds ``i`` and ``j``; ``w_u = 1 / sqrt(|I_u|)``. Each item keeps its
    ``swing_max_users_per_item`` most recent users (ties by user id) for the pairing, and
    ``I_u ∩ I_v`` is the set of items whose kept users include both. Symmetric; rounded to 1e-12.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sizes = basket.groupBy("user_id").agg(F.count(F.lit(1)).alias("n_u"))
    w = Window.partitionBy("item_id").orderBy(F.desc("last_ts"), "user_id")
    kept = basket.withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= params.swing_max_users_per_item)
    a, b = kept.select("item_id", F.col("user_id").alias("u")), kept.select("item_id", F.col("user_id").alias("v"))
    inter = (
        a.join(b, "item_id")
        .where(F.col("u") < F.col("v"))
        .groupBy("u", "v")
        .agg(F.sort_array(F.collect_list("item_id")).alias("items"))
        .where(F.size("items") >= 2)
        .join(sizes.select(F.col("user_id").alias("u"), F.col("n_u")), "u")
        .join(sizes.select(F.col("user_id").alias("v"), F.col("n_u").alias("n_v")), "v")
        .select(
            "items",
            (F.lit(1.0) / (F.sqrt(F.col("n_u") * F.col("n_v")) * (F.lit(float(params.swing_alpha)) + F.size("items")))).alias("w"),
        )
    )
    pairs = (
        inter.select(F.explode("items").alias("item_id"), "items", "w")
        .select("item_id", F.explode("items").alias("neighbor_item_id"), "w")
        .where(F.col("item_id") != F.col("neighbor_item_id"))
    )
    return pairs.groupBy("item_id", "neighbor_item_id").agg(F.round(F.sum("w"), 12).alias("swing"))


def build_item_neighbors(events, cutoff_ts: dt.datetime, params: RecallParams):
    """Spark: the ``item_neighbors`` rows as of ``cutoff_ts``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    params.validate()
    cutoff = as_utc(cutoff_ts)
    start = cutoff - dt.timedelta(days=params.window_days)
    recent = _recent_positive_items(events, cutoff, params.min_rating, params.max_items_per_user, since=start)
    basket = recent.select("user_id", "item_id")
    n_i = basket.groupBy("item_id").agg(F.count(F.lit(1)).alias("n_i"))
    a, b = basket.alias("a"), basket.alias("b")
    pairs = (
        a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.item_id") != F.col("b.item_id")))
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("neighbor_item_id"))
        .agg(F.count(F.lit(1)).alias("co_users"))
        .where(F.col("co_users") >= params.min_co_users)
    )
    if params.similarity == "swing":
        scored = pairs.join(swing_scores(recent, params), ["item_id", "neighbor_item_id"]).withColumnRenamed("swing", "similarity")
    else:
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
            (F.least(F.col("similarity"), F.lit(1.0)) if params.similarity == "cosine" else F.col("similarity")).alias("similarity"),
            F.col("co_users").cast("long"),
            F.lit(start).alias("window_start_ts"),
            F.lit(cutoff).alias("cutoff_ts"),
        )
    )


def build_recall_items(events, neighbors, cutoff_ts: dt.datetime, params: RecallParams):
    """Spark: the ``recall_items`` rows from ``events`` and ``item_neighbors`` as of the cutoff."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    params.validate()
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
    i2i = (
        votes.withColumn("rank", F.row_number().over(w).cast("int"))
        .where(F.col("rank") <= params.size)
        .select("user_id", "rank", "item_id", "score", F.lit("i2i").alias("source"))
    )
    if params.fill == "popular":
        users = before_cutoff(events, cutoff).select("user_id").distinct()
        taken = i2i.groupBy("user_id").agg(F.count(F.lit(1)).alias("_m"))
        pop = popular_items(events, cutoff, params, users, extra=params.size, exclude=i2i.select("user_id", "item_id"))
        fill = (
            pop.join(taken, "user_id", "left")
            .select(
                "user_id",
                (F.coalesce(F.col("_m"), F.lit(0)) + F.col("rank")).cast("int").alias("rank"),
                "item_id",
                F.col("share").alias("score"),
                F.lit("popular").alias("source"),
            )
            .where(F.col("rank") <= params.size)
        )
        i2i = i2i.unionByName(fill)
    return i2i.select("user_id", "rank", "item_id", "score", "source", F.lit(cutoff).alias("cutoff_ts"))


def popular_items(events, cutoff_ts: dt.datetime, params: RecallParams, users, extra: int = 0, exclude=None):
    """Spark: ``(user_id, item_id, rank, share)``: the popularity pool of ``size`` items for ``users``.

    Items ranked by users with a positive in the same window as ``item_neighbors`` (ties by item
    id); ``share`` = those users / all users with a positive in the window, in (0, 1]. Each
    user's pool is the top ``size`` after removing items seen before the cutoff (as
    ``recall_items``) and the ``(user_id, item_id)`` rows of ``exclude``, which may remove up to
    ``extra`` more items per user (the baseline of the evaluation, and the fill of short pools).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cutoff = as_utc(cutoff_ts)
    start = cutoff - dt.timedelta(days=params.window_days)
    pos = before_cutoff(events, cutoff).where(F.col("event_ts") >= F.lit(start)).where(positive_column(params.min_rating))
    window_users = pos.select("user_id").distinct().count()
    pop = pos.groupBy("item_id").agg(F.countDistinct("user_id").alias("n")).orderBy(F.desc("n"), "item_id")
    seen = before_cutoff(events, cutoff).select("user_id", "item_id").distinct()
    # Any user has seen at most all of its history; the top (size + extra + longest history) suffice.
    longest = seen.groupBy("user_id").count().agg(F.max("count")).collect()[0][0] or 0
    top = F.broadcast(pop.limit(params.size + extra + int(longest)))
    cand = users.select("user_id").crossJoin(top).join(seen, ["user_id", "item_id"], "left_anti")
    if exclude is not None:
        cand = cand.join(exclude, ["user_id", "item_id"], "left_anti")
    w = Window.partitionBy("user_id").orderBy(F.desc("n"), "item_id")
    return (
        cand.withColumn("rank", F.row_number().over(w))
        .where(F.col("rank") <= params.size)
        .select("user_id", "item_id", "rank", (F.col("n") / F.lit(max(window_users, 1))).alias("share"))
    )
