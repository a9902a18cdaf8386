"""Job: ``events`` to ``user_sequences`` (point-in-time histories with their split) and, with
``sequences.rote_storage: table``, ``rote_features`` (the RoTE time features of every row).

``rote_storage: view`` (the default) stores the histories once: the job commits only
``user_sequences`` and ``rote_features`` is derived on read (:mod:`pipelines.sequences.view`).
With ``table`` both tables are built in one pass and committed together (each atomically).
Two ways to build them (``sequences.build``):

* ``full``: every partition from all committed events (after the optional k-core filter), in one
  atomic commit. Leave-one-out needs this: a user's test row is their last event overall.
* ``incremental``: only the target days of a window. Each user active in the window continues
  from a seed read from the table's *earlier* partitions (their latest row holds their last
  ``max_len`` events); earlier partitions are neither read in full nor rewritten. A window is
  committed with ``replace_partitions``, so the other days stay byte-for-byte as they were.

An incremental build always equals the full build of the same events. Every commit records,
in its producer metadata, a fingerprint of the events each built day was made from (row count
and the XOR of ``xxhash64(event_id)``; ``events_fingerprints``) and the settings it used
(``build_settings``). Before building, the job fingerprints the events again and plans with
:func:`features.sequences.plan_incremental`: a late event for a built day, a day never built
before a built or requested one, or a change of settings moves the start of the build back to
the earliest such day, and every built day after it is rebuilt as well; requested days that
are already up to date are skipped (a re-run with nothing new commits nothing).
"""
from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa

from features.events import EVENTS
from features.sequences import ROTE_FEATURES, USER_SEQUENCES, kcore_filter, plan_incremental, seeds_from_sequences
from features.sequences.rote import rote_batch
from pipelines.family import DateWindow, JobContext, JobResult
from pipelines.sequences.params import SequenceSettings
from pipelines.warehouse import Warehouse

SIDE_COLUMNS = ("play_time_ms",)
#: Producer-metadata keys of a sequences commit (see the module docstring).
FINGERPRINTS_KEY = "events_fingerprints"
SETTINGS_KEY = "build_settings"


def events_fingerprints(events) -> dict[str, str]:
    """Spark: per UTC ``event_date`` (ISO), ``"<rows>:<xor of xxhash64(event_id)>"``.

    Events are immutable and keyed by ``event_id``, so a day's fingerprint changes exactly when
    events are added to or removed from it (up to a 64-bit hash collision).
    """
    from pyspark.sql import functions as F

    rows = events.groupBy(F.col("event_date").cast("string").alias("day")).agg(
        F.count(F.lit(1)).alias("n"), F.bit_xor(F.xxhash64("event_id")).alias("h")
    ).collect()
    return {r["day"]: f"{r['n']}:{r['h']}" for r in rows}


def current_fingerprints(spark, warehouse: Warehouse, settings: SequenceSettings,
                         stored: dict[str, list[str]], version: int | None = None) -> dict[str, list[str]]:
    """Day -> ``[events partition content id, fingerprint]`` of every day that has events now.

    A day whose ``events`` partition holds the very files recorded at its build
    (:attr:`PartitionEntry.content_id`; the warehouse never modifies a committed file) keeps
    its recorded fingerprint without a read; only the other days (new, rewritten or never
    recorded) are read, one column of them.
    """
    parts = warehouse.manifest(EVENTS.name, version).partitions if warehouse.exists(EVENTS.name) else {}
    out = {d: stored[d] for d, entry in parts.items() if d in stored and stored[d][0] == entry.content_id}
    todo = sorted(d for d in parts if d not in out)
    if todo:
        events = warehouse.read_spark(spark, EVENTS.name, version=version, partitions=todo)
        fps = events_fingerprints(flag_filter(events, settings.require_flags))
        out.update({d: [parts[d].content_id, fps[d]] for d in todo if d in fps})
    return out


def stored_tables(settings: SequenceSettings) -> tuple:
    """The contracts the job commits: ``user_sequences``, and ``rote_features`` with ``rote_storage: table``."""
    return (USER_SEQUENCES, ROTE_FEATURES) if settings.rote_storage == "table" else (USER_SEQUENCES,)


def build_signature(settings: SequenceSettings) -> str:
    """The settings a built partition depends on, as one string (a change rebuilds every day).

    ``rote_levels`` is part of it only with ``rote_storage: table`` (a view derives the levels on
    read, so changing them rebuilds nothing).
    """
    sig = {"max_len": settings.max_len, "split": settings.split,
           "valid_from": settings.valid_from.isoformat() if settings.valid_from else None,
           "test_from": settings.test_from.isoformat() if settings.test_from else None,
           "require_flags": list(settings.require_flags), "k_core": settings.k_core.model_dump()}
    if settings.rote_storage == "table":
        sig["rote_levels"] = list(settings.rote_levels)
    return json.dumps(sig, sort_keys=True)


def same_build(recorded: str | None, settings: SequenceSettings) -> bool:
    """Whether a commit's recorded :func:`build_signature` is that of ``settings``.

    With ``rote_storage: view`` the recorded ``rote_levels`` (of an earlier ``table`` build) are
    ignored: switching a table-built warehouse to the view rebuilds nothing. Switching to
    ``table`` rebuilds every day (``rote_features`` must be written for each of them).
    """
    if recorded is None:
        return False
    if settings.rote_storage == "table":
        return recorded == build_signature(settings)
    try:
        record = json.loads(recorded)
    except ValueError:
        return False
    record.pop("rote_levels", None)
    return record == json.loads(build_signature(settings))


def stored_fingerprints(warehouse: Warehouse, settings: SequenceSettings) -> tuple[dict[str, list[str]], set[str]]:
    """(day -> ``[events path, fingerprint]`` recorded by the last build, built days).

    Nothing is recorded when the table was built with other settings. The record lives in
    ``user_sequences``, which commits after ``rote_features`` (``write_from_spark_arrow``
    commits in reverse order): a crash between the two leaves ``user_sequences`` and its record
    at the previous build, so the next build plans from what that table really holds (and
    rewrites ``rote_features`` for the days it rebuilds). A day counts as built only when every
    table the job stores (:func:`stored_tables`) has its partition: with ``rote_storage: table``
    both, with ``view`` ``user_sequences`` alone (a ``rote_features`` table left from an earlier
    ``table`` build is not read). Only built days keep their record.
    """
    if not warehouse.exists(USER_SEQUENCES.name):
        return {}, set()
    manifest = warehouse.manifest(USER_SEQUENCES.name)
    built = set(manifest.partitions)
    complete = set(built)
    for other in stored_tables(settings)[1:]:
        complete &= set(warehouse.manifest(other.name).partitions) if warehouse.exists(other.name) else set()
    same = same_build(manifest.producer.get(SETTINGS_KEY), settings)
    stored = json.loads(manifest.producer.get(FINGERPRINTS_KEY, "{}")) if same else {}
    return {d: v for d, v in stored.items() if d in complete}, built


def flag_filter(events, flags):
    """Events whose every flag in ``flags`` is true (a null flag is not true)."""
    from pyspark.sql import functions as F

    for flag in flags:
        events = events.where(F.coalesce(F.col(flag), F.lit(False)))
    return events


def build_sequences_table(
    spark,
    warehouse: Warehouse,
    settings: SequenceSettings,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> JobResult:
    """Build ``user_sequences`` (and, with ``rote_storage: table``, ``rote_features``) in one pass.

    ``settings.build == "full"``: every partition from all events (after the optional k-core
    filter). ``"incremental"``: the target days ``[start, end)``, continuing each user from the
    table's earlier partitions. One shuffle by user; each Spark task builds the histories of its
    users (Arrow/NumPy), in table mode derives their RoTE features too, and writes the stored
    tables' Parquet files itself (:meth:`Warehouse.write_from_spark_arrow`). Returns the stored
    tables' manifests (unchanged when every requested day was up to date) and, per table, the
    days built.
    """
    import pyarrow.compute as pc

    from features.sequences import check_split_args, histories_from_sorted, sorted_for_histories

    split = dict(split=settings.split, valid_from=settings.valid_from, test_from=settings.test_from)
    producer = {"job": "build_sequences_table", "max_len": str(settings.max_len), "split": settings.split,
                "build": settings.build, "rote_levels": ",".join(settings.rote_levels),
                "rote_storage": settings.rote_storage,
                "require_flags": ",".join(settings.require_flags), SETTINGS_KEY: build_signature(settings)}
    days = None
    seeds = None
    ev_version = warehouse.current_version(EVENTS.name)  # one events version for every read below
    if settings.build == "full":
        events = flag_filter(warehouse.read_spark(spark, EVENTS.name, version=ev_version), settings.require_flags)
        current = current_fingerprints(spark, warehouse, settings, {}, ev_version)
        passes = 0
        if settings.k_core.enabled:
            k = settings.k_core
            events, passes = kcore_filter(events, k.min_user_events, k.min_item_events, k.max_iterations)
        producer["k_core_passes"] = str(passes)
        producer[FINGERPRINTS_KEY] = json.dumps(current, sort_keys=True)
    else:
        if start is None or end is None or end <= start:
            raise ValueError("an incremental user_sequences build needs a window of days [start, end)")
        stored, built_days = stored_fingerprints(warehouse, settings)
        current = current_fingerprints(spark, warehouse, settings, stored, ev_version)
        plan = plan_incremental(
            {d: (stored[d][1] if d in stored else None) for d in built_days},
            {d: v[1] for d, v in current.items()}, start, end,
        )
        tables = tuple(t.name for t in stored_tables(settings))
        if plan.start is None and all(warehouse.exists(t) for t in tables):  # all up to date: commit nothing
            note = {"build/window": "nothing to do: every requested day is built and up to date"}
            return JobResult({name: warehouse.manifest(name) for name in tables}, {name: dict(note) for name in tables})
        if plan.start is not None:
            start, end = plan.start, plan.end
        days = plan.days or DateWindow(start, end).dates()  # nothing built yet and nothing to build: empty tables
        events = flag_filter(warehouse.read_spark(spark, EVENTS.name, version=ev_version, partitions=days),
                              settings.require_flags)
        earlier = sorted(d for d in built_days if d < start.isoformat())
        if earlier:
            prior = warehouse.read_spark(spark, USER_SEQUENCES.name, partitions=earlier)
            seeds = seeds_from_sequences(prior, events, settings.max_len, SIDE_COLUMNS)
        producer["window"] = f"{start.isoformat()}..{end.isoformat()}"
        producer["requested_window"] = f"{plan.requested[0].isoformat()}..{plan.requested[1].isoformat()}"
        producer["stale_days"] = ",".join(plan.stale)
        producer["missing_days"] = ",".join(plan.missing)
        kept = {d: current[d] for d in stored if d < start.isoformat()}  # up to date: same fingerprint, current path
        producer[FINGERPRINTS_KEY] = json.dumps({**kept, **{d: current[d] for d in days if d in current}}, sort_keys=True)
    check_split_args(settings.split, settings.valid_from, settings.test_from, seeds is not None)
    ordered = sorted_for_histories(events, SIDE_COLUMNS, seeds, settings.partitions)
    max_len, levels = settings.max_len, tuple(settings.rote_levels)
    contracts = stored_tables(settings)
    with_rote = settings.rote_storage == "table"

    def kernel(batches):
        for batch in histories_from_sorted(batches, max_len, SIDE_COLUMNS, **split):
            table = pa.Table.from_batches([batch])
            table = table.append_column("target_date", pc.cast(table.column("target_ts"), pa.date32()))
            yield USER_SEQUENCES.name, table
            if with_rote:
                yield ROTE_FEATURES.name, rote_batch(table, levels)

    manifests = warehouse.write_from_spark_arrow(
        ordered, kernel, list(contracts), replace_partitions=days, producer=producer
    )
    built = {f"build/{key}": producer[key] or "(none)"  # the days actually built (a late event moves the start back)
             for key in ("window", "requested_window", "stale_days", "missing_days") if key in producer}
    return JobResult(manifests, {name: dict(built) for name in manifests})


def run(ctx: JobContext) -> JobResult:
    """The family's job: the stored tables in one pass (incremental builds: the context's window)."""
    start, end = (ctx.window.start, ctx.window.end) if ctx.window is not None else (None, None)
    return build_sequences_table(ctx.spark, ctx.warehouse, ctx.params, start, end)
