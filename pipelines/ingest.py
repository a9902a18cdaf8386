"""Ingestion jobs: source files to ``events`` and ``rejected_events``; ``users`` and ``items``.

``ingest_events`` runs in two steps:

1. **Stage** (:mod:`pipelines.beam_ingest`, or the same logic on Spark with
   ``engine="spark"``): read every source file through its adapter, validate each record,
   assign stable event ids, de-duplicate within the run, and write accepted rows and dead
   letters to a stage directory, checking ``records in = accepted + rejected + duplicates``.
2. **Commit** (Spark + the warehouse's atomic commit): keep the accepted rows of the run's date
   window, merge them with the committed partitions they touch (rows already present are
   counted, not added, so re-runs and overlapping files add nothing), commit ``events``,
   append the dead letters to ``rejected_events`` (idempotent by ``rejection_id``) and record
   the run in ``ingest_runs``. The counts must balance again, with every record read accounted
   for as new, already present, outside the window, rejected or duplicate; otherwise nothing is
   committed.

``repeated_lines`` says what an exact repeat of a line within one file is: ``duplicate`` (the
default; a ``duplicate`` dead letter) or ``distinct`` (an event of its own, for parity with the
published code). The mode is recorded in the producer of every ``events`` version; re-ingesting
a source under the other mode is refused, since the events already committed were counted the
other way.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field

import pyarrow as pa

from features.dimensions import ITEMS, USERS
from features.events import EVENTS, check_repeated_lines, deduplicate_events, to_events
from features.ingest_runs import INGEST_RUNS
from features.layout import Manifest
from features.rejections import REJECTED_EVENTS, REJECTED_RECORD_SCHEMA
from pipelines.beam_ingest import ACCEPTED_SCHEMA, IngestBalanceError, run_stage
from pipelines.settings import IngestRules
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


class IngestModeError(ValueError):
    """A source is re-ingested with another ``repeated_lines`` mode than its committed events."""


@dataclass
class IngestResult:
    """What an ingestion run read, routed and committed."""

    run_id: str
    source: str
    files: list[str]
    records_in: int
    new_events: int
    already_present: int
    outside_window: int
    rejected: int
    duplicates: int
    by_reason: dict[str, int]
    manifest: Manifest
    rejected_manifest: Manifest | None
    partitions: list[str] = field(default_factory=list)

    @property
    def in_window(self) -> int:
        return self.new_events + self.already_present

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_reason.items())) or "none"
        return (
            f"{self.source}: {self.records_in:,} records read from {len(self.files)} file(s): "
            f"{self.new_events:,} new events, {self.already_present:,} already present, "
            f"{self.outside_window:,} outside the window, {self.rejected:,} rejected, "
            f"{self.duplicates:,} duplicates (by reason: {reasons}); "
            f"events v{self.manifest.version} holds {self.manifest.row_count:,} rows"
        )


def _stage_dir(warehouse: Warehouse, stage_root: str | None) -> str:
    """A fresh stage directory: under ``stage_root``, else the warehouse's ``_tmp`` (local
    warehouse) or the system temp dir."""
    base = stage_root or (os.path.join(warehouse.root, "_tmp") if warehouse.is_local else None)
    if base:
        os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix="ingest-", dir=base)


def ingest_events(
    spark,
    warehouse: Warehouse,
    adapter: SourceAdapter,
    window: DateWindow | None = None,
    chunk_rows: int = 500_000,
    run_id: str | None = None,
    rules: IngestRules | None = None,
    engine: str = "beam",
    runner: str = "DirectRunner",
    runner_args: list[str] | None = None,
    stage_root: str | None = None,
    now: dt.datetime | None = None,
    repeated_lines: str = "duplicate",
) -> IngestResult:
    """Ingest the adapter's source files into ``events`` (see the module docstring).

    ``window``: only events whose UTC date falls in it are taken, and exactly the window's
    partitions are (re)committed (a daily partition or a backfill range); without a window every
    date present is committed. ``engine``: ``beam`` (with ``runner``) or ``spark``.
    ``repeated_lines``: ``duplicate`` or ``distinct`` (see the module docstring).
    """
    from pyspark.sql import functions as F

    run_id = run_id or uuid.uuid4().hex
    started = dt.datetime.now(dt.timezone.utc)
    rules = rules or IngestRules()
    check_repeated_lines(repeated_lines)
    _check_same_mode(warehouse, adapter.name, repeated_lines)
    files = adapter.event_files()
    stage_dir = _stage_dir(warehouse, stage_root)
    try:
        if engine == "beam":
            counts = run_stage(
                files, stage_dir, adapter.name, adapter.config, rules, chunk_rows, runner, runner_args, now, repeated_lines
            )
        elif engine == "spark":
            from pipelines.spark_stage import run_stage_spark

            counts = run_stage_spark(
                spark, files, stage_dir, adapter.name, adapter.config, rules, chunk_rows, now, repeated_lines
            )
        else:
            raise ValueError(f"unknown ingestion engine {engine!r} (beam or spark)")

        accepted = _read_stage(spark, os.path.join(stage_dir, "accepted"), ACCEPTED_SCHEMA)
        new = to_events(accepted)
        if window is not None:
            new = new.where((F.col("event_date") >= F.lit(window.start)) & (F.col("event_date") < F.lit(window.end)))
            partitions = window.dates()
        else:
            partitions = sorted(r[0].isoformat() for r in new.select("event_date").distinct().collect())
        new = new.persist()
        in_window = new.count()
        combined, existing_rows = new, 0
        if warehouse.exists(EVENTS.name) and partitions:
            existing = warehouse.read_spark(spark, EVENTS.name, partitions=partitions)
            existing_rows = existing.count()
            combined = existing.select(*EVENTS.columns).unionByName(new)
        result = deduplicate_events(combined).persist()
        kept = result.count()
        new_events = kept - existing_rows
        already_present = in_window - new_events
        outside = counts.accepted - in_window
        if counts.records_in != new_events + already_present + outside + counts.rejected + counts.duplicates:
            raise IngestBalanceError(f"commit step lost records: {counts} vs new {new_events}, present {already_present}")
        manifest = warehouse.write_spark(
            result,
            EVENTS,
            replace_partitions=partitions,
            producer={"job": "ingest_events", "source": adapter.name, "run_id": run_id, "repeated_lines": repeated_lines},
        )
        new.unpersist()
        result.unpersist()
        rejected_manifest = commit_rejections(warehouse, os.path.join(stage_dir, "rejected"), run_id, started)
        finished = dt.datetime.now(dt.timezone.utc)
        outcome = IngestResult(
            run_id=run_id,
            source=adapter.name,
            files=files,
            records_in=counts.records_in,
            new_events=new_events,
            already_present=already_present,
            outside_window=outside,
            rejected=counts.rejected,
            duplicates=counts.duplicates,
            by_reason=counts.by_reason,
            manifest=manifest,
            rejected_manifest=rejected_manifest,
            partitions=partitions,
        )
        record_run(warehouse, outcome, started, finished, window, f"{engine}:{runner}" if engine == "beam" else engine)
        return outcome
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)


def ingest_with_settings(spark, warehouse: Warehouse, adapter: SourceAdapter, settings, window: DateWindow | None = None, run_id: str | None = None) -> IngestResult:
    """:func:`ingest_events` with the rules, engine and runner of the project settings."""
    return ingest_events(
        spark,
        warehouse,
        adapter,
        window=window,
        chunk_rows=settings.ingest_chunk_rows,
        run_id=run_id,
        rules=settings.rules,
        engine=settings.ingest.engine,
        runner=settings.ingest.runner,
        runner_args=list(settings.ingest.runner_args),
        stage_root=settings.ingest.stage_root,
        repeated_lines=settings.ingest.repeated_lines,
    )


def _check_same_mode(warehouse: Warehouse, source: str, repeated_lines: str) -> None:
    """Refuse to re-ingest ``source`` under another ``repeated_lines`` mode than the one its
    committed events were ingested with (recorded in the producer of the ``events`` version its
    last run wrote). An ``ingest_events`` version that records no mode was written before the
    setting existed, when every repeat was an event: it counts as ``distinct``."""
    if not warehouse.exists(EVENTS.name):
        return
    producer = warehouse.manifest(EVENTS.name).producer
    recorded = producer.get("repeated_lines") or ("distinct" if producer.get("job") == "ingest_events" else None)
    if producer.get("source") == source and recorded and recorded != repeated_lines:
        raise IngestModeError(
            f"source {source!r} was ingested into {warehouse.uri} with ingest.repeated_lines: {recorded}; "
            f"this run uses {repeated_lines}: keep {recorded}, or ingest into a fresh warehouse"
        )


def _read_stage(spark, path: str, schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    from pipelines.spark import spark_path

    files = [f for f in (os.listdir(path) if os.path.isdir(path) else []) if f.endswith(".parquet")]
    if not files:
        return spark.createDataFrame([], from_arrow_schema(schema))
    return spark.read.schema(from_arrow_schema(schema)).parquet(*[spark_path(os.path.join(path, f)) for f in sorted(files)])


def commit_rejections(warehouse: Warehouse, rejected_dir: str, run_id: str, rejected_at: dt.datetime) -> Manifest | None:
    """Append a run's dead letters to ``rejected_events`` (partition: the run's UTC date).

    A dead letter whose ``rejection_id`` is already committed (the same bad record of the same
    file, rejected by an earlier run) is not added again. Dead letters are few, so this uses
    Arrow, not Spark. Returns the table's manifest (an empty first version on a clean run).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from features.rejections import to_rejected_events

    files = sorted(f for f in (os.listdir(rejected_dir) if os.path.isdir(rejected_dir) else []) if f.endswith(".parquet"))
    parts = [pq.read_table(os.path.join(rejected_dir, f)).cast(REJECTED_RECORD_SCHEMA) for f in files]
    letters = pa.concat_tables(parts) if parts else REJECTED_RECORD_SCHEMA.empty_table()
    exists = warehouse.exists(REJECTED_EVENTS.name)
    if letters.num_rows == 0:
        if exists:
            return warehouse.manifest(REJECTED_EVENTS.name)
        # The first clean run still commits an empty table, so readers always find one.
        return warehouse.write_arrow(
            REJECTED_EVENTS, REJECTED_EVENTS.schema.empty_table(), replace_partitions=[],
            producer={"job": "ingest_events", "run_id": run_id},
        )
    rows = to_rejected_events(letters, run_id, rejected_at)
    partition = rows.column("rejected_date")[0].as_py().isoformat()
    if exists:
        committed = warehouse.read_arrow(REJECTED_EVENTS.name, columns=["rejection_id"]).column("rejection_id")
        rows = rows.filter(pc.invert(pc.is_in(rows.column("rejection_id"), value_set=committed)))
        if rows.num_rows == 0:
            return warehouse.manifest(REJECTED_EVENTS.name)
        same_day = warehouse.read_arrow(REJECTED_EVENTS.name, partitions=[partition])
        rows = pa.concat_tables([same_day.cast(REJECTED_EVENTS.schema), rows])
    return warehouse.write_arrow(
        REJECTED_EVENTS,
        rows,
        replace_partitions=[partition],
        producer={"job": "ingest_events", "run_id": run_id},
    )


def record_run(warehouse: Warehouse, r: IngestResult, started, finished, window: DateWindow | None, runner: str) -> Manifest:
    """Append the run's counts to ``ingest_runs``."""
    row = {
        "run_id": r.run_id,
        "source": r.source,
        "started_at": started,
        "finished_at": finished,
        "window_start": window.start if window else None,
        "window_end": window.end if window else None,
        "runner": runner,
        "files": len(r.files),
        "records_in": r.records_in,
        "new_events": r.new_events,
        "already_present": r.already_present,
        "outside_window": r.outside_window,
        "rejected": r.rejected,
        "duplicates": r.duplicates,
        "counts_by_reason": json.dumps(r.by_reason, sort_keys=True),
        "events_version": r.manifest.version,
    }
    new = pa.Table.from_pylist([row], schema=INGEST_RUNS.schema)
    if warehouse.exists(INGEST_RUNS.name):
        new = pa.concat_tables([warehouse.read_arrow(INGEST_RUNS.name).cast(INGEST_RUNS.schema), new])
    return warehouse.write_arrow(INGEST_RUNS, new, producer={"job": "ingest_events", "run_id": r.run_id})
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
