"""Ingestion jobs: source files to ``events`` and ``rejected_events``; ``users`` and ``items``.

``ingest_events`` runs in two steps:

1. **Stage** (:mod:`pipelines.beam_ingest`, or the same logic on Spark with
   ``engine="spark"``): read every source file through its adapter, validate each record,
   assign stable event ids, de-duplicate within the run, and write accepted rows and dead
   letters to a stage directory, checking ``records in = accepted + rejected + duplicates``.
   A file that cannot be read, or a symbolic link that is not followed, is one dead letter.
2. **Commit** (Spark + the warehouse's atomic commit): read the committed ``events`` version
   once, count the accepted rows dated outside the run's window, and split the others with an
   ``event_id`` semi-join against that version into *already present* (not added) and *new*.
   The step checks ``accepted = new + already present + outside the window`` (and the stage's
   balance again) and fails, committing nothing, if not. Only the partitions that gain events
   are replaced (their committed rows plus the new ones), with ``base_version`` set to the
   version read, so a writer that committed in between makes the commit fail
   (:class:`~pipelines.warehouse.CommitConflict`) instead of being overwritten. A run with
   nothing new commits nothing to ``events``. Then the dead letters are appended to
   ``rejected_events`` (idempotent by ``rejection_id``) and the run is recorded in
   ``ingest_runs``.

Stage directories are ingestion's own temporary folders (``ingest-*`` under
``ingest.stage_root``, else ``<warehouse>/_tmp``, else the system temp dir). Each holds an
owner file locked (``flock``) for the life of its run; a run starts by removing the folders
whose lock is free (their run died, e.g. ``kill -9``) and, without an owner file, those older
than :data:`STALE_STAGE_SECONDS`. A running run's folder is never touched.

``repeated_lines`` says what an exact repeat of a line within one file is: ``duplicate`` (the
default; a ``duplicate`` dead letter) or ``distinct`` (an event of its own, for parity with the
published code). The mode is recorded in the producer of every ``events`` version; re-ingesting
a source under the other mode is refused, since the events already committed were counted the
other way.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa

from features.dimensions import ITEMS, USERS
from features.events import EVENTS, check_repeated_lines, to_events
from features.ingest_runs import INGEST_RUNS
from features.layout import Manifest
from features.rejections import REJECTED_EVENTS, REJECTED_RECORD_SCHEMA
from pipelines.beam_ingest import ACCEPTED_SCHEMA, IngestBalanceError, StageCounts, run_stage
from pipelines.settings import IngestRules, local_stage_root
from pipelines.sources import SourceAdapter
from pipelines.warehouse import CommitConflict, Warehouse

try:  # POSIX; elsewhere only stage folders without an owner file are ever removed
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

_log = logging.getLogger("recfeat.ingest")

#: Prefix of a run's stage directory.
STAGE_PREFIX = "ingest-"
#: The owner file of a stage directory: locked by its run, and a record of who that is.
STAGE_OWNER_FILE = ".owner"
#: A stage directory without an owner file (written by an older version, or a run that died
#: while creating it) is removed once it is older than this (seconds since its last change).
STALE_STAGE_SECONDS = 3600
#: Tries of an append (``rejected_events``, ``ingest_runs``) that loses a commit race.
APPEND_TRIES = 3


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


class DimensionSchemaError(ValueError):
    """A users/items file's columns cannot be merged with the committed table's (a type clash)."""


@dataclass
class IngestResult:
    """What an ingestion run read, routed and committed.

    ``partitions``: the partitions the run covers (its window's dates, or every date present);
    ``replaced_partitions``: those it actually rewrote, the ones that gained events.
    ``events_committed`` is false when the run brought nothing new and committed nothing to
    ``events``; ``manifest`` is then the version it read, unchanged.
    """

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
    replaced_partitions: list[str] = field(default_factory=list)
    events_committed: bool = True

    @property
    def in_window(self) -> int:
        return self.new_events + self.already_present

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_reason.items())) or "none"
        if self.events_committed:
            commit = (
                f"events v{self.manifest.version} holds {self.manifest.row_count:,} rows "
                f"({len(self.replaced_partitions)} partition(s) replaced)"
            )
        else:
            commit = f"nothing new: events not committed (v{self.manifest.version} unchanged, {self.manifest.row_count:,} rows)"
        return (
            f"{self.source}: {self.records_in:,} records read from {len(self.files)} file(s): "
            f"{self.new_events:,} new events, {self.already_present:,} already present, "
            f"{self.outside_window:,} outside the window, {self.rejected:,} rejected, "
            f"{self.duplicates:,} duplicates (by reason: {reasons}); {commit}"
        )


# ---- stage directories ---------------------------------------------------------------------


def stage_base(warehouse: Warehouse, stage_root: str | None) -> tuple[str, bool]:
    """Where stage directories go, and whether that folder is ingestion's own (so that
    leftovers without an owner file may be removed there; never in the system temp dir)."""
    root = local_stage_root(stage_root, field="stage_root")
    if root:
        return os.path.abspath(root), True
    if warehouse.is_local:
        return os.path.join(warehouse.root, "_tmp"), True
    return tempfile.gettempdir(), False


@dataclass
class StageDir:
    """A run's stage directory and the open, locked owner file that marks it as in use."""

    path: str
    _owner: int | None = None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)  # releases the lock
            self._owner = None


def new_stage_dir(base: str, run_id: str) -> StageDir:
    """A fresh stage directory under ``base`` with its owner file locked.

    The owner file is written and locked under a temporary name and then renamed into place, so
    a cleaner never finds an owner file that is not locked yet.
    """
    os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=base)
    record = {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = os.path.join(path, STAGE_OWNER_FILE + ".tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    os.replace(tmp, os.path.join(path, STAGE_OWNER_FILE))
    return StageDir(path, fd)


def clean_stale_stage_dirs(base: str, own_folder: bool = True, now: float | None = None) -> list[str]:
    """Remove the stage directories under ``base`` that no running run owns; return them.

    A directory with an owner file is removed when that file's lock is free (its run ended
    without cleaning up: killed, or its machine lost); one without an owner file only in
    ingestion's own folder (``own_folder``) and once it is older than
    :data:`STALE_STAGE_SECONDS`. Errors while removing are logged, never raised.
    """
    if not os.path.isdir(base):
        return []
    now = time.time() if now is None else now
    removed = []
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if not name.startswith(STAGE_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        owner = os.path.join(path, STAGE_OWNER_FILE)
        try:
            if os.path.exists(owner):
                # Without flock (not POSIX) a live owner cannot be told from a dead one: keep.
                stale = fcntl is not None and _remove_if_unlocked(path, owner)
            else:
                stale = own_folder and now - os.path.getmtime(path) > STALE_STAGE_SECONDS
                if stale:
                    shutil.rmtree(path)
        except OSError as exc:
            _log.warning("could not remove stale stage directory %s: %s", path, exc)
            continue
        if stale:
            removed.append(path)
    if removed:
        _log.info("removed %d stale stage directories under %s: %s", len(removed), base, removed)
    return removed


def _remove_if_unlocked(path: str, owner: str) -> bool:
    try:
        fd = os.open(owner, os.O_RDWR)
    except FileNotFoundError:  # its run just removed it
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a running run holds it
        shutil.rmtree(path)
        return True
    finally:
        os.close(fd)


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
) -> IngestResult:
    """Ingest the adapter's source files into ``events`` (see the module docstring).

    ``window``: only events whose UTC date falls in it are taken (a daily partition or a
    backfill range); without a window every date present is. Either way only the partitions
    that gain events are rewritten. ``engine``: ``beam`` (with ``runner``) or ``spark``.
    ``repeated_lines``: ``duplicate`` or ``distinct`` (see the module docstring).
    ``stage_root``: a local directory (``ValueError`` for another URI than ``file://``).
    ``follow_symlinks``: read source files that are symbolic links (else each is a
    ``symlink_refused`` dead letter).
    """
    run_id = run_id or uuid.uuid4().hex
    started = dt.datetime.now(dt.timezone.utc)
    rules = rules or IngestRules()
    check_repeated_lines(repeated_lines)
    if engine not in ("beam", "spark"):
        raise ValueError(f"unknown ingestion engine {engine!r} (beam or spark)")
    base, own_folder = stage_base(warehouse, stage_root)
    _check_same_mode(warehouse, adapter.name, repeated_lines)
    files = adapter.event_files()
    clean_stale_stage_dirs(base, own_folder)
    stage = new_stage_dir(base, run_id)
    try:
        if engine == "beam":
            counts = run_stage(
                files, stage.path, adapter.name, adapter.config, rules, chunk_rows, runner, runner_args, now,
                repeated_lines, follow_symlinks,
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

    staged = to_events(_read_stage(spark, os.path.join(stage_dir, "accepted"), ACCEPTED_SCHEMA)).persist()
    cached = [staged]
    try:
        if window is not None:
            inside = (F.col("event_date") >= F.lit(window.start)) & (F.col("event_date") < F.lit(window.end))
            in_window = staged.where(inside)
            outside = staged.where(~inside).count()
        else:
            in_window, outside = staged, 0
        dates = sorted(r[0].isoformat() for r in in_window.select("event_date").distinct().collect())
        partitions = window.dates() if window is not None else dates

        # The concurrency hook: one version read, the semi-join and the rewrite both against it,
        # and the commit refused if another writer committed after it.
        base_version = warehouse.current_version(EVENTS.name)
        committed = None
        if base_version is not None and dates:
            committed = warehouse.read_spark(spark, EVENTS.name, version=base_version, partitions=dates)
            ids = committed.select("event_id")
            fresh = in_window.join(ids, "event_id", "left_anti")
            already_present = in_window.join(ids, "event_id", "left_semi").count()
        else:
            fresh, already_present = in_window, 0
        fresh = fresh.persist()
        cached.append(fresh)
        new_events = fresh.count()

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

        gaining = sorted(r[0].isoformat() for r in fresh.select("event_date").distinct().collect()) if new_events else []
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


def _base(version: int | None) -> int:
    """The ``base_version`` of a commit on what was read at ``version`` (0: the table did not
    exist, so the commit fails if another writer created it meanwhile)."""
    return 0 if version is None else version


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


def ingest_dimension(
    warehouse: Warehouse, adapter: SourceAdapter, table: str, follow_symlinks: bool = False
) -> Manifest | None:
    """Commit the adapter's ``users`` or ``items`` file, merged by key with the committed rows.

    Rows of the new file win over committed rows with the same key; committed rows of other
    keys are always kept (a later source file may describe only new users). The columns are the
    union of the committed table's and the file's (:func:`merge_dimension`): a column the file
    lacks is null in its rows, a column new in the file is null in the kept rows; a column whose
    types cannot be reconciled fails with :class:`DimensionSchemaError` naming it, and nothing is
    committed. The committed version is read once and the commit made on it. Returns ``None``
    when the source has no such file, and the committed manifest without a commit when the
    merged rows equal the committed ones. ``follow_symlinks``: read a users/items file that is a
    symbolic link (else :class:`~pipelines.sources.SourceError`; ``ingest.follow_symlinks``).
    """
    contract = {USERS.name: USERS, ITEMS.name: ITEMS}[table]
    reader = copy.copy(adapter)
    reader.follow_symlinks = follow_symlinks
    fresh = reader.read_users() if table == USERS.name else reader.read_items()
    if fresh is None:
        return None
    fresh = contract.conform(fresh)
    key = contract.key[0]
    fresh = _first_per_key(fresh, key)
    base = warehouse.current_version(table)
    committed = None
    if base is not None:
        committed = warehouse.read_arrow(table, version=base)
        fresh = merge_dimension(committed, fresh, key, table)
    fresh = contract.conform(fresh).sort_by(key)
    if committed is not None and _same_rows(contract.conform(committed).sort_by(key), fresh):
        return warehouse.manifest(table, base)  # nothing new: commit nothing
    return warehouse.write_arrow(
        contract, fresh, producer={"job": f"ingest_{table}", "source": adapter.name}, base_version=_base(base)
    )


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Whether two tables sorted by key hold the same columns and values (types may differ)."""
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    try:
        return a.cast(b.schema).equals(b)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return False


def merge_dimension(old: pa.Table, fresh: pa.Table, key: str, table: str = "dimension") -> pa.Table:
    """``fresh`` plus the rows of ``old`` whose ``key`` it does not hold, on the union of columns.

    Column order: ``old``'s, then the columns new in ``fresh``. A column missing on one side is
    null there. A column on both sides with different types takes the type both widen to
    (int64 and float64: float64); an all-null side takes the other's type; any other clash
    raises :class:`DimensionSchemaError` naming every such column and both types.
    """
    import pyarrow.compute as pc

    names = list(old.column_names) + [n for n in fresh.column_names if n not in old.column_names]
    types, clashes = {}, []
    for name in names:
        a = old.schema.field(name).type if name in old.column_names else None
        b = fresh.schema.field(name).type if name in fresh.column_names else None
        if a is None or b is None or a.equals(b):
            types[name] = a if b is None else b
        elif old.column(name).null_count == old.num_rows:
            types[name] = b
        elif fresh.column(name).null_count == fresh.num_rows:
            types[name] = a
        else:
            try:
                types[name] = pa.unify_schemas(
                    [pa.schema([(name, a)]), pa.schema([(name, b)])], promote_options="permissive"
                ).field(name).type
            except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                clashes.append(f"{name!r} ({a} committed, {b} in the new file)")
    if clashes:
        raise DimensionSchemaError(
            f"{table}: the new file's columns cannot be merged with the committed table: "
            f"{', '.join(clashes)} changed type; nothing was committed"
        )

    def aligned(t: pa.Table) -> pa.Table:
        cols = []
        for name in names:
            if name in t.column_names:
                try:
                    cols.append(t.column(name).cast(types[name]))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DimensionSchemaError(
                        f"{table}: column {name!r} cannot be read as {types[name]}: {str(exc).splitlines()[0]}"
                    ) from None
            else:
                cols.append(pa.nulls(t.num_rows, types[name]))
        return pa.Table.from_arrays(cols, names=names)

    keep_old = old.filter(pc.invert(pc.is_in(old.column(key), value_set=fresh.column(key))))
    return pa.concat_tables([aligned(keep_old), aligned(fresh)])


def _first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the first row of each key (files list each id once; this guards against repeats)."""
    import pyarrow.compute as pc

    idx = pa.array(range(table.num_rows), pa.int64())
    firsts = table.append_column("_i", idx).group_by(key, use_threads=False).aggregate([("_i", "min")])
    keep = pc.is_in(idx, value_set=firsts.column("_i_min"))
    return table.filter(keep)
