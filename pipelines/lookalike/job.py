"""Jobs: ``events`` + ``users`` to ``user_vectors``, then ``lookalike_users`` (docs/lookalike.md)."""
from __future__ import annotations

from features.dimensions import USERS
from features.events import EVENTS
from features.lookalike import LOOKALIKE_USERS, USER_VECTORS
from features.lookalike.kernels import build_user_vectors, hnsw_topk, lookalike_topk, vectors_matrix
from features.lookalike.vectors_local import EVENT_COLUMNS, NeedsSpark, build_user_vectors_local
from features.lookalike.vectors_local import choose_engine as choose_vectors_engine
from pipelines.cutoffs import events_in, partitions_before, read_input
from pipelines.family import JobContext, JobResult
from pipelines.lookalike.params import LookalikeSettings
from pipelines.spark import session_of
from pipelines.warehouse import Warehouse


def _producer(s: LookalikeSettings, job: str) -> dict[str, str]:
    return {"job": job, "cutoff_ts": s.cutoff_ts.isoformat()}


def build_user_vectors_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> JobResult:
    """Rebuild ``user_vectors`` as of ``settings.cutoff_ts`` from ``events`` (and ``users`` if committed).

    Reads the ``events`` partitions up to the cutoff's UTC date. The engine is
    ``settings.vectors_engine``: ``auto`` builds locally (:mod:`features.lookalike.vectors_local`)
    up to ``vectors_local_max_events`` events read (counted from the manifest) and where the local
    engine can, else with the Spark kernels. ``spark`` is a session, or a callable returning one:
    a local build never calls it. The producer and the stats record ``vectors_engine``,
    ``events_read``, and (``auto`` falling back to Spark) ``vectors_engine_fallback``.
    """
    cutoff = settings.cutoff_ts
    days = partitions_before(warehouse, cutoff)
    n_events = events_in(warehouse, days)
    engine = choose_vectors_engine(settings.vectors_engine, n_events, settings.vectors_local_max_events)
    params = settings.vector_params()
    als: dict = {}
    record: dict = {}
    table = None
    if engine == "local":
        try:
            users = warehouse.read_arrow(USERS.name) if warehouse.exists(USERS.name) else None
            events = warehouse.read_arrow(EVENTS.name, columns=list(EVENT_COLUMNS), partitions=days)
            table = build_user_vectors_local(events, users, cutoff, params, report=als)
        except NeedsSpark as why:
            if settings.vectors_engine == "local":
                raise ValueError(f"lookalike.vectors_engine local cannot build these vectors: {why}") from None
            engine, record["vectors_engine_fallback"] = "spark", str(why)
            als = {}
    record.update(vectors_engine=engine, events_read=n_events)
    producer = {
        **_producer(settings, "build_user_vectors_table"),
        "als_rank": str(settings.als_rank),
        **{k: str(v) for k, v in {**als, **record}.items()},  # als_entries, als_engine, the vectors engine
    }
    if table is not None:
        manifest = warehouse.write_arrow(USER_VECTORS, table, producer=producer)
    else:
        session = session_of(spark)
        events = warehouse.read_spark(session, EVENTS.name, partitions=days)
        users = warehouse.read_spark(session, USERS.name) if warehouse.exists(USERS.name) else None
        df = build_user_vectors(events, users, cutoff, params, report=als)
        producer.update({k: str(v) for k, v in als.items()})
        manifest = warehouse.write_spark(df.select(*USER_VECTORS.columns), USER_VECTORS, producer=producer)
    return JobResult({USER_VECTORS.name: manifest},
                     {USER_VECTORS.name: {"cutoff_ts": cutoff.isoformat(), **als, **record}})


def build_lookalike_table(spark, warehouse: Warehouse, settings: LookalikeSettings) -> JobResult:
    """Rebuild ``lookalike_users`` from the committed ``user_vectors`` with the ``candidates`` engine.

    ``hnsw``: the vectors of the version checked by :func:`~pipelines.cutoffs.read_input` are
    read from its files as Arrow (no Spark ``collect()``), the faiss index is built once in the
    driver and queried per partition (:func:`features.lookalike.hnsw.hnsw_topk`). ``simhash``: the
    Spark DataFrame goes to :func:`features.lookalike.lsh.lookalike_topk`. The engine's stats go
    into the commit's producer (``candidates`` names the engine) and into the figures, prefixed
    ``hnsw_`` or ``lsh_``, with the engine-neutral ``candidates``, ``pairs_evaluated`` and,
    when sampled, ``recall_estimate`` and ``recall_sample_users``.
    """
    from pyspark.sql import functions as F

    vectors, provenance = read_input(spark, warehouse, USER_VECTORS.name, settings.cutoff_ts)
    if settings.candidates == "hnsw":
        version = int(provenance[f"{USER_VECTORS.name}_version"])
        ids, mat = vectors_matrix(warehouse.read_arrow(USER_VECTORS.name, version=version, columns=["user_id", "vector"]))
        out, stats = hnsw_topk(spark, ids, mat, settings.hnsw_params(), settings.cutoff_ts)
        del mat
        prefix = "hnsw"
    else:
        out, stats = lookalike_topk(vectors, settings.lsh_params(), settings.cutoff_ts)
        stats = {"candidates": "simhash", **stats}
        prefix = "lsh"
    out = out.persist()
    stats["pairs_evaluated"] = int(out.where(F.col("rank") == 1).agg(F.sum("n_candidates")).collect()[0][0] or 0)
    producer = {
        **_producer(settings, "build_lookalike_table"),
        **{k: str(v) for k, v in stats.items()},
        **provenance,  # what it was built from: the invariant check compares it with the settings
    }
    manifest = warehouse.write_spark(out.select(*LOOKALIKE_USERS.columns), LOOKALIKE_USERS, producer=producer)
    out.unpersist()
    neutral = {k: stats[k] for k in ("candidates", "pairs_evaluated", "recall_estimate", "recall_sample_users") if k in stats}
    figures = {"cutoff_ts": settings.cutoff_ts.isoformat(), **neutral,
               **{f"{prefix}_{k}": v for k, v in stats.items() if k != "candidates"}}
    return JobResult({LOOKALIKE_USERS.name: manifest}, {LOOKALIKE_USERS.name: figures})


def lsh_recall_estimate(warehouse: Warehouse) -> tuple[float | None, int]:
    """``(recall_estimate, recall_sample_users)`` recorded by the current ``lookalike_users``
    commit: the recall@k on the held-out sample (for SimHash, users that did not choose the
    bands), whichever engine built it (``(None, 0)`` when that build sampled no users)."""
    producer = warehouse.manifest(LOOKALIKE_USERS.name).producer
    if "recall_estimate" not in producer:
        return None, 0
    return float(producer["recall_estimate"]), int(producer["recall_sample_users"])


def lsh_recall_summary(warehouse: Warehouse, settings: LookalikeSettings) -> str | None:
    """One line on the current ``lookalike_users`` build's held-out recall against the target
    of the engine that built it (``None`` when the table is not committed)."""
    if not warehouse.exists(LOOKALIKE_USERS.name):
        return None
    estimate, sample = lsh_recall_estimate(warehouse)
    producer = warehouse.manifest(LOOKALIKE_USERS.name).producer
    if producer.get("candidates") == "hnsw":
        target, sample_key = settings.hnsw.target_recall, "hnsw.recall_sample"
        chosen = f" chosen by hnsw.auto_ef_search ({producer['ef_search_tried']})" if "ef_search_tried" in producer else ""
        how = (f"HNSW candidates (m {producer.get('m', '?')}, ef_construction {producer.get('ef_construction', '?')}, "
               f"ef_search {producer.get('ef_search', '?')}{chosen})")
    else:  # simhash (a build before the engine was recorded was a SimHash one)
        target, sample_key = settings.lsh.target_recall, "lsh.recall_sample"
        chosen = f" chosen by lsh.auto_bands ({producer['bands_tried']})" if "bands_tried" in producer else ""
        how = f"SimHash candidates, {producer.get('bands', '?')} bands{chosen}"
    if estimate is None:
        return f"look-alike users: recall not estimated ({sample_key} 0 or fewer than 2 users); {how}"
    verdict = "reaches" if estimate >= target else "is BELOW"
    return (f"look-alike users: held-out recall@{settings.k} {estimate:.3f} on {sample:,} users {verdict} the target "
            f"{target}; {how}")


def run_user_vectors(ctx: JobContext) -> JobResult:
    return build_user_vectors_table(lambda: ctx.spark, ctx.warehouse, ctx.params)


def run_lookalike_users(ctx: JobContext) -> JobResult:
    return build_lookalike_table(ctx.spark, ctx.warehouse, ctx.params)
