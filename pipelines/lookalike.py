"""Jobs: ``events`` + ``users`` to ``user_vectors``, then ``lookalike_users`` (docs/lookalike.md)."""
from __future__ import annotations

import datetime as dt

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


# ---------------------------------------------------------------------------------------------
# The cutoff of a committed input: every table of the family must be built as of the configured one


class CutoffMismatchError(ValueError):
    """A committed table was built with another ``cutoff_ts`` than the configured one."""


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def committed_cutoffs(spark, warehouse: Warehouse, table: str, version: int | None = None) -> list[dt.datetime]:
    """The distinct ``cutoff_ts`` of the committed ``table``'s rows (UTC, sorted; at most 3), or,
    for a table without rows, the one its manifest's producer records (``[]`` if none).
    ``version``: that committed version (default the current one)."""
    from pyspark.sql import functions as F

    rows = (
        warehouse.read_spark(spark, table, version=version)
        .select(F.unix_micros("cutoff_ts").alias("us"))
        .distinct()
        .limit(3)
        .collect()
    )
    found = sorted(_EPOCH + dt.timedelta(microseconds=r.us) for r in rows if r.us is not None)
    if found:
        return found
    recorded = warehouse.manifest(table, version).producer.get("cutoff_ts")
    return [dt.datetime.fromisoformat(recorded)] if recorded else []


def require_cutoff(table: str, found: list[dt.datetime], settings: LookalikeSettings) -> None:
    """Refuse an input ``table`` whose committed cutoffs ``found`` (:func:`committed_cutoffs`) are
    not exactly ``settings.cutoff_ts``.

    A job reading an input of another cutoff would mix two cutoffs while stamping the configured
    one on its rows. Raises :class:`CutoffMismatchError` with a one-line message naming the table,
    its cutoff and the configured one.
    """
    want = settings.cutoff_ts
    if found != [want]:
        held = ", ".join(c.isoformat() for c in found) or "none recorded"
        raise CutoffMismatchError(
            f"{table} was built with cutoff_ts {held}, but the configured cutoff_ts is {want.isoformat()}: "
            f"materialize {table} again first"
        )


def read_input(spark, warehouse: Warehouse, table: str, settings: LookalikeSettings):
    """``(DataFrame, provenance)`` of a committed input built as of ``settings.cutoff_ts``
    (:func:`require_cutoff`); ``provenance`` (``<table>_version``, ``<table>_cutoff_ts``) goes into
    the producer of the table built from it, for the checks."""
    version = warehouse.current_version(table)  # one version for the check, the record and the read
    found = committed_cutoffs(spark, warehouse, table, version)
    require_cutoff(table, found, settings)
    provenance = {
        f"{table}_version": str(version),
        f"{table}_cutoff_ts": ", ".join(c.isoformat() for c in found),
    }
    return warehouse.read_spark(spark, table, version=version), provenance


def cutoff_provenance_violations(warehouse: Warehouse, table: str, settings: LookalikeSettings, inputs: tuple[str, ...] = ()) -> dict[str, int]:
    """Check counts from ``table``'s manifest, against the settings rather than the rows' stamp:
    ``built_with_other_cutoff`` (the build's recorded cutoff is not the configured one) and, for a
    table built from committed ``inputs``, ``inputs_with_other_cutoff`` (inputs whose recorded
    cutoff is not the configured one; an unrecorded one counts)."""
    producer = warehouse.manifest(table).producer

    def other(recorded: str | None) -> int:
        try:
            return int(recorded is None or dt.datetime.fromisoformat(recorded) != settings.cutoff_ts)
        except (TypeError, ValueError):  # unparseable, or naive, or several cutoffs ("a, b")
            return 1

    out = {"built_with_other_cutoff": other(producer.get("cutoff_ts"))}
    if inputs:
        out["inputs_with_other_cutoff"] = sum(other(producer.get(f"{name}_cutoff_ts")) for name in inputs)
    return out


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

    vectors, provenance = read_input(spark, warehouse, USER_VECTORS.name, settings)
    out, stats = lookalike_topk(vectors, lsh_params(settings), settings.cutoff_ts)
    out = out.persist()
    stats["pairs_evaluated"] = int(out.where(F.col("rank") == 1).agg(F.sum("n_candidates")).collect()[0][0] or 0)
    producer = {
        **_producer(settings, "build_lookalike_table"),
        **{k: str(v) for k, v in stats.items()},
        **provenance,  # what it was built from: the invariant check compares it with the settings
    }
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
    provenance = cutoff_provenance_violations(warehouse, LOOKALIKE_USERS.name, settings, inputs=(USER_VECTORS.name,))
    out = {**row, **bad, "users_without_neighbors": missing, **provenance}
    return {k: int(v or 0) for k, v in out.items()}


def lsh_recall_estimate(warehouse: Warehouse) -> tuple[float | None, int]:
    """``(recall_estimate, recall_sample_users)`` recorded by the current ``lookalike_users``
    commit: the recall@k on the held-out sample, whose users did not choose the bands
    (``(None, 0)`` when that build sampled no users)."""
    producer = warehouse.manifest(LOOKALIKE_USERS.name).producer
    if "recall_estimate" not in producer:
        return None, 0
    return float(producer["recall_estimate"]), int(producer["recall_sample_users"])


def lsh_recall_summary(warehouse: Warehouse, settings: LookalikeSettings) -> str | None:
    """One line on the current ``lookalike_users`` build's held-out recall against the target
    (``None`` when the table is not committed)."""
    if not warehouse.exists(LOOKALIKE_USERS.name):
        return None
    estimate, sample = lsh_recall_estimate(warehouse)
    producer = warehouse.manifest(LOOKALIKE_USERS.name).producer
    bands = producer.get("bands", "?")
    chosen = f" chosen by lsh_auto_bands ({producer['bands_tried']})" if "bands_tried" in producer else ""
    if estimate is None:
        return f"look-alike users: recall not estimated (lsh_recall_sample 0 or fewer than 2 users); {bands} bands{chosen}"
    verdict = "reaches" if estimate >= settings.lsh_target_recall else "is BELOW"
    return (f"look-alike users: held-out recall@{settings.k} {estimate:.3f} on {sample:,} users {verdict} the target "
            f"{settings.lsh_target_recall}; {bands} bands{chosen}")


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
    row.update(cutoff_provenance_violations(warehouse, USER_VECTORS.name, settings))
    return {k: int(v or 0) for k, v in row.items()}
