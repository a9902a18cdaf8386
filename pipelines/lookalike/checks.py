"""Invariant counters of the look-alike family: ``user_vectors`` and ``lookalike_users`` (docs/lookalike.md)."""
from __future__ import annotations

from features.lookalike import LOOKALIKE_USERS, USER_VECTORS
from pipelines.cutoffs import cutoff_provenance_violations
from pipelines.lookalike.params import LookalikeSettings
from pipelines.warehouse import Warehouse


def check_user_vectors(spark, warehouse: Warehouse, settings: LookalikeSettings) -> dict[str, int]:
    """Count violations of ``user_vectors``' invariants (all zero when it is correct)."""
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, USER_VECTORS.name)
    norm = F.sqrt(F.aggregate("vector", F.lit(0.0), lambda a, x: a + x * x))
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.size("vector") != F.col("profile_dim") + F.col("behaviour_dim")).cast("long")).alias("bad_width"),
        F.sum(((F.abs(norm - 1) > 1e-3) & (norm > 0)).cast("long")).alias("not_unit_norm"),
        F.sum((F.col("n_events") < 1).cast("long")).alias("users_without_past_events"),
        F.sum((F.col("cutoff_ts") != F.lit(settings.cutoff_ts)).cast("long")).alias("rows_with_other_cutoff"),
    ).collect()[0].asDict()
    row.update(cutoff_provenance_violations(warehouse, USER_VECTORS.name, settings.cutoff_ts))
    return {k: int(v or 0) for k, v in row.items()}


def check_lookalike(spark, warehouse: Warehouse, settings: LookalikeSettings) -> dict[str, int]:
    """Count violations of ``lookalike_users``' invariants (all zero when it is correct)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, LOOKALIKE_USERS.name)
    users = warehouse.read_spark(spark, USER_VECTORS.name).count()
    want = min(settings.k, max(users - 1, 0))
    w = Window.partitionBy("user_id").orderBy("rank")
    per_user = df.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"), F.countDistinct("neighbor_user_id").alias("d"), F.max("rank").alias("m")
    )
    flagged = df.select(
        (F.col("user_id") == F.col("neighbor_user_id")).alias("self"),
        ((F.col("similarity") < -1) | (F.col("similarity") > 1) | F.isnan("similarity")).alias("out_of_range"),
        (F.lag("similarity").over(w) < F.col("similarity")).alias("not_sorted"),
        (F.col("cutoff_ts") != F.lit(settings.cutoff_ts)).alias("wrong_cutoff"),
    )
    row = flagged.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("self").cast("long")).alias("self_neighbors"),
        F.sum(F.col("out_of_range").cast("long")).alias("similarity_out_of_range"),
        F.sum(F.coalesce(F.col("not_sorted"), F.lit(False)).cast("long")).alias("similarity_not_sorted"),
        F.sum(F.col("wrong_cutoff").cast("long")).alias("rows_with_other_cutoff"),
    ).collect()[0].asDict()
    bad = per_user.agg(
        F.sum(((F.col("n") != F.lit(want)) | (F.col("m") != F.col("n"))).cast("long")).alias("users_without_k_ranks"),
        F.sum((F.col("d") != F.col("n")).cast("long")).alias("users_with_duplicate_neighbors"),
    ).collect()[0].asDict()
    missing = users - per_user.count() if want > 0 else 0
    provenance = cutoff_provenance_violations(warehouse, LOOKALIKE_USERS.name, settings.cutoff_ts, inputs=(USER_VECTORS.name,))
    out = {**row, **bad, "users_without_neighbors": missing, **provenance}
    return {k: int(v or 0) for k, v in out.items()}
