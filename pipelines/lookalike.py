"""Jobs: ``events`` + ``users`` to ``user_vectors``, then ``lookalike_users`` (docs/lookalike.md)."""
from __future__ import annotations

from features.dimensions import USERS
from features.events import EVENTS
from features.layout import Manifest
from features.lookalike import (
    LOOKALIKE_USERS,
    USER_VECTORS,
    LshParams,
    VectorParams,
    build_user_vectors,
    lookalike_topk,
)
from pipelines.settings import LookalikeSettings
from pipelines.warehouse import Warehouse


def vector_params(s: LookalikeSettings) -> VectorParams:
    return VectorParams(
        profile_weight=s.profile_weight,
        behaviour_weight=s.behaviour_weight,
        profile_exclude=tuple(s.profile_exclude),
        categorical_columns=tuple(s.categorical_columns),
        max_categories=s.max_categories,
        als_rank=s.als_rank,
        als_iterations=s.als_iterations,
        als_reg=s.als_reg,
        als_alpha=s.als_alpha,
        min_rating=s.min_rating,
        seed=s.seed,
    )


def lsh_params(s: LookalikeSettings) -> LshParams:
    return LshParams(
        k=s.k, bands=s.lsh_bands, bits_per_band=s.lsh_bits_per_band, window=s.lsh_window, seed=s.seed,
        projection_dims=s.lsh_projection_dims, recall_sample=s.lsh_recall_sample,
        auto_bands=s.lsh_auto_bands, target_recall=s.lsh_target_recall, max_bands=s.lsh_max_bands,
    )


def _producer(s: LookalikeSettings, job: str) -> dict[str, str]:
    return {"job": job, "cutoff_ts": s.cutoff_ts.isoformat()}


def build_user_vectors_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> Manifest:
    """Rebuild ``user_vectors`` as of ``settings.cutoff_ts`` from ``events`` (and ``users`` if committed)."""
    events = warehouse.read_spark(spark, EVENTS.name)
    users = warehouse.read_spark(spark, USERS.name) if warehouse.exists(USERS.name) else None
    df = build_user_vectors(events, users, settings.cutoff_ts, vector_params(settings))
    producer = {**_producer(settings, "build_user_vectors_table"), "als_rank": str(settings.als_rank)}
    return warehouse.write_spark(df.select(*USER_VECTORS.columns), USER_VECTORS, producer=producer)


def build_lookalike_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> tuple[Manifest, dict]:
    """Rebuild ``lookalike_users`` from the committed ``user_vectors``; return the manifest and LSH stats."""
    from pyspark.sql import functions as F

    vectors = warehouse.read_spark(spark, USER_VECTORS.name)
    cutoffs = [r[0] for r in vectors.select("cutoff_ts").distinct().limit(2).collect()]
    if len(cutoffs) > 1:
        raise ValueError("user_vectors holds more than one cutoff_ts")
    out, stats = lookalike_topk(vectors, lsh_params(settings), settings.cutoff_ts)
    out = out.persist()
    stats["pairs_evaluated"] = int(out.where(F.col("rank") == 1).agg(F.sum("n_candidates")).collect()[0][0] or 0)
    producer = {**_producer(settings, "build_lookalike_table"), **{k: str(v) for k, v in stats.items()}}
    manifest = warehouse.write_spark(out.select(*LOOKALIKE_USERS.columns), LOOKALIKE_USERS, producer=producer)
    out.unpersist()
    return manifest, stats


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
    out = {**row, **bad, "users_without_neighbors": missing}
    return {k: int(v or 0) for k, v in out.items()}


def lsh_recall_estimate(warehouse: Warehouse) -> tuple[float | None, int]:
    """``(recall_estimate, recall_sample_users)`` recorded by the current ``lookalike_users``
    commit (``(None, 0)`` when that build sampled no users)."""
    producer = warehouse.manifest(LOOKALIKE_USERS.name).producer
    if "recall_estimate" not in producer:
        return None, 0
    return float(producer["recall_estimate"]), int(producer["recall_sample_users"])


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
    return {k: int(v or 0) for k, v in row.items()}
