"""Warehouses with ``user_sequences`` for the SASRec benchmarks (ML-100K and the KuaiRand slice).

Ingests a shared data set into a local warehouse and builds ``user_sequences`` (leave-one-out,
max_len 50) once; later calls reuse the committed table. As the official preprocessing does:

* ML-100K: every rating is an event (every user already has at least 20).
* KuaiRand: click sequences (``is_click``) with the 5-core filter (users and items with at least 5
  clicks, iterated to a fixed point: 62,720 clicks of 7,166 users on 2,208 items on the slice),
  exact repeated lines kept as distinct events (``ingest.repeated_lines: distinct``), as the
  official code reads the CSV.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_ROOT = REPO / "var" / "sasrec"
DATASETS = {"ml-100k": ("movielens", "ml-100k"), "kuairand": ("kuairand", "kuairand-pure-slice")}
#: ``sequences`` settings of each data set (beyond leave-one-out and max_len 50).
SEQUENCE_OPTIONS = {
    "ml-100k": {},
    "kuairand": {"require_flags": ["is_click"], "k_core": {"min_user_events": 5, "min_item_events": 5}},
}


def warehouse_root(dataset: str, root: Path = DEFAULT_ROOT) -> str:
    return str(root / dataset)


def prepare(dataset: str, root: Path = DEFAULT_ROOT) -> str:
    """The warehouse URI holding ``user_sequences`` for ``dataset`` (built on first use)."""
    from trainers.tables import snapshot

    uri = warehouse_root(dataset, root)
    try:
        snapshot(uri, "user_sequences")
        return uri
    except FileNotFoundError:
        pass
    kind, folder = DATASETS[dataset]
    from pipelines.ingest import ingest_events
    from pipelines.sequences import build_sequences_table
    from pipelines.sequences import SequenceSettings
    from pipelines.settings import SourceConfig, SparkSettings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark
    from pipelines.warehouse import Warehouse

    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="3g"))
    wh = Warehouse(uri)
    adapter = adapter_for(dataset, SourceConfig(kind=kind, path=str(SHARED_DATA / folder)))
    # distinct: exact repeated lines stay separate events, as in the papers' code (docs/ingestion.md)
    ingest_events(spark, wh, adapter, chunk_rows=100_000, repeated_lines="distinct")
    build_sequences_table(spark, wh, SequenceSettings(max_len=50, split="leave_one_out", **SEQUENCE_OPTIONS[dataset]))
    return uri


if __name__ == "__main__":
    for name in sys.argv[1:] or list(DATASETS):
        print(name, prepare(name), flush=True)
