"""Invariant counters of the sequences family: ``user_sequences`` and ``rote_features``
(the stored table, or a derived sample of the view).

Each returns ``{violation: count}`` (all zero when the table is correct); the Dagster quality
check of the table blocks downstream assets on any non-zero count (docs/sequences.md).
"""
from __future__ import annotations

from features.events import EVENTS
from features.sequences import ROTE_FEATURES, USER_SEQUENCES
from features.sequences.rote import rote_table_schema
from pipelines.sequences.job import flag_filter
from pipelines.sequences.params import SequenceSettings
from pipelines.warehouse import Warehouse


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
    events = flag_filter(warehouse.read_spark(spark, EVENTS.name), settings.require_flags)
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


#: Rows of ``user_sequences`` the view check derives (a deterministic sample by ``event_id``).
ROTE_VIEW_SAMPLE_ROWS = 100_000


def rote_violations(rote, seqs, levels) -> dict[str, int]:
    """Violations of ``rote_features``' invariants: Spark DataFrames of its rows (``rote``) and of
    the ``user_sequences`` rows they belong to (``seqs``: ``event_id``, ``hist_len``)."""
    from pyspark.sql import functions as F

    seqs = seqs.select("event_id", F.col("hist_len").alias("seq_hist_len"))
    joined = rote.join(seqs, "event_id", "full_outer")
    list_cols = [f.name for f in rote_table_schema(levels) if f.name.startswith(("hist_", "gap_")) and f.name != "hist_len"]
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


def check_rote(spark, warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """Count violations of the stored ``rote_features``' invariants against ``user_sequences``
    (``rote_storage: table``)."""
    rote = warehouse.read_spark(spark, ROTE_FEATURES.name)
    return rote_violations(rote, warehouse.read_spark(spark, USER_SEQUENCES.name), settings.rote_levels)


def check_rote_view(spark, warehouse: Warehouse, settings: SequenceSettings, version=None,
                    sample_rows: int = ROTE_VIEW_SAMPLE_ROWS) -> dict[str, int]:
    """Count violations of the ``rote_features`` view's invariants (``rote_storage: view``).

    Derives the view's rows of a deterministic sample of about ``sample_rows`` rows of
    ``user_sequences`` at ``version`` (every row when it has no more; otherwise the rows whose
    ``pmod(xxhash64(event_id), 2^20)`` falls below the sampled fraction) with the read path's
    own code (:func:`pipelines.sequences.view.derive_rote_spark`) and counts the same
    violations as :func:`check_rote` on them, prefixed ``rote_view_``, plus
    ``rote_view_schema_differs`` (1 when the derived columns are not the contract's schema).
    The sample's row count is not returned (``rows`` stays the ``user_sequences`` count).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from pipelines.sequences.view import derive_rote_spark

    if sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, not {sample_rows}")
    manifest = warehouse.manifest(USER_SEQUENCES.name, version)
    seqs = warehouse.read_spark(spark, USER_SEQUENCES.name, version=manifest.version)
    if manifest.row_count > sample_rows:
        buckets = 1 << 20
        below = -(-sample_rows * buckets // manifest.row_count)
        seqs = seqs.where(F.pmod(F.xxhash64("event_id"), F.lit(buckets)) < below)
    rote = derive_rote_spark(seqs, settings.rote_levels)
    counts = rote_violations(rote, seqs, settings.rote_levels)
    counts.pop("rows")
    want = from_arrow_schema(rote_table_schema(settings.rote_levels))
    counts["schema_differs"] = int([(f.name, f.dataType) for f in rote.schema] != [(f.name, f.dataType) for f in want])
    return {f"rote_view_{k}": v for k, v in counts.items()}
