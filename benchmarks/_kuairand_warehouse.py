"""The KuaiRand slice ingested once into a benchmark warehouse (shared by the results scripts)."""
from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "kuairand-pure-slice"


def prepare_kuairand(root: Path, tables: tuple[str, ...] = ("events", "items"), data: Path = SHARED_DATA,
                     config: Path = REPO / "configs" / "kuairand.yaml") -> str:
    """The warehouse URI ``<root>/kuairand`` holding ``tables`` of the KuaiRand slice, ingested on
    first use with the settings of ``config`` (``events`` by the project's ingestion, ``items``
    and ``users`` as dimensions). Exits with a message when the slice is absent."""
    from trainers.tables import snapshot

    uri = str(root / "kuairand")
    missing = []
    for table in tables:
        try:
            snapshot(uri, table)
        except FileNotFoundError:
            missing.append(table)
    if not missing:
        return uri
    if not data.is_dir():
        raise SystemExit(f"KuaiRand slice not found at {data} (see ../shared/data/README.md)")
    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.settings import SourceConfig, SparkSettings, load_settings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark
    from pipelines.warehouse import Warehouse

    project = load_settings(config)
    source = next((c for c in project.sources.values() if c.kind == "kuairand"), SourceConfig(kind="kuairand", path=""))
    adapter = adapter_for("kuairand", source.model_copy(update={"path": str(data.resolve())}))
    wh = Warehouse(uri)
    t0 = time.perf_counter()
    if "events" in missing:
        spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="3g"))
        r = ingest_with_settings(spark, wh, adapter, project)
        print(f"ingested events: {r.manifest.row_count:,} rows, {r.rejected} rejected", flush=True)
    for table in ("items", "users"):
        if table in missing:
            ingest_dimension(wh, adapter, table)
    print(f"warehouse {uri} built in {time.perf_counter() - t0:.0f} s", flush=True)
    return uri
