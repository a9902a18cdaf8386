"""Ingestion jobs: source files to the ``events``, ``users`` and ``items`` tables.

``ingest_events`` streams a source's files through its adapter into a staging area (bounded
memory, one chunk at a time), then Spark assigns the stable event ids, de-duplicates, merges
with the committed partitions it touches, and commits them atomically. Re-running it over the
same files gives the same rows. The validating Beam pipeline with dead letters replaces the
streaming step later; the tables and the commit stay as they are.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from features.dimensions import ITEMS, USERS
from features.events import EVENTS, STAGED_EVENT_SCHEMA, assign_event_ids, deduplicate_events
from features.layout import Manifest
from pipelines.sources import SourceAdapter
from pipelines.warehouse import Warehouse


@dataclass(frozen=True)
class DateWindow:
    """A half-open range of UTC dates ``[start, end)``."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty date window: {self.start} .. {self.end}")

    def dates(self) -> list[str]:
        days = (self.end - self.start).days
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(days)]


@dataclass
class IngestResult:
    """What an ingestion run read and committed."""

    source: str
    files: list[str]
    records_in: int
    in_window: int
    duplicates: int
    new_events: int
    manifest: Manifest
    partitions: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.source}: {self.records_in:,} records read from {len(self.files)} file(s); "
            f"{self.in_window:,} in window, {self.duplicates:,} duplicates, {self.new_events:,} new events; "
            f"events v{self.manifest.version} holds {self.manifest.row_count:,} rows"
        )


def stage_events(adapter: SourceAdapter, warehouse: Warehouse, stage_path: str, chunk_rows: int) -> tuple[list[str], int]:
    """Stream every source file through the adapter into Parquet files under ``stage_path``."""
    files = adapter.event_files()
    warehouse.fs.makedirs(stage_path, exist_ok=True)
    total = 0
    for i, path in enumerate(files):
        with pq.ParquetWriter(f"{stage_path}/file-{i:05d}.parquet", STAGED_EVENT_SCHEMA, filesystem=warehouse.fs) as writer:
            for chunk in adapter.read_events(path, chunk_rows=chunk_rows):
                writer.write_table(chunk.cast(STAGED_EVENT_SCHEMA))
                total += chunk.num_rows
    return files, total


def ingest_events(
    spark,
    warehouse: Warehouse,
    adapter: SourceAdapter,
    window: DateWindow | None = None,
    chunk_rows: int = 500_000,
    run_id: str | None = None,
) -> IngestResult:
    """Ingest the adapter's source files into ``events``.

    ``window``: only events whose UTC date falls in it are taken, and exactly the window's
    partitions are (re)committed (a daily asset partition or a backfill range). Without a
    window every date present in the source is committed. Rows already in ``events`` with the
    same ``event_id`` are kept once, so re-runs and overlapping files add nothing.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    stage_path = f"{warehouse.root}/_tmp/ingest-{uuid.uuid4().hex[:12]}"
    try:
        files, records_in = stage_events(adapter, warehouse, stage_path, chunk_rows)
        staged = spark.read.schema(from_arrow_schema(STAGED_EVENT_SCHEMA)).parquet(warehouse.spark_uri(stage_path))
        new = assign_event_ids(staged)
        if window is not None:
            new = new.where((F.col("event_date") >= F.lit(window.start)) & (F.col("event_date") < F.lit(window.end)))
            partitions = window.dates()
        else:
            partitions = sorted(r[0].isoformat() for r in new.select("event_date").distinct().collect())
        new = new.persist()
        in_window = new.count()
        combined = new
        existing_rows = 0
        if warehouse.exists(EVENTS.name) and partitions:
            existing = warehouse.read_spark(spark, EVENTS.name, partitions=partitions)
            existing_rows = existing.count()
            combined = existing.select(*EVENTS.columns).unionByName(new)
        result = deduplicate_events(combined).persist()
        kept = result.count()
        manifest = warehouse.write_spark(
            result,
            EVENTS,
            replace_partitions=partitions,
            producer={"job": "ingest_events", "source": adapter.name, "run_id": run_id or ""},
        )
        new.unpersist()
        result.unpersist()
    finally:
        if warehouse.fs.exists(stage_path):
            warehouse.fs.rm(stage_path, recursive=True)
    return IngestResult(
        source=adapter.name,
        files=files,
        records_in=records_in,
        in_window=in_window,
        duplicates=existing_rows + in_window - kept,
        new_events=kept - existing_rows,
        manifest=manifest,
        partitions=partitions,
    )


def ingest_dimension(warehouse: Warehouse, adapter: SourceAdapter, table: str) -> Manifest | None:
    """Commit the adapter's ``users`` or ``items`` file, merged by key with the committed rows.

    Rows of the new file win over committed rows with the same key; committed rows of other
    keys are kept (a later source file may describe only new users). Returns ``None`` when the
    source has no such file.
    """
    contract = {USERS.name: USERS, ITEMS.name: ITEMS}[table]
    fresh = adapter.read_users() if table == USERS.name else adapter.read_items()
    if fresh is None:
        return None
    fresh = contract.conform(fresh)
    key = contract.key[0]
    fresh = _first_per_key(fresh, key)
    if warehouse.exists(table):
        old = warehouse.read_arrow(table)
        if old.schema.names == fresh.schema.names:
            import pyarrow.compute as pc

            keep_old = old.filter(pc.invert(pc.is_in(old.column(key), value_set=fresh.column(key))))
            fresh = pa.concat_tables([keep_old.cast(fresh.schema), fresh])
    fresh = fresh.sort_by(key)
    return warehouse.write_arrow(contract, fresh, producer={"job": f"ingest_{table}", "source": adapter.name})


def _first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the first row of each key (files list each id once; this guards against repeats)."""
    import pyarrow.compute as pc

    idx = pa.array(range(table.num_rows), pa.int64())
    firsts = table.append_column("_i", idx).group_by(key, use_threads=False).aggregate([("_i", "min")])
    keep = pc.is_in(idx, value_set=firsts.column("_i_min"))
    return table.filter(keep)
