"""Job: events (or the training rows of ``user_sequences``) and ``items`` to ``item_codes`` (docs/fair.md).

Spark selects the interactions before the cutoff and de-duplicates the (user, item) pairs; the
embedding and residual k-means run on the driver (NumPy, faiss when installed): an item catalogue
of up to a few hundred thousand rows times ``dim`` floats fits in memory, and the synthetic demo's
~2,000 items take about a second.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.dimensions import ITEMS
from features.events import EVENTS
from features.item_codes import ITEM_CODES
from features.item_codes.embedding import combine, content_embedding, cooccurrence_embedding
from features.item_codes.kernels import item_codes_table
from features.sequences import USER_SEQUENCES
from pipelines.family import JobContext, JobResult
from pipelines.item_codes.params import ItemCodeSettings
from pipelines.warehouse import Warehouse


def interactions(spark, warehouse: Warehouse, settings: ItemCodeSettings) -> tuple[pd.DataFrame, dict[str, str]]:
    """Distinct (user_id, item_id) pairs before the cutoff, and the version read."""
    from pyspark.sql import functions as F

    cutoff = F.lit(settings.cutoff_ts)
    if settings.fit_on == "user_sequences_train":
        version = warehouse.current_version(USER_SEQUENCES.name)
        df = (warehouse.read_spark(spark, USER_SEQUENCES.name, version=version)
              .where((F.col("split") == "train") & (F.col("target_ts") < cutoff))
              .select("user_id", F.col("target_item_id").alias("item_id")))
        record = {"fit_on": settings.fit_on, f"{USER_SEQUENCES.name}_version": str(version)}
    else:
        version = warehouse.current_version(EVENTS.name)
        df = warehouse.read_spark(spark, EVENTS.name, version=version).where(F.col("event_ts") < cutoff).select("user_id", "item_id")
        record = {"fit_on": settings.fit_on, f"{EVENTS.name}_version": str(version)}
    return df.distinct().toPandas(), record


def catalogue(spark, warehouse: Warehouse) -> tuple[pd.DataFrame | None, set[str]]:
    """(the ``items`` table or ``None``, the catalogue's item ids: ``items`` when committed, else the events' items)."""
    if warehouse.exists(ITEMS.name):
        items = warehouse.read_arrow(ITEMS.name).to_pandas()
        return items, set(items["item_id"].astype(str))
    ids = warehouse.read_spark(spark, EVENTS.name).select("item_id").distinct().toPandas()["item_id"]
    return None, set(ids.astype(str))


def build_item_codes_table(spark, warehouse: Warehouse, settings: ItemCodeSettings) -> JobResult:
    """Rebuild ``item_codes`` as of ``settings.cutoff_ts`` (a resolved section)."""
    if settings.cutoff_ts is None:
        raise ValueError("item_codes settings are not resolved: call resolved(settings.lookalike) first")
    pairs, record = interactions(spark, warehouse, settings)
    items_frame, known = catalogue(spark, warehouse)
    if settings.embedding != "cooccurrence" and items_frame is None:
        raise ValueError(f"item_codes.embedding: {settings.embedding} needs the items table, which is not committed")
    seen = sorted(set(pairs["item_id"].astype(str)) & known)
    ids = np.array(sorted(known) if settings.embedding != "cooccurrence" else seen, dtype=object)
    index = pd.Index(ids, dtype=object)
    pairs = pairs[pairs["item_id"].isin(index)]
    blocks = []
    if settings.embedding in ("cooccurrence", "both"):
        u = pd.factorize(pairs["user_id"], sort=True)[0]
        blocks.append((cooccurrence_embedding(u, index.get_indexer(pairs["item_id"]), len(ids), settings.dim), 1.0))
    if settings.embedding in ("content", "both"):
        blocks.append((content_embedding(items_frame, ids, max_categories=settings.max_categories), settings.content_weight))
    x = combine(blocks) if len(blocks) > 1 else blocks[0][0]
    record.update({"dim": settings.dim, "content_weight": settings.content_weight, "max_categories": settings.max_categories})
    table, stats = item_codes_table(ids, x, settings.code_params(), settings.embedding, settings.cutoff_ts, record)
    producer = {
        "job": "build_item_codes_table", "cutoff_ts": settings.cutoff_ts.isoformat(),
        "codebook_version": stats["codebook_version"], "backend": stats["backend"],
        "levels": str(settings.levels), "codebook_size": str(settings.codebook_size), **record,
    }
    producer = {k: str(v) for k, v in producer.items()}
    manifest = warehouse.write_arrow(ITEM_CODES, table, producer=producer)
    return JobResult({ITEM_CODES.name: manifest}, {ITEM_CODES.name: {**stats, "cutoff_ts": settings.cutoff_ts.isoformat(),
                                                                     "codes_used_per_level": str(stats["codes_used_per_level"])}})


def run_item_codes(ctx: JobContext) -> JobResult:
    return build_item_codes_table(ctx.spark, ctx.warehouse, ctx.params)
