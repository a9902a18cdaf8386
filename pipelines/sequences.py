"""Job: ``events`` to ``user_sequences`` (point-in-time histories with their split) and
``rote_features`` (the RoTE time features of every row).

Both tables are built in one pass and committed together (each atomically). Two ways to build
them (``sequences.build``):

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
from features.layout import Manifest
from features.rote import ROTE_FEATURES, rote_batch, rote_table_schema
from features.sequences import USER_SEQUENCES, kcore_filter, plan_incremental, seeds_from_sequences
from pipelines.settings import SequenceSettings
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
        fps = events_fingerprints(_flag_filter(events, settings.require_flags))
        out.update({d: [parts[d].content_id, fps[d]] for d in todo if d in fps})
    return out


def build_signature(settings: SequenceSettings) -> str:
    """The settings a built partition depends on, as one string (a change rebuilds every day)."""
    return json.dumps(
        {"max_len": settings.max_len, "split": settings.split,
         "valid_from": settings.valid_from.isoformat() if settings.valid_from else None,
         "test_from": settings.test_from.isoformat() if settings.test_from else None,
         "require_flags": list(settings.require_flags), "k_core": settings.k_core.model_dump(),
         "rote_levels": list(settings.rote_levels)},
        sort_keys=True,
    )


def stored_fingerprints(warehouse: Warehouse, settings: SequenceSettings) -> tuple[dict[str, list[str]], set[str]]:
    """(day -> ``[events path, fingerprint]`` recorded by the last build, built days).

    Nothing is recorded when the table was built with other settings. The record lives in
    ``user_sequences``, which commits after ``rote_features`` (``write_from_spark_arrow``
    commits in reverse order): a crash between the two leaves ``user_sequences`` and its record
    at the previous build, so the next build plans from what that table really holds (and
    rewrites ``rote_features`` for the days it rebuilds). A day counts as built only when both
    tables have its partition, and only built days keep their record.
    """
    if not warehouse.exists(USER_SEQUENCES.name):
        return {}, set()
    manifest = warehouse.manifest(USER_SEQUENCES.name)
    rote_days = set(warehouse.manifest(ROTE_FEATURES.name).partitions) if warehouse.exists(ROTE_FEATURES.name) else set()
    same = manifest.producer.get(SETTINGS_KEY) == build_signature(settings)
    stored = json.loads(manifest.producer.get(FINGERPRINTS_KEY, "{}")) if same else {}
    built = set(manifest.partitions)
    return {d: v for d, v in stored.items() if d in built and d in rote_days}, built


def _flag_filter(events, flags):
    """Events whose every flag in ``flags`` is true (a null flag is not true)."""
    from pyspark.sql import functions as F

    for flag in flags:
        events = events.where(F.coalesce(F.col(flag), F.lit(False)))
    return events


def _days(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days)]


def build_sequences_table(
    spark,
    warehouse: Warehouse,
    settings: SequenceSettings,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> dict[str, Manifest]:
    """Build ``user_sequences`` and ``rote_features`` in one pass over the events.

    ``settings.build == "full"``: every partition from all events (after the optional k-core
    filter). ``"incremental"``: the target days ``[start, end)``, continuing each user from the
    table's earlier partitions. One shuffle by user; each Spark task builds the histories of its
    users (Arrow/NumPy), derives their RoTE features, and writes both tables' Parquet files
    itself (:meth:`Warehouse.write_from_spark_arrow`). Returns the two committed manifests.
    """
    import pyarrow.compute as pc

    from features.sequences import check_split_args, histories_from_sorted, sorted_for_histories

    split = dict(split=settings.split, valid_from=settings.valid_from, test_from=settings.test_from)
    producer = {"job": "build_sequences_table", "max_len": str(settings.max_len), "split": settings.split,
                "build": settings.build, "rote_levels": ",".join(settings.rote_levels),
                "require_flags": ",".join(settings.require_flags), SETTINGS_KEY: build_signature(settings)}
    days = None
    seeds = None
    ev_version = warehouse.current_version(EVENTS.name)  # one events version for every read below
    if settings.build == "full":
        events = _flag_filter(warehouse.read_spark(spark, EVENTS.name, version=ev_version), settings.require_flags)
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
        tables = (USER_SEQUENCES.name, ROTE_FEATURES.name)
        if plan.start is None and all(warehouse.exists(t) for t in tables):
            return {name: warehouse.manifest(name) for name in tables}  # all up to date: commit nothing
        if plan.start is not None:
            start, end = plan.start, plan.end
        days = plan.days or _days(start, end)  # nothing built yet and nothing to build: empty tables
        events = _flag_filter(warehouse.read_spark(spark, EVENTS.name, version=ev_version, partitions=days),
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

    def kernel(batches):
        for batch in histories_from_sorted(batches, max_len, SIDE_COLUMNS, **split):
            table = pa.Table.from_batches([batch])
            table = table.append_column("target_date", pc.cast(table.column("target_ts"), pa.date32()))
            yield USER_SEQUENCES.name, table
            yield ROTE_FEATURES.name, rote_batch(table, levels)

    return warehouse.write_from_spark_arrow(
        ordered, kernel, [USER_SEQUENCES, ROTE_FEATURES], replace_partitions=days, producer=producer
    )


def check_sequences(spark, warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """Count violations of ``user_sequences``' invariants (all zero when it is correct)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, USER_SEQUENCES.name)
    per_user = Window.partitionBy("user_id")
    flagged = df.select(
        F.exists("hist_ts", lambda t: t > F.col("target_ts")).alias("future"),
        (F.col("hist_len") > settings.max_len).alias("too_long"),
        ((F.size("hist_item_ids") != F.col("hist_len")) | (F.size("hist_ts") != F.col("hist_len"))
         | (F.size("hist_play_time_ms") != F.col("hist_len"))).alias("misaligned"),
        (F.col("hist_len") != F.least(F.col("seq_pos"), F.lit(settings.max_len))).alias("bad_len"),
        F.count(F.lit(1)).over(per_user).alias("n"),
        F.sum((F.col("split") == "test").cast("int")).over(per_user).alias("tests"),
        F.sum((F.col("split") == "valid").cast("int")).over(per_user).alias("valids"),
    )
    loo_bad = (F.col("n") >= 4) & ((F.col("tests") != 1) | (F.col("valids") != 1))
    loo_bad = loo_bad | ((F.col("n") < 4) & ((F.col("tests") + F.col("valids")) > 0))
    aggs = [
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("future").cast("long")).alias("history_after_target"),
        F.sum(F.col("too_long").cast("long")).alias("hist_len_over_max"),
        F.sum(F.col("misaligned").cast("long")).alias("arrays_misaligned"),
        F.sum(F.col("bad_len").cast("long")).alias("hist_len_not_min_seq_pos_max_len"),
    ]
    if settings.split == "leave_one_out":
        aggs.append(F.sum(loo_bad.cast("long")).alias("rows_of_users_with_bad_split_counts"))
    row = flagged.agg(*aggs).collect()[0].asDict()
    out = {k: int(v or 0) for k, v in row.items()}
    out.update(check_coverage(spark, warehouse, settings, df))
    return out


def check_coverage(spark, warehouse: Warehouse, settings: SequenceSettings, seqs=None) -> dict[str, int]:
    """Count coverage violations of ``user_sequences`` against the committed ``events``.

    * ``days_where_target_rows_differ_from_events``: UTC days whose number of target rows
      (``target_date``) differs from their number of events (after ``require_flags``; with the
      k-core filter, the events of the users and items the table kept, which is exactly what
      the filter keeps; for incremental builds, the days up to the last built one);
    * ``events_without_target_row`` / ``target_rows_without_event``: by ``event_id``;
    * ``seq_pos_duplicated``: rows sharing a ``(user_id, seq_pos)`` with another row;
    * ``users_with_seq_pos_gaps``: users whose positions are not exactly ``0 .. n - 1``.
    """
    from pyspark.sql import functions as F

    seqs = seqs if seqs is not None else warehouse.read_spark(spark, USER_SEQUENCES.name)
    events = _flag_filter(warehouse.read_spark(spark, EVENTS.name), settings.require_flags)
    if settings.k_core.enabled:
        events = events.join(seqs.select("user_id").distinct(), "user_id", "left_semi").join(
            seqs.select(F.col("target_item_id").alias("item_id")).distinct(), "item_id", "left_semi"
        )
    ev = events.select("event_id", F.col("event_date").alias("day"))
    sq = seqs.select("event_id", F.col("target_date").alias("day"))
    if settings.build == "incremental":  # days after the last built one are not built yet
        last = sq.agg(F.max("day")).collect()[0][0]
        ev = ev.where(F.col("day") <= F.lit(last)) if last is not None else ev.limit(0)
    per_day = ev.groupBy("day").count().withColumnRenamed("count", "e").join(
        sq.groupBy("day").count().withColumnRenamed("count", "s"), "day", "full_outer"
    )
    days_bad = per_day.where(F.coalesce("e", F.lit(0)) != F.coalesce("s", F.lit(0))).count()
    missing = ev.join(sq, "event_id", "left_anti").count()
    extra = sq.join(ev, "event_id", "left_anti").count()
    dup = seqs.groupBy("user_id", "seq_pos").count().where(F.col("count") > 1).agg(F.sum("count")).collect()[0][0]
    gaps = seqs.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"), F.countDistinct("seq_pos").alias("d"),
        F.min("seq_pos").alias("lo"), F.max("seq_pos").alias("hi"),
    ).where((F.col("lo") != 0) | (F.col("hi") != F.col("n") - 1) | (F.col("d") != F.col("n"))).count()
    return {
        "days_where_target_rows_differ_from_events": int(days_bad),
        "events_without_target_row": int(missing),
        "target_rows_without_event": int(extra),
        "seq_pos_duplicated": int(dup or 0),
        "users_with_seq_pos_gaps": int(gaps),
    }


def check_rote(spark, warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """Count violations of ``rote_features``' invariants against ``user_sequences``."""
    from pyspark.sql import functions as F

    rote = warehouse.read_spark(spark, ROTE_FEATURES.name)
    seqs = warehouse.read_spark(spark, USER_SEQUENCES.name).select("event_id", F.col("hist_len").alias("seq_hist_len"))
    joined = rote.join(seqs, "event_id", "full_outer")
    list_cols = [f.name for f in rote_table_schema(settings.rote_levels) if f.name.startswith(("hist_", "gap_")) and f.name != "hist_len"]
    misaligned = F.lit(False)
    for c in list_cols:
        misaligned = misaligned | (F.size(c) != F.col("hist_len"))
    row = joined.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum((F.col("hist_len").isNull() | F.col("seq_hist_len").isNull()).cast("long")).alias("rows_not_matching_user_sequences"),
        F.sum((F.col("hist_len") != F.col("seq_hist_len")).cast("long")).alias("hist_len_differs"),
        F.sum(misaligned.cast("long")).alias("lists_misaligned"),
        F.sum(F.exists("gap_prev_s", lambda g: g < 0).cast("long")).alias("negative_gap_prev"),
        F.sum(F.exists("gap_to_target_s", lambda g: g < 0).cast("long")).alias("negative_gap_to_target"),
        F.sum((F.col("query_ts_s") > F.col("target_ts_s")).cast("long")).alias("query_after_target"),
    ).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}
