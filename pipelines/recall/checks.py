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


# ---------------------------------------------------------------------------------------------
# The same counters on Arrow and NumPy, for tables the check validates in the process


def _groups(*cols):
    """One dense group id per row over several key columns, nulls a value of their own."""
    import numpy as np

    from pipelines.quality.frames import group_ids

    ids = [group_ids(c) for c in cols]
    key = ids[0]
    for more in ids[1:]:
        key = key * (int(more.max(initial=0)) + 1) + more
    return np.unique(key, return_inverse=True)[1].astype(np.int64) if len(key) else key


def _count_and_max(groups, values, n_groups: int):
    """Per group: rows, and the max of ``values`` (a NumPy float array with NaN for null), NaN
    when every value of the group is null (Spark's ``max`` of nulls is null)."""
    import numpy as np

    n = np.bincount(groups, minlength=n_groups)
    m = np.full(n_groups, -np.inf)
    np.fmax.at(m, groups, values)
    m[np.isneginf(m)] = np.nan
    return n, m


def _floats(col):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.fill_null(pc.cast(col, pa.float64()), float("nan")).to_numpy(zero_copy_only=False).astype(np.float64)


def _bad_ranks(groups, rank, limit: int) -> int:
    """Groups whose row count is not their max rank, or above ``limit`` (a null max holds, as in Spark)."""
    import numpy as np

    if not len(groups):
        return 0
    n, m = _count_and_max(groups, rank, int(groups.max()) + 1)
    with np.errstate(invalid="ignore"):
        return int(np.sum(~np.isnan(m) & ((n != m) | (n > limit))))


def check_item_neighbors_arrow(warehouse: Warehouse, settings: RecallSettings) -> dict[str, int]:
    """:func:`check_item_neighbors` on Arrow and NumPy in this process: the same counts, with
    Spark SQL's null rules (a comparison with a null is not a violation, NaN is above every
    number, null ids group together)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.quality.frames import count_true

    t = warehouse.read_arrow(ITEM_NEIGHBORS.name)
    sim = t.column("similarity")
    upper = 1.0 if settings.similarity == "cosine" else float("inf")
    cutoff = pa.scalar(settings.cutoff_ts, t.schema.field("cutoff_ts").type)
    out = {
        "rows": t.num_rows,
        "self_neighbors": count_true(pc.equal(t.column("item_id"), t.column("neighbor_item_id"))),
        "similarity_out_of_range": count_true(
            pc.or_(pc.or_(pc.less_equal(sim, 0.0), pc.is_nan(sim)), pc.greater(sim, upper))),
        "co_users_below_min": count_true(pc.less(t.column("co_users"), settings.min_co_users)),
        "rows_with_other_cutoff": count_true(pc.not_equal(t.column("cutoff_ts"), cutoff)),
        "items_with_bad_ranks": _bad_ranks(_groups(t.column("item_id")), _floats(t.column("rank")), settings.item_k),
    }
    out.update(cutoff_provenance_violations(warehouse, ITEM_NEIGHBORS.name, settings.cutoff_ts))
    return {k: int(v or 0) for k, v in out.items()}


def check_recall_arrow(warehouse: Warehouse, settings: RecallSettings) -> dict[str, int]:
    """:func:`check_recall` on Arrow and NumPy in this process (the same counts and null rules
    as :func:`check_item_neighbors_arrow`). Reads the ``events`` partitions up to the cutoff's
    date for the seen items."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.quality.frames import count_true
    from pipelines.cutoffs import partitions_before

    t = warehouse.read_arrow(RECALL_ITEMS.name)
    cutoff = pa.scalar(settings.cutoff_ts, t.schema.field("cutoff_ts").type)
    allowed = ["i2i", "popular"] if settings.fill == "popular" else ["i2i"]
    source, score, rank = t.column("source"), t.column("score"), _floats(t.column("rank"))
    out = {
        "rows": t.num_rows,
        "nonpositive_scores": count_true(pc.less_equal(score, 0.0)),
        "rows_with_unexpected_source": count_true(pc.invert(pc.is_in(source, pa.array(allowed)))),
        "rows_with_other_cutoff": count_true(pc.not_equal(t.column("cutoff_ts"), cutoff)),
    }
    # A score above the one ranked just before it, within (user, source) by rank. Spark's lag over
    # rows of equal rank takes them in an unspecified order; this takes them in table order.
    by = _groups(t.column("user_id"), source)
    order = np.lexsort((rank, by))
    s = pc.cast(score, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)[order]
    null = pc.is_null(score).to_numpy(zero_copy_only=False)[order]
    same = (by[order][1:] == by[order][:-1]) & ~null[:-1] & ~null[1:]
    with np.errstate(invalid="ignore"):  # Spark orders NaN above every number: x < NaN for any other x
        up = (s[:-1] < s[1:]) | (np.isnan(s[1:]) & ~np.isnan(s[:-1]))
    out["scores_not_sorted"] = int(np.sum(same & up))
    user = _groups(t.column("user_id"))
    out["users_with_bad_ranks"] = _bad_ranks(user, rank, settings.size)
    n_users = int(user.max()) + 1 if len(user) else 0
    is_i2i = pc.fill_null(pc.equal(source, "i2i"), False).to_numpy(zero_copy_only=False)
    is_pop = pc.fill_null(pc.equal(source, "popular"), False).to_numpy(zero_copy_only=False)
    last_i2i, first_pop = np.full(n_users, -np.inf), np.full(n_users, np.inf)
    np.fmax.at(last_i2i, user[is_i2i], rank[is_i2i])
    np.fmin.at(first_pop, user[is_pop], rank[is_pop])
    out["users_with_popular_before_i2i"] = int(np.sum(np.isfinite(last_i2i) & np.isfinite(first_pop) & (first_pop < last_i2i)))
    events = warehouse.read_arrow(EVENTS.name, columns=["user_id", "item_id", "event_ts"],
                                  partitions=partitions_before(warehouse, settings.cutoff_ts))
    seen = events.filter(pc.less(events.column("event_ts"), pa.scalar(settings.cutoff_ts, events.schema.field("event_ts").type)))
    seen = seen.select(["user_id", "item_id"]).group_by(["user_id", "item_id"]).aggregate([])
    keys = t.select(["user_id", "item_id"])
    out["seen_items_recalled"] = keys.join(seen, ["user_id", "item_id"], join_type="left semi").num_rows
    out.update(cutoff_provenance_violations(warehouse, RECALL_ITEMS.name, settings.cutoff_ts, inputs=(ITEM_NEIGHBORS.name,)))
    return {k: int(v or 0) for k, v in out.items()}
