"""Jobs: ``events`` to ``item_neighbors`` (i2i), then ``recall_items``; recall evaluation (docs/lookalike.md).

Each job runs on the engine ``recall.engine`` chooses: the Spark kernels
(:mod:`features.recall.kernels`) or the local ones (:mod:`features.recall.local`), same rows.
"""
from __future__ import annotations

import datetime as dt

from features.events import EVENTS
from features.lookalike.kernels import positive_column
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
from features.recall.kernels import build_item_neighbors, build_recall_items, popular_items
from features.recall.local import EVENT_COLUMNS, build_item_neighbors_local, build_recall_items_local, choose_engine
from features.timeutil import as_utc
from pipelines.cutoffs import committed_cutoffs, events_in, partitions_before, read_input, read_input_arrow, require_cutoff
from pipelines.family import JobContext, JobResult
from pipelines.recall.params import RecallSettings
from pipelines.spark import session_of
from pipelines.warehouse import Warehouse


def window_dates(start: dt.datetime, end: dt.datetime) -> list[str]:
    """The ``events`` partitions (UTC dates, ISO) that hold the instants of ``[start, end)``."""
    first, last = as_utc(start).date(), (as_utc(end) - dt.timedelta(microseconds=1)).date()
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _engine(warehouse: Warehouse, settings: RecallSettings, partitions: list[str]) -> tuple[str, int]:
    """``(engine, events read)`` of a recall job reading ``partitions`` of ``events`` (:func:`choose_engine`)."""
    n = events_in(warehouse, partitions)
    return choose_engine(settings.engine, n, settings.local_max_events), n


def build_item_neighbors_table(spark, warehouse: Warehouse, settings: RecallSettings) -> JobResult:
    """Rebuild ``item_neighbors`` as of ``settings.cutoff_ts``.

    Only the ``events`` partitions of the window ``[cutoff - window_days, cutoff)`` are read
    (the kernel uses no other event; ``event_date`` is the UTC date of ``event_ts``). The engine
    is ``settings.engine`` (``auto``: local up to ``local_max_events`` window events, counted
    from the manifest). ``spark`` is a session, or a callable returning one: the local engine
    never calls it. The engine and the events read are recorded in the producer and the stats.
    """
    cutoff = as_utc(settings.cutoff_ts)
    days = window_dates(cutoff - dt.timedelta(days=settings.window_days), cutoff)
    engine, n_events = _engine(warehouse, settings, days)
    producer = {
        "job": "build_item_neighbors_table", "cutoff_ts": settings.cutoff_ts.isoformat(),
        "window_days": str(settings.window_days), "similarity": settings.similarity,
        "engine": engine, "events_read": str(n_events),
    }
    if engine == "local":
        events = warehouse.read_arrow(EVENTS.name, columns=list(EVENT_COLUMNS), partitions=days)
        table = build_item_neighbors_local(events, settings.cutoff_ts, settings.params())
        manifest = warehouse.write_arrow(ITEM_NEIGHBORS, table, producer=producer)
    else:
        session = session_of(spark)
        events = warehouse.read_spark(session, EVENTS.name, partitions=days)
        df = build_item_neighbors(events, settings.cutoff_ts, settings.params())
        manifest = warehouse.write_spark(df.select(*ITEM_NEIGHBORS.columns), ITEM_NEIGHBORS, producer=producer)
    stats = {"cutoff_ts": settings.cutoff_ts.isoformat(), "engine": engine, "events_read": n_events}
    return JobResult({ITEM_NEIGHBORS.name: manifest}, {ITEM_NEIGHBORS.name: stats})


def build_recall_table(spark, warehouse: Warehouse, settings: RecallSettings) -> JobResult:
    """Rebuild ``recall_items`` from ``events`` and the committed ``item_neighbors`` (which must
    have been built as of ``settings.cutoff_ts``).

    Reads the ``events`` partitions up to the cutoff's date. The engine is chosen as for
    :func:`build_item_neighbors_table`, on those events; ``spark`` likewise may be a callable."""
    days = partitions_before(warehouse, settings.cutoff_ts)
    engine, n_events = _engine(warehouse, settings, days)
    params = settings.params()
    if engine == "local":
        neighbors, provenance = read_input_arrow(
            warehouse, ITEM_NEIGHBORS.name, settings.cutoff_ts, columns=["item_id", "neighbor_item_id", "similarity"]
        )
        events = warehouse.read_arrow(EVENTS.name, columns=list(EVENT_COLUMNS), partitions=days)
        out = build_recall_items_local(events, neighbors, settings.cutoff_ts, params)
    else:
        session = session_of(spark)
        neighbors, provenance = read_input(session, warehouse, ITEM_NEIGHBORS.name, settings.cutoff_ts)
        events = warehouse.read_spark(session, EVENTS.name, partitions=days)
        out = build_recall_items(events, neighbors, settings.cutoff_ts, params).select(*RECALL_ITEMS.columns)
    producer = {
        "job": "build_recall_table", "cutoff_ts": settings.cutoff_ts.isoformat(),
        "size": str(settings.size), "fill": settings.fill, "engine": engine, "events_read": str(n_events),
        **provenance,  # what it was built from: the invariant check compares it with the settings
    }
    if engine == "local":
        manifest = warehouse.write_arrow(RECALL_ITEMS, out, producer=producer)
    else:
        manifest = warehouse.write_spark(out, RECALL_ITEMS, producer=producer)
    stats = {"cutoff_ts": settings.cutoff_ts.isoformat(), "engine": engine, "events_read": n_events}
    return JobResult({RECALL_ITEMS.name: manifest}, {RECALL_ITEMS.name: stats})


def evaluate_recall(spark, warehouse: Warehouse, settings: RecallSettings, horizon: dt.timedelta = dt.timedelta(days=1)) -> dict:
    """Hit rate of the committed ``recall_items`` on the positives in ``[cutoff, cutoff + horizon)``
    against a popularity pool of the same size (same exclusion of items seen before the cutoff).

    Targets: (user, item) positives after the cutoff for items the user had not seen before it,
    for users with a recall pool. ``item_recall`` = targets found in the pool / targets;
    ``user_hit_rate`` = users with at least one target in the pool / users with a target.
    The committed ``recall_items`` must have been built as of ``settings.cutoff_ts``
    (:class:`~pipelines.cutoffs.CutoffMismatchError` otherwise).
    """
    from pyspark.sql import functions as F

    require_cutoff(RECALL_ITEMS.name, committed_cutoffs(spark, warehouse, RECALL_ITEMS.name), settings.cutoff_ts)
    events = warehouse.read_spark(spark, EVENTS.name)
    cutoff = settings.cutoff_ts
    params = settings.params()
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
        "pool_size": settings.size,
        "users_with_pool": users.count(),
        "target_users": n_users,
        "targets": n_targets,
        "recall_item_recall": rh / n_targets if n_targets else 0.0,
        "recall_user_hit_rate": ru / n_users if n_users else 0.0,
        "popular_item_recall": ph / n_targets if n_targets else 0.0,
        "popular_user_hit_rate": pu / n_users if n_users else 0.0,
    }


def run_item_neighbors(ctx: JobContext) -> JobResult:
    return build_item_neighbors_table(lambda: ctx.spark, ctx.warehouse, ctx.params)


def run_recall_items(ctx: JobContext) -> JobResult:
    return build_recall_table(lambda: ctx.spark, ctx.warehouse, ctx.params)
