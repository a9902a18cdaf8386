"""The events job: stage the source, then commit new events, dead letters and the run record."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid

import pyarrow as pa

from features.events import EVENTS, check_repeated_lines, to_events
from features.ingest_runs import INGEST_RUNS
from features.layout import Manifest
from features.rejections import REJECTED_EVENTS, REJECTED_RECORD_SCHEMA
from features.timeutil import DateWindow
from pipelines.beam_ingest import (
    ACCEPTED_SCHEMA,
    IngestBalanceError,
    StageCounts,
    check_buckets,
    check_direct_workers,
    run_stage,
)
from pipelines.ingest.results import IngestModeError, IngestResult, _base
from pipelines.ingest.stage import clean_stale_stage_dirs, new_stage_dir, stage_base
from pipelines.sections import IngestRules
from pipelines.spark_stage import read_stage_dir as _read_stage
from pipelines.sources import SourceAdapter
from pipelines.warehouse import CommitConflict, Warehouse


_log = logging.getLogger("recfeat.ingest")
#: Tries of an append (``rejected_events``, ``ingest_runs``) that loses a commit race.
APPEND_TRIES = 3


# ---- the job ---------------------------------------------------------------------------------


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
    follow_symlinks: bool = False,
    buckets: int | None = None,
    direct_num_workers: int = 1,
    direct_running_mode: str = "in_memory",
) -> IngestResult:
    """Ingest the adapter's source files into ``events`` (see the module docstring).

    ``window``: only events whose UTC date falls in it are taken (a daily partition or a
    backfill range); without a window every date present is. Either way only the partitions
    that gain events are rewritten. ``engine``: ``beam`` (with ``runner``) or ``spark``.
    ``repeated_lines``: ``duplicate`` or ``distinct`` (see the module docstring).
    ``stage_root``: a local directory (``ValueError`` for another URI than ``file://``).
    ``follow_symlinks``: read source files that are symbolic links (else each is a
    ``symlink_refused`` dead letter). ``buckets``, ``direct_num_workers``,
    ``direct_running_mode``: how the Beam engine shuffles and how many DirectRunner workers it
    runs (:func:`pipelines.beam_ingest.run_stage`); they never change the result.
    """
    run_id = run_id or uuid.uuid4().hex
    started = dt.datetime.now(dt.timezone.utc)
    rules = rules or IngestRules()
    check_repeated_lines(repeated_lines)
    if engine not in ("beam", "spark"):
        raise ValueError(f"unknown ingestion engine {engine!r} (beam or spark)")
    if engine == "beam":  # before anything is read or staged
        check_direct_workers(direct_num_workers, direct_running_mode)
        if buckets is not None:
            check_buckets(buckets)
    base, own_folder = stage_base(warehouse, stage_root)
    _check_same_mode(warehouse, adapter.name, repeated_lines)
    files = adapter.event_files()
    clean_stale_stage_dirs(base, own_folder)
    stage = new_stage_dir(base, run_id)
    try:
        if engine == "beam":
            counts = run_stage(
                files, stage.path, adapter.name, adapter.config, rules, chunk_rows, runner, runner_args, now,
                repeated_lines, follow_symlinks, buckets, direct_num_workers, direct_running_mode,
            )  # fmt: skip
        else:
            from pipelines.spark_stage import run_stage_spark

            counts = run_stage_spark(
                spark, files, stage.path, adapter.name, adapter.config, rules, chunk_rows, now, repeated_lines,
                follow_symlinks,
            )  # fmt: skip
        outcome = _commit_events(spark, warehouse, adapter, stage.path, counts, window, run_id, repeated_lines, files)
        outcome.rejected_manifest = commit_rejections(warehouse, os.path.join(stage.path, "rejected"), run_id, started)
        finished = dt.datetime.now(dt.timezone.utc)
        record_run(warehouse, outcome, started, finished, window, f"{engine}:{runner}" if engine == "beam" else engine)
        return outcome
    finally:
        stage.remove()


def _commit_events(
    spark, warehouse: Warehouse, adapter: SourceAdapter, stage_dir: str, counts: StageCounts,
    window: DateWindow | None, run_id: str, repeated_lines: str, files: list[str],
) -> IngestResult:  # fmt: skip
    """The commit step (module docstring, step 2); ``rejected_manifest`` is filled in later."""
    from pyspark.sql import functions as F

    # Not cached: the staged Parquet is read again more cheaply than Spark's cache is built (the
    # dates need only `event_ts`; a first run then reads it once more to write).
    staged = to_events(_read_stage(spark, os.path.join(stage_dir, "accepted"), ACCEPTED_SCHEMA))
    cached = []
    try:
        # One aggregate gives the dates present and how many staged rows fall outside the window.
        per_date = _rows_per_date(staged)
        if window is not None:
            inside = (F.col("event_date") >= F.lit(window.start)) & (F.col("event_date") < F.lit(window.end))
            in_window = staged.where(inside)
            in_dates = {d: n for d, n in per_date.items() if d is not None and window.start <= d < window.end}
        else:
            in_window, in_dates = staged, per_date
        outside = sum(per_date.values()) - sum(in_dates.values())
        dates = sorted(d.isoformat() for d in in_dates)
        partitions = window.dates() if window is not None else dates

        # The concurrency hook: one version read, the anti-join and the rewrite both against it,
        # and the commit refused if another writer committed after it.
        base_version = warehouse.current_version(EVENTS.name)
        committed = None
        if base_version is not None and dates:
            committed = warehouse.read_spark(spark, EVENTS.name, version=base_version, partitions=dates)
            fresh = in_window.join(committed.select("event_id"), "event_id", "left_anti").persist()
            cached.append(fresh)
            fresh_dates = _rows_per_date(fresh)
        else:  # nothing committed on these dates: every row in the window is new
            fresh, fresh_dates = in_window, in_dates
        new_events = sum(fresh_dates.values())
        # The anti-join and its semi-join split the window's rows in two: what is not new is present.
        already_present = sum(in_dates.values()) - new_events

        accounted = new_events + already_present + outside
        if counts.accepted != accounted:
            raise IngestBalanceError(
                f"commit step: the stage accepted {counts.accepted:,} records but the commit accounts for "
                f"{accounted:,} (new {new_events:,} + already present {already_present:,} + outside the window "
                f"{outside:,}): {counts.accepted - accounted:+,} records between staging and commit; nothing was committed"
            )
        if counts.records_in != counts.accepted + counts.rejected + counts.duplicates:
            raise IngestBalanceError(
                f"records in {counts.records_in:,} != accepted {counts.accepted:,} + rejected {counts.rejected:,} "
                f"+ duplicates {counts.duplicates:,}; nothing was committed"
            )

        gaining = sorted(d.isoformat() for d, n in fresh_dates.items() if n)
        producer = {"job": "ingest_events", "source": adapter.name, "run_id": run_id, "repeated_lines": repeated_lines}
        if gaining or base_version is None:
            # A first run commits even when empty, so that readers always find the table.
            rows = fresh.select(*EVENTS.columns)
            if committed is not None and gaining:
                kept = committed.where(F.col("event_date").cast("string").isin(gaining)).select(*EVENTS.columns)
                rows = kept.unionByName(rows)
            manifest = warehouse.write_spark(
                rows, EVENTS, replace_partitions=gaining, producer=producer, base_version=_base(base_version)
            )
            events_committed = True
        else:
            manifest = warehouse.manifest(EVENTS.name, base_version)
            events_committed = False
    finally:
        for df in cached:
            df.unpersist()
    return IngestResult(
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
        rejected_manifest=None,
        partitions=partitions,
        replaced_partitions=gaining,
        events_committed=events_committed,
    )


def _rows_per_date(df) -> dict:
    """``event_date`` -> rows of ``df`` (one Spark job; the dates are few: one row per UTC day)."""
    return {r["event_date"]: int(r["n"]) for r in df.groupBy("event_date").count().withColumnRenamed("count", "n").collect()}


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
        follow_symlinks=settings.ingest.follow_symlinks,
        buckets=settings.ingest.buckets,
        direct_num_workers=settings.ingest.direct_num_workers,
        direct_running_mode=settings.ingest.direct_running_mode,
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


def _append_with_retry(table: str, write):
    """``write()`` (which reads the table's current version and commits on it), tried again when
    another writer committed in between: an append is safe to redo from a fresh read."""
    for attempt in range(1, APPEND_TRIES + 1):
        try:
            return write()
        except CommitConflict:
            if attempt == APPEND_TRIES:
                raise
            _log.warning("%s: commit conflict, appending again (try %d of %d)", table, attempt + 1, APPEND_TRIES)


def commit_rejections(warehouse: Warehouse, rejected_dir: str, run_id: str, rejected_at: dt.datetime) -> Manifest | None:
    """Append a run's dead letters to ``rejected_events`` (partition: the run's UTC date).

    A dead letter whose ``rejection_id`` is already committed (the same bad record of the same
    file, rejected by an earlier run) is not added again. Dead letters are few, so this uses
    Arrow, not Spark. Returns the table's manifest (an empty first version on a clean run).
    The committed ids are read at one version, and the commit is made on that version.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from features.rejections import to_rejected_events

    files = sorted(f for f in (os.listdir(rejected_dir) if os.path.isdir(rejected_dir) else []) if f.endswith(".parquet"))
    parts = [pq.read_table(os.path.join(rejected_dir, f)).cast(REJECTED_RECORD_SCHEMA) for f in files]
    letters = pa.concat_tables(parts) if parts else REJECTED_RECORD_SCHEMA.empty_table()
    producer = {"job": "ingest_events", "run_id": run_id}

    def write() -> Manifest:
        base = warehouse.current_version(REJECTED_EVENTS.name)
        if letters.num_rows == 0:
            if base is not None:
                return warehouse.manifest(REJECTED_EVENTS.name, base)
            # The first clean run still commits an empty table, so readers always find one.
            return warehouse.write_arrow(
                REJECTED_EVENTS, REJECTED_EVENTS.schema.empty_table(), replace_partitions=[],
                producer=producer, base_version=_base(None),
            )  # fmt: skip
        rows = to_rejected_events(letters, run_id, rejected_at)
        partition = rows.column("rejected_date")[0].as_py().isoformat()
        if base is not None:
            committed = warehouse.read_arrow(REJECTED_EVENTS.name, version=base, columns=["rejection_id"])
            rows = rows.filter(pc.invert(pc.is_in(rows.column("rejection_id"), value_set=committed.column("rejection_id"))))
            if rows.num_rows == 0:
                return warehouse.manifest(REJECTED_EVENTS.name, base)
            same_day = warehouse.read_arrow(REJECTED_EVENTS.name, version=base, partitions=[partition])
            rows = pa.concat_tables([same_day.cast(REJECTED_EVENTS.schema), rows])
        return warehouse.write_arrow(
            REJECTED_EVENTS, rows, replace_partitions=[partition], producer=producer, base_version=_base(base)
        )

    return _append_with_retry(REJECTED_EVENTS.name, write)


def record_run(warehouse: Warehouse, r: IngestResult, started, finished, window: DateWindow | None, runner: str) -> Manifest:
    """Append the run's counts to ``ingest_runs``.

    ``events_version`` is the ``events`` version the run leaves current: the one it committed,
    or, when it brought nothing new (``new_events`` 0, no commit), the one it read.
    """
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

    def write() -> Manifest:
        base = warehouse.current_version(INGEST_RUNS.name)
        rows = new
        if base is not None:
            rows = pa.concat_tables([warehouse.read_arrow(INGEST_RUNS.name, version=base).cast(INGEST_RUNS.schema), new])
        return warehouse.write_arrow(
            INGEST_RUNS, rows, producer={"job": "ingest_events", "run_id": r.run_id}, base_version=_base(base)
        )

    return _append_with_retry(INGEST_RUNS.name, write)
