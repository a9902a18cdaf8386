"""Invariant counters of the sequences family: ``user_sequences`` and ``rote_features``
(the stored table, or a derived sample of the view).

Each returns ``{violation: count}`` (all zero when the table is correct); the Dagster quality
check of the table blocks downstream assets on any non-zero count (docs/sequences.md).
"""
from __future__ import annotations

import pyarrow as pa

from features.events import EVENTS
from features.sequences import ROTE_FEATURES, USER_SEQUENCES
from features.sequences.rote import rote_table_schema
from pipelines.quality.frames import count_true, group_ids
from pipelines.sequences.job import flag_filter
from pipelines.sequences.params import SequenceSettings
from pipelines.warehouse import Warehouse


def check_sequences(spark, warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """Count violations of ``user_sequences``' invariants (all zero when it is correct).

    Three Spark queries: the row and user counters in one (the history lists are reduced to
    per-row flags before the table is shuffled by user, so the shuffle carries a few bytes per
    row; :func:`_user_counts`), then the coverage against ``events`` by day and by id, each one
    grouping of the union of both sides (:func:`_event_coverage`).
    """
    df = warehouse.read_spark(spark, USER_SEQUENCES.name)
    return {**_user_counts(df, settings), **_event_coverage(warehouse, settings, df)}


def _user_counts(seqs, settings: SequenceSettings) -> dict[str, int]:
    """The per-row and per-user counters of :func:`check_sequences` (the last two are also
    :func:`check_coverage`'s).

    One shuffle, by ``user_id``, of a narrow projection (the user, the position, the split as
    two 0/1 columns and the row flags); then both groupings (``(user_id, seq_pos)`` and
    ``user_id``) run where the rows already are, and a single-row aggregate sums the users.
    Null keys group together, as in a ``GROUP BY``; ``countDistinct`` semantics for the gaps (a
    null position is not a position), SQL sums for the split counts (null when every split of a
    user is null, which then counts as no violation).
    """
    from pyspark.sql import functions as F

    rows = seqs.select(
        "user_id", "seq_pos",
        (F.col("split") == "test").cast("int").alias("t"),
        (F.col("split") == "valid").cast("int").alias("v"),
        F.exists("hist_ts", lambda t: t > F.col("target_ts")).cast("long").alias("future"),
        (F.col("hist_len") > settings.max_len).cast("long").alias("too_long"),
        ((F.size("hist_item_ids") != F.col("hist_len")) | (F.size("hist_ts") != F.col("hist_len"))
         | (F.size("hist_play_time_ms") != F.col("hist_len"))).cast("long").alias("misaligned"),
        (F.col("hist_len") != F.least(F.col("seq_pos"), F.lit(settings.max_len))).cast("long").alias("bad_len"),
    ).repartition("user_id")
    flags = ["future", "too_long", "misaligned", "bad_len"]
    per_pos = rows.groupBy("user_id", "seq_pos").agg(
        F.count(F.lit(1)).alias("c"), F.sum("t").alias("t"), F.sum("v").alias("v"), *[F.sum(f).alias(f) for f in flags]
    )
    per_user = per_pos.groupBy("user_id").agg(
        F.sum("c").alias("n"), F.count("seq_pos").alias("d"),
        F.min("seq_pos").alias("lo"), F.max("seq_pos").alias("hi"),
        F.sum("t").alias("tests"), F.sum("v").alias("valids"),
        F.sum(F.when(F.col("c") > 1, F.col("c"))).alias("dup"),
        *[F.sum(f).alias(f) for f in flags],
    )
    n = F.col("n")
    loo_bad = ((n >= 4) & ((F.col("tests") != 1) | (F.col("valids") != 1))) | (
        (n < 4) & ((F.col("tests") + F.col("valids")) > 0))
    gap = (F.col("lo") != 0) | (F.col("hi") != n - 1) | (F.col("d") != n)
    aggs = [
        F.sum("n").alias("rows"),
        F.sum("future").alias("history_after_target"),
        F.sum("too_long").alias("hist_len_over_max"),
        F.sum("misaligned").alias("arrays_misaligned"),
        F.sum("bad_len").alias("hist_len_not_min_seq_pos_max_len"),
        F.sum("dup").alias("seq_pos_duplicated"),
        F.sum(F.when(gap, 1).otherwise(0)).alias("users_with_seq_pos_gaps"),
    ]
    if settings.split == "leave_one_out":
        aggs.append(F.sum(F.when(loo_bad, n).otherwise(0)).alias("rows_of_users_with_bad_split_counts"))
    row = per_user.agg(*aggs).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}


def check_coverage(spark, warehouse: Warehouse, settings: SequenceSettings, seqs=None) -> dict[str, int]:
    """Count coverage violations of ``user_sequences`` (``seqs``, default the committed table)
    against the committed ``events``.

    * ``days_where_target_rows_differ_from_events``: UTC days whose number of target rows
      (``target_date``) differs from their number of events (after ``require_flags``; with the
      k-core filter, the events of the users and items the table kept, which is exactly what
      the filter keeps; for incremental builds, the days up to the last built one);
    * ``events_without_target_row`` / ``target_rows_without_event``: by ``event_id`` (a null id
      matches nothing);
    * ``seq_pos_duplicated``: rows sharing a ``(user_id, seq_pos)`` with another row;
    * ``users_with_seq_pos_gaps``: users whose positions are not exactly ``0 .. n - 1``.
    """
    seqs = seqs if seqs is not None else warehouse.read_spark(spark, USER_SEQUENCES.name)
    users = _user_counts(seqs, settings)
    return {**_event_coverage(warehouse, settings, seqs),
            **{k: users[k] for k in ("seq_pos_duplicated", "users_with_seq_pos_gaps")}}


def _event_coverage(warehouse: Warehouse, settings: SequenceSettings, seqs) -> dict[str, int]:
    """The three counters of :func:`check_coverage` against ``events``: the two id counters from
    one grouping of the union of both sides' ids (one shuffle), the per-day counts from an
    aggregate of the date columns alone."""
    from pyspark.sql import functions as F

    events = flag_filter(warehouse.read_spark(seqs.sparkSession, EVENTS.name), settings.require_flags)
    if settings.k_core.enabled:
        events = events.join(seqs.select("user_id").distinct(), "user_id", "left_semi").join(
            seqs.select(F.col("target_item_id").alias("item_id")).distinct(), "item_id", "left_semi"
        )
    ev = events.select("event_id", F.col("event_date").alias("day"))
    sq = seqs.select("event_id", F.col("target_date").alias("day"))
    if settings.build == "incremental":  # days after the last built one are not built yet
        last = sq.agg(F.max("day")).collect()[0][0]
        ev = ev.where(F.col("day") <= F.lit(last)) if last is not None else ev.limit(0)

    def sides(key: str):
        return ev.select(key, F.lit(1).alias("e"), F.lit(0).alias("s")).unionByName(
            sq.select(key, F.lit(0).alias("e"), F.lit(1).alias("s"))
        ).groupBy(key).agg(F.sum("e").alias("e"), F.sum("s").alias("s"))

    # As a full outer join of the two sides' day counts: a null day matches nothing, so each
    # side's null group is a day of its own whose other side is 0.
    null_day = (F.col("e") > 0).cast("int") + (F.col("s") > 0).cast("int")
    days_bad = sides("day").agg(
        F.sum(F.when(F.col("day").isNull(), null_day).otherwise((F.col("e") != F.col("s")).cast("int")))
    ).collect()[0][0]
    unmatched = F.col("event_id").isNull()
    row = sides("event_id").agg(
        F.sum(F.when(unmatched | (F.col("s") == 0), F.col("e"))).alias("missing"),
        F.sum(F.when(unmatched | (F.col("e") == 0), F.col("s"))).alias("extra"),
    ).collect()[0]
    return {
        "days_where_target_rows_differ_from_events": int(days_bad or 0),
        "events_without_target_row": int(row["missing"] or 0),
        "target_rows_without_event": int(row["extra"] or 0),
    }


#: Rows of ``user_sequences`` whose history lists :func:`check_sequences_arrow` flattens at once
#: (its temporaries stay a few tens of MB whatever the table's size).
ARROW_CHECK_CHUNK_ROWS = 65_536

#: The columns of ``user_sequences`` :func:`check_sequences_arrow` reads.
_SEQ_COLUMNS = ["event_id", "user_id", "seq_pos", "hist_len", "hist_item_ids", "hist_ts", "hist_play_time_ms",
                "target_ts", "target_item_id", "target_date", "split"]


def check_sequences_arrow(warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """:func:`check_sequences` (with :func:`check_coverage`) on Arrow and NumPy in this process:
    the same violations, counted with Spark SQL's null rules (a comparison with a null counts
    as not violated; ``least`` skips a null ``seq_pos``; null keys group together but never
    join). The table is read whole (the check step's one read); the history lists are
    flattened :data:`ARROW_CHECK_CHUNK_ROWS` rows at a time. Used for tables the check validates
    in the process (``quality.pandas_max_rows``)."""
    import numpy as np
    import pyarrow.compute as pc

    t = warehouse.read_arrow(USER_SEQUENCES.name, columns=_SEQ_COLUMNS)
    n = t.num_rows

    total = count_true
    future = sum(_rows_with_future_history(t.slice(i, ARROW_CHECK_CHUNK_ROWS)) for i in range(0, n, ARROW_CHECK_CHUNK_ROWS))

    hist_len = t.column("hist_len")
    misaligned = None
    for c in ("hist_item_ids", "hist_ts", "hist_play_time_ms"):
        differs = pc.not_equal(pc.list_value_length(t.column(c)), hist_len)
        misaligned = differs if misaligned is None else pc.or_kleene(misaligned, differs)
    least = pc.min_element_wise(t.column("seq_pos"), pa.scalar(settings.max_len, pa.int64()), skip_nulls=True)
    out = {
        "rows": n,
        "history_after_target": int(future),
        "hist_len_over_max": total(pc.greater(hist_len, settings.max_len)),
        "arrays_misaligned": total(misaligned) if misaligned is not None else 0,
        "hist_len_not_min_seq_pos_max_len": total(pc.not_equal(pc.cast(hist_len, pa.int64()), least)),
    }
    user = group_ids(t.column("user_id"))
    if settings.split == "leave_one_out":
        split = t.column("split")
        per_user = np.bincount(user, minlength=user.max(initial=-1) + 1)
        tests = np.bincount(user, weights=pc.fill_null(pc.equal(split, "test"), False).to_numpy(zero_copy_only=False),
                            minlength=len(per_user))
        valids = np.bincount(user, weights=pc.fill_null(pc.equal(split, "valid"), False).to_numpy(zero_copy_only=False),
                             minlength=len(per_user))
        cnt, te, va = per_user[user], tests[user], valids[user]
        bad = ((cnt >= 4) & ((te != 1) | (va != 1))) | ((cnt < 4) & ((te + va) > 0))
        out["rows_of_users_with_bad_split_counts"] = int(bad.sum())
    out.update(_coverage_arrow(warehouse, settings, t, user))
    return out


def _rows_with_future_history(part: pa.Table) -> int:
    """Rows of ``part`` with an element of ``hist_ts`` after ``target_ts`` (a null compares as
    not after, as in Spark's ``exists``)."""
    import numpy as np
    import pyarrow.compute as pc

    ts = pa.timestamp("us", tz="UTC")
    hist_ts = part.column("hist_ts").combine_chunks()
    flat = pc.cast(pc.cast(pc.list_flatten(hist_ts), ts), pa.int64())
    parents = pc.list_parent_indices(hist_ts)
    target = pc.cast(pc.cast(part.column("target_ts"), ts), pa.int64()).combine_chunks()
    after = pc.fill_null(pc.greater(flat, pc.take(target, parents)), False).to_numpy(zero_copy_only=False)
    return int(np.unique(parents.to_numpy(zero_copy_only=False)[after]).size)


def _coverage_arrow(warehouse: Warehouse, settings: SequenceSettings, seqs: pa.Table, user) -> dict[str, int]:
    """:func:`check_coverage` on Arrow (``seqs``: the ``user_sequences`` read; ``user``: its
    :func:`~pipelines.quality.frames.group_ids` of ``user_id``)."""
    import numpy as np
    import pyarrow.compute as pc

    flags = list(settings.require_flags)
    ev = warehouse.read_arrow(EVENTS.name, columns=["event_id", "user_id", "item_id", "event_date", *flags])
    for flag in flags:  # flag_filter: a null flag is not true
        ev = ev.filter(pc.fill_null(ev.column(flag), False))
    if settings.k_core.enabled:  # semi-joins: a null key never matches
        keep = pc.and_(pc.is_in(ev.column("user_id"), value_set=pc.unique(seqs.column("user_id")), skip_nulls=True),
                       pc.is_in(ev.column("item_id"), value_set=pc.unique(seqs.column("target_item_id")), skip_nulls=True))
        ev = ev.filter(keep)
    ev_day, sq_day = ev.column("event_date"), seqs.column("target_date")
    if settings.build == "incremental":  # days after the last built one are not built yet
        last = pc.max(sq_day).as_py() if seqs.num_rows else None
        ev = ev.filter(pc.fill_null(pc.less_equal(ev_day, pa.scalar(last, ev_day.type)), False)) if last is not None else ev.slice(0, 0)
        ev_day = ev.column("event_date")

    def per_day(days) -> tuple[dict, int]:
        counts = pa.table({"d": days}).group_by("d").aggregate([([], "count_all")]).to_pylist()
        named = {r["d"]: r["count_all"] for r in counts if r["d"] is not None}
        return named, sum(r["count_all"] for r in counts if r["d"] is None)

    e_days, e_null = per_day(ev_day)
    s_days, s_null = per_day(sq_day)
    # A full outer join on the day: a null day matches nothing, so each side's null group is a
    # day of its own whose other side is 0.
    days_bad = sum(e_days.get(d, 0) != s_days.get(d, 0) for d in set(e_days) | set(s_days)) + (e_null > 0) + (s_null > 0)
    ev_ids, sq_ids = ev.column("event_id"), seqs.column("event_id")
    missing = int(np.count_nonzero(~pc.is_in(ev_ids, value_set=sq_ids, skip_nulls=True).to_numpy(zero_copy_only=False)))
    extra = int(np.count_nonzero(~pc.is_in(sq_ids, value_set=ev_ids, skip_nulls=True).to_numpy(zero_copy_only=False)))
    pairs = pa.table({"u": user, "p": seqs.column("seq_pos")}).group_by(["u", "p"]).aggregate([([], "count_all")])
    counts = pairs.column("count_all").to_numpy()
    dup = int(counts[counts > 1].sum())
    pos = seqs.column("seq_pos")
    by_user = pa.table({"u": user, "p": pos}).group_by("u").aggregate(
        [([], "count_all"), ("p", "count_distinct"), ("p", "min"), ("p", "max")])
    cnt = by_user.column("count_all").to_numpy()
    distinct = by_user.column("p_count_distinct").to_numpy()
    lo, hi = by_user.column("p_min"), by_user.column("p_max")
    bad = pc.or_kleene(pc.or_kleene(pc.not_equal(lo, 0), pc.not_equal(hi, pa.array(cnt - 1, hi.type))),
                       pa.array(distinct != cnt))
    return {
        "days_where_target_rows_differ_from_events": int(days_bad),
        "events_without_target_row": missing,
        "target_rows_without_event": extra,
        "seq_pos_duplicated": dup,
        "users_with_seq_pos_gaps": count_true(bad),
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
    bucket, :func:`sample_bucket_spark`, falls below the sampled fraction of 2^20: about that
    fraction of every user's rows) with the read path's
    own kernel (:func:`features.sequences.rote.rote_batch`, on Arrow in the driver) and counts
    the same violations as :func:`check_rote` on them (:func:`rote_violations_arrow`), prefixed
    ``rote_view_``, plus ``rote_view_schema_differs`` (1 when the derived columns are not the
    contract's schema). The sample's row count is not returned (``rows`` stays the
    ``user_sequences`` count). Spark selects the sample from the table read (the check step's
    one read of ``user_sequences``) and hands its columns to Arrow.
    """
    from pyspark.sql import functions as F

    from pipelines.sequences.view import ROTE_INPUT_COLUMNS

    if sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, not {sample_rows}")
    manifest = warehouse.manifest(USER_SEQUENCES.name, version)
    seqs = warehouse.read_spark(spark, USER_SEQUENCES.name, version=manifest.version)
    if manifest.row_count > sample_rows:
        below = _sample_below(sample_rows, manifest.row_count)
        seqs = seqs.where(sample_bucket_spark() < below)
    src = seqs.select(*ROTE_INPUT_COLUMNS, "hist_len").toArrow()
    return _rote_view_counts(src, settings)


def check_rote_view_arrow(warehouse: Warehouse, settings: SequenceSettings, version=None,
                          sample_rows: int = ROTE_VIEW_SAMPLE_ROWS) -> dict[str, int]:
    """:func:`check_rote_view` without Spark: the same sample (the same rule on the same
    values, :func:`sample_bucket_arrow`) read with Arrow, the same counts."""
    from pipelines.sequences.view import ROTE_INPUT_COLUMNS

    if sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, not {sample_rows}")
    manifest = warehouse.manifest(USER_SEQUENCES.name, version)
    columns = [*ROTE_INPUT_COLUMNS, "hist_len"]
    src = warehouse.read_arrow(USER_SEQUENCES.name, version=manifest.version, columns=[*columns, "seq_pos"])
    if manifest.row_count > sample_rows:
        below = _sample_below(sample_rows, manifest.row_count)
        src = src.filter(pa.array(sample_bucket_arrow(src) < below))
    return _rote_view_counts(src.select(columns), settings)


#: The view sample's user hash: the first 5 hex digits (20 bits) of sha256(user_id), so Spark
#: (``sha2``) and Python (``hashlib``) compute the same value.
SAMPLE_HEX_DIGITS = 5
#: The sample bucket's multiplier of ``seq_pos`` (odd, so that any 2^20 consecutive positions
#: of one user fall in 2^20 different buckets; 2^32 / golden ratio).
SAMPLE_POS_MULTIPLIER = 2_654_435_761
SAMPLE_BUCKETS = 1 << (4 * SAMPLE_HEX_DIGITS)


def sample_bucket_spark():
    """The view sample's bucket of a ``user_sequences`` row, a Spark column in ``[0, 2^20)``:
    ``(first 20 bits of sha256(user_id) + seq_pos * SAMPLE_POS_MULTIPLIER) mod 2^20``, null
    when ``user_id`` or ``seq_pos`` is (a null bucket is never sampled).

    One hash per user, not per row: a user's consecutive positions spread over the buckets,
    so a sample of fraction ``f`` holds about ``f`` of each user's rows (all users, not a few
    whole histories); :func:`sample_bucket_arrow` computes the same values."""
    from pyspark.sql import functions as F

    user = F.conv(F.substring(F.sha2(F.col("user_id"), 256), 1, SAMPLE_HEX_DIGITS), 16, 10).cast("long")
    return F.pmod(user + F.col("seq_pos").cast("long") * F.lit(SAMPLE_POS_MULTIPLIER), F.lit(SAMPLE_BUCKETS))


def sample_bucket_arrow(table: pa.Table):
    """:func:`sample_bucket_spark` of ``table``'s rows (``user_id``, ``seq_pos``), a float64
    NumPy array, NaN where either is null: ``hashlib`` once per distinct ``user_id``."""
    import hashlib

    import numpy as np
    import pyarrow.compute as pc

    users = pc.dictionary_encode(table.column("user_id").combine_chunks())
    digits = SAMPLE_HEX_DIGITS
    per_user = np.array([int(hashlib.sha256(u.encode()).hexdigest()[:digits], 16) for u in users.dictionary.to_pylist()]
                        + [0], dtype=np.int64)
    idx = pc.fill_null(users.indices, len(users.dictionary)).to_numpy(zero_copy_only=False)
    pos = table.column("seq_pos")
    pos_np = pc.fill_null(pos, 0).to_numpy().astype(np.int64)
    bucket = np.mod(per_user[idx] + pos_np * SAMPLE_POS_MULTIPLIER, SAMPLE_BUCKETS).astype(np.float64)
    missing = pc.or_(pc.is_null(users), pc.is_null(pos)).to_numpy(zero_copy_only=False)
    bucket[missing] = np.nan
    return bucket


def _sample_below(sample_rows: int, rows: int) -> int:
    """Buckets (of 2^20) below which a row is sampled, for about ``sample_rows`` of ``rows``."""
    return -(-sample_rows * SAMPLE_BUCKETS // rows)


def _rote_view_counts(src: pa.Table, settings: SequenceSettings) -> dict[str, int]:
    from features.sequences.rote import rote_batch
    from pipelines.sequences.view import ARROW_CHUNK_ROWS

    levels = tuple(settings.rote_levels)
    want = rote_table_schema(levels)
    parts = [rote_batch(src.slice(i, ARROW_CHUNK_ROWS), levels) for i in range(0, src.num_rows, ARROW_CHUNK_ROWS)]
    rote = pa.concat_tables(parts) if parts else want.empty_table()
    counts = rote_violations_arrow(rote, src.select(["event_id", "hist_len"]), levels)
    counts.pop("rows")
    counts["schema_differs"] = int([(f.name, f.type) for f in rote.schema] != [(f.name, f.type) for f in want])
    return {f"rote_view_{k}": v for k, v in counts.items()}


def rote_violations_arrow(rote: pa.Table, seqs: pa.Table, levels) -> dict[str, int]:
    """:func:`rote_violations` on Arrow tables (the same counts, vectorised with Arrow/NumPy):
    per ``rote`` row its flags, then a full outer join on ``event_id`` with ``seqs``
    (``event_id``, ``hist_len``); a flag that is null (a null list or value) counts as Spark's
    null does, not at all."""
    import pyarrow.compute as pc

    list_cols = [f.name for f in rote_table_schema(levels) if f.name.startswith(("hist_", "gap_")) and f.name != "hist_len"]
    hist_len = rote.column("hist_len")
    misaligned = pa.chunked_array([pa.array([False] * rote.num_rows, pa.bool_())]) if rote.num_rows else pa.chunked_array([], pa.bool_())
    for c in list_cols:
        misaligned = pc.or_kleene(misaligned, pc.not_equal(pc.list_value_length(rote.column(c)), hist_len))
    flags = pa.table({
        "event_id": rote.column("event_id"),
        "hist_len": hist_len,
        "misaligned": misaligned,
        "neg_prev": _exists_negative(rote.column("gap_prev_s")),
        "neg_target": _exists_negative(rote.column("gap_to_target_s")),
        "query_after": pc.greater(rote.column("query_ts_s"), rote.column("target_ts_s")),
    })
    right = pa.table({"event_id": seqs.column("event_id"), "seq_hist_len": seqs.column("hist_len"),
                      "_right": pa.chunked_array([pa.array([True] * seqs.num_rows)]) if seqs.num_rows else pa.chunked_array([], pa.bool_())})
    flags = flags.append_column("_left", pa.chunked_array([pa.array([True] * flags.num_rows)]) if flags.num_rows else pa.chunked_array([], pa.bool_()))
    joined = flags.join(right, "event_id", join_type="full outer", coalesce_keys=True)

    total = count_true

    return {
        "rows": joined.num_rows,
        "rows_not_matching_user_sequences": total(pc.or_(pc.is_null(joined.column("hist_len")), pc.is_null(joined.column("seq_hist_len")))),
        "hist_len_differs": total(pc.not_equal(joined.column("hist_len"), joined.column("seq_hist_len"))),
        "lists_misaligned": total(joined.column("misaligned")),
        "negative_gap_prev": total(joined.column("neg_prev")),
        "negative_gap_to_target": total(joined.column("neg_target")),
        "query_after_target": total(joined.column("query_after")),
    }


def _exists_negative(lists) -> pa.Array:
    """Per list: true when an element is < 0, else null when an element is null, else false
    (Spark's ``exists(l, g -> g < 0)``; a null list gives null)."""
    import numpy as np
    import pyarrow.compute as pc

    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    n = len(lists)
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    neg = pc.fill_null(pc.less(values, 0), False).to_numpy(zero_copy_only=False)
    nul = pc.is_null(values).to_numpy(zero_copy_only=False)
    any_neg = np.zeros(n, dtype=bool)
    any_null = np.zeros(n, dtype=bool)
    any_neg[parents[neg]] = True
    any_null[parents[nul]] = True
    mask = (~any_neg & any_null) | ~pc.is_valid(lists).to_numpy(zero_copy_only=False)
    return pa.array(any_neg, pa.bool_(), mask=mask)
