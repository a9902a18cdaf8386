"""Jobs: ``events`` + ``users`` to ``user_vectors``, then ``lookalike_users`` (docs/lookalike.md)."""
from __future__ import annotations

from features.dimensions import USERS
from features.events import EVENTS
from features.lookalike import LOOKALIKE_USERS, USER_VECTORS
from features.lookalike.kernels import build_user_vectors, lookalike_topk
from pipelines.cutoffs import read_input
from pipelines.family import JobContext, JobResult
from pipelines.lookalike.params import LookalikeSettings
from pipelines.warehouse import Warehouse


def _producer(s: LookalikeSettings, job: str) -> dict[str, str]:
    return {"job": job, "cutoff_ts": s.cutoff_ts.isoformat()}


def build_user_vectors_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> JobResult:
    """Rebuild ``user_vectors`` as of ``settings.cutoff_ts`` from ``events`` (and ``users`` if committed)."""
    events = warehouse.read_spark(spark, EVENTS.name)
    users = warehouse.read_spark(spark, USERS.name) if warehouse.exists(USERS.name) else None
    als: dict = {}
    df = build_user_vectors(events, users, settings.cutoff_ts, settings.vector_params(), report=als)
    producer = {
        **_producer(settings, "build_user_vectors_table"),
        "als_rank": str(settings.als_rank),
        **{k: str(v) for k, v in als.items()},  # als_entries (pairs) and als_engine (the engine used)
    }
    manifest = warehouse.write_spark(df.select(*USER_VECTORS.columns), USER_VECTORS, producer=producer)
    return JobResult({USER_VECTORS.name: manifest}, {USER_VECTORS.name: {"cutoff_ts": settings.cutoff_ts.isoformat(), **als}})


def build_lookalike_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> JobResult:
    """Rebuild ``lookalike_users`` from the committed ``user_vectors``; the stats are the LSH figures."""
    from pyspark.sql import functions as F

    vectors, provenance = read_input(spark, warehouse, USER_VECTORS.name, settings.cutoff_ts)
    out, stats = lookalike_topk(vectors, settings.lsh_params(), settings.cutoff_ts)
    out = out.persist()
    stats["pairs_evaluated"] = int(out.where(F.col("rank") == 1).agg(F.sum("n_candidates")).collect()[0][0] or 0)
    producer = {
        **_producer(settings, "build_lookalike_table"),
        **{k: str(v) for k, v in stats.items()},
        **provenance,  # what it was built from: the invariant check compares it with the settings
    }
    manifest = warehouse.write_spark(out.select(*LOOKALIKE_USERS.columns), LOOKALIKE_USERS, producer=producer)
    out.unpersist()
    figures = {"cutoff_ts": settings.cutoff_ts.isoformat(), **{f"lsh_{k}": v for k, v in stats.items()}}
    return JobResult({LOOKALIKE_USERS.name: manifest}, {LOOKALIKE_USERS.name: figures})


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
    chosen = f" chosen by lsh.auto_bands ({producer['bands_tried']})" if "bands_tried" in producer else ""
    if estimate is None:
        return f"look-alike users: recall not estimated (lsh.recall_sample 0 or fewer than 2 users); {bands} bands{chosen}"
    verdict = "reaches" if estimate >= settings.lsh.target_recall else "is BELOW"
    return (f"look-alike users: held-out recall@{settings.k} {estimate:.3f} on {sample:,} users {verdict} the target "
            f"{settings.lsh.target_recall}; {bands} bands{chosen}")


def run_user_vectors(ctx: JobContext) -> JobResult:
    return build_user_vectors_table(ctx.spark, ctx.warehouse, ctx.params)


def run_lookalike_users(ctx: JobContext) -> JobResult:
    return build_lookalike_table(ctx.spark, ctx.warehouse, ctx.params)
