"""Point-in-time user sequences: for every target event, the user's strictly earlier events.

Total order within a user (``docs/sequences.md``): ``event_ts``, then source order
``(source_file, source_line)``, then ``event_id``. Real logs have many equal timestamps (half of
ML-100K's consecutive gaps are 0 s), so time alone is not an order. A history holds exactly the
events that come *before* the target in this order (never the target itself, never a later
event, never a tie that sorts after it), truncated to the last ``max_len``.

Split assignment (leave-one-out or temporal) is :mod:`features.sequences.splits`; the plan of an
incremental build is :mod:`features.sequences.incremental`. Both are re-exported here.

How it runs. Events are shuffled once by user and sorted within each Spark partition by
``(user_id, order keys)``; :func:`histories_from_sorted` then builds every history of a
partition with vectorised Arrow/NumPy gathers (``mapInArrow``), streaming users across record
batches, so memory is bounded by one batch plus the largest single user. The histories of a
*new day* can be built from a compact seed per user (its last ``max_len`` events and next
position, taken from the table's earlier partitions) instead of from every earlier event:
:func:`seeds_from_sequences` and :func:`build_user_sequences` with ``seeds``.

Spark helpers take and return DataFrames and do no I/O; the Arrow kernel is pure.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.sequences.incremental import IncrementalPlan, plan_incremental
from features.sequences.splits import (
    LOO_MIN_EVENTS,
    SPLIT_MODES,
    SPLITS,
    check_split_args,
    check_temporal_bounds,
    split_labels,
)

ORDER_COLUMNS = ("event_ts", "source_file", "source_line", "event_id")


def _group_starts(users: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Index of each row's first row of the same user (rows sorted by user)."""
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(n, dtype=bool)
    if n > 1:
        change[1:] = pc.not_equal(users.slice(1), users.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return np.maximum.accumulate(np.where(change, np.arange(n), 0))


def history_gather(
    users: pa.ChunkedArray | pa.Array,
    max_len: int,
    is_event: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    t_us: np.ndarray | None = None,
    ttl_us: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The one point-in-time history kernel: which rows make up each query row's history.

    The rows are sorted by user, then in the order a history is taken in (the project's total
    order for ``user_sequences``; time with examples before events of their time for a training
    set). ``is_event`` (bool per row, default all): the rows that can be in a history;
    ``queries`` (row indices, default all): the rows that get one. A query's history is the
    event rows of its user *before* it in the table, the last ``max_len``; with ``ttl_us`` (and
    ``t_us``, int64 µs per row, sorted within a user) only those at or after ``t - ttl_us``.

    Returns ``(hist_len, take)``: per query its history length (int64), and the row index of
    every history position (int64, query after query, oldest first), ready for an Arrow
    ``take`` and ``ListArray.from_arrays`` with the offsets ``cumsum(hist_len)``. Every history
    builder (the ``user_sequences`` job, a training set's history) calls this one function.
    """
    n = len(users)
    starts = _group_starts(users)
    if is_event is None:  # every row is an event: its rank among events is its row
        ev_before = np.arange(n + 1, dtype=np.int64)
        ev_pos = np.arange(n, dtype=np.int64)
    else:
        ev_before = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(is_event, out=ev_before[1:])  # events before row i, whole table
        ev_pos = np.flatnonzero(is_event)
    q = np.arange(n, dtype=np.int64) if queries is None else np.asarray(queries, dtype=np.int64)
    n_before = ev_before[q] - ev_before[starts[q]]  # the user's events before the query
    if ttl_us is not None and len(q):
        if t_us is None:
            raise ValueError("a ttl needs the row times t_us")
        t = np.asarray(t_us, dtype=np.int64)
        group = np.cumsum(np.r_[True, starts[1:] != starts[:-1]]) - 1
        values = np.concatenate([t[ev_pos], t[q] - ttl_us])
        _, rank = np.unique(values, return_inverse=True)
        width = int(rank.max()) + 2
        ev_key = group[ev_pos] * width + rank[: len(ev_pos)]
        q_key = group[q] * width + rank[len(ev_pos):]
        # the user's events older than t - ttl (events are sorted by time within a user)
        older = np.searchsorted(ev_key, q_key, side="left") - ev_before[starts[q]]
        n_before = n_before - np.maximum(older, 0)
    hist_len = np.minimum(n_before, max_len).astype(np.int64)
    offsets = np.zeros(len(q) + 1, dtype=np.int64)
    np.cumsum(hist_len, out=offsets[1:])
    total = int(offsets[-1])
    if total >= 2**31:
        raise ValueError(f"{total} history values in one call exceed Arrow list offsets; lower max_len or the batch size")
    # query j's history: the events of ranks ev_before[q_j] - hist_len_j .. ev_before[q_j] - 1
    first = np.repeat(ev_before[q] - hist_len, hist_len)
    ranks = first + (np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], hist_len))
    return hist_len, ev_pos[ranks] if total else np.zeros(0, np.int64)


def histories_of_complete_users(
    table: pa.Table,
    max_len: int,
    side_columns: Sequence[str],
    split: str,
    valid_from: dt.datetime | None = None,
    test_from: dt.datetime | None = None,
) -> pa.Table:
    """Histories for rows that hold *every* row of each of their users, sorted in the total order.

    ``table`` columns: ``event_id``, ``user_id``, ``item_id``, ``event_ts``, the side columns, and
    optionally ``_seed`` (bool: a row that only seeds later histories and is not output) and
    ``_base`` (int64: added to each row's position in its group, so a user's seeds plus base give
    the true ``seq_pos``). Returns the sequence columns (no ``target_date``), seeds dropped.
    Every row is an event and a query of :func:`history_gather`.
    """
    n = table.num_rows
    starts = _group_starts(table.column("user_id"))
    pos_in_group = np.arange(n, dtype=np.int64) - starts
    # Row i's history is rows i - hist_len[i] .. i - 1 (same user, earlier in the order).
    hist_len, idx = history_gather(table.column("user_id"), max_len)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(hist_len, out=offsets[1:])
    off = pa.array(offsets, pa.int32())
    idx_arr = pa.array(idx, pa.int64())

    def as_list(name: str) -> pa.Array:
        col = table.column(name).combine_chunks()
        return pa.ListArray.from_arrays(off, col.take(idx_arr))

    base = table.column("_base").to_numpy() if "_base" in table.column_names else np.zeros(n, dtype=np.int64)
    seq_pos = pos_in_group + base
    ts_us = table.column("event_ts").cast(pa.int64()).to_numpy()
    user_events = None
    if split == "leave_one_out":
        group = np.cumsum(pos_in_group == 0) - 1
        user_events = np.bincount(group)[group] + base
    columns = {
        "event_id": table.column("event_id"),
        "user_id": table.column("user_id"),
        "target_item_id": table.column("item_id"),
        "target_ts": table.column("event_ts"),
        **{f"target_{c}": table.column(c) for c in side_columns},
        "hist_item_ids": as_list("item_id"),
        "hist_ts": as_list("event_ts"),
        **{f"hist_{c}": as_list(c) for c in side_columns},
        "hist_len": pa.array(hist_len, pa.int32()),
        "seq_pos": pa.array(seq_pos, pa.int32()),
        "split": split_labels(seq_pos, user_events, ts_us, split, valid_from, test_from),
    }
    out = pa.table(columns)
    if "_seed" in table.column_names:
        out = out.filter(pc.invert(table.column("_seed")))
    return out


def histories_from_sorted(
    batches: Iterator[pa.RecordBatch],
    max_len: int,
    side_columns: Sequence[str],
    split: str,
    valid_from: dt.datetime | None = None,
    test_from: dt.datetime | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream record batches sorted by ``(user_id, order)`` into history batches.

    A user may span batches: the rows of the last user of a batch are carried into the next
    one, so each call of :func:`histories_of_complete_users` sees whole users.
    """
    carry: pa.Table | None = None
    for batch in batches:
        table = pa.Table.from_batches([batch])
        if carry is not None and carry.num_rows:
            table = pa.concat_tables([carry, table])
        if table.num_rows == 0:
            continue
        starts = _group_starts(table.column("user_id"))
        cut = int(starts[-1])
        carry = table.slice(cut)
        if cut:
            done = histories_of_complete_users(table.slice(0, cut), max_len, side_columns, split, valid_from, test_from)
            yield from done.to_batches()
    if carry is not None and carry.num_rows:
        done = histories_of_complete_users(carry, max_len, side_columns, split, valid_from, test_from)
        yield from done.to_batches()


# --------------------------------------------------------------------------- Spark


def sequence_schema(events_schema, side_columns: Sequence[str]):
    """Spark schema of :func:`build_user_sequences`'s output for an events schema."""
    from pyspark.sql import types as T

    def typ(name):
        return events_schema[name].dataType

    fields = [
        T.StructField("event_id", T.StringType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("target_item_id", typ("item_id")),
        T.StructField("target_ts", typ("event_ts")),
        *[T.StructField(f"target_{c}", typ(c)) for c in side_columns],
        T.StructField("hist_item_ids", T.ArrayType(typ("item_id"))),
        T.StructField("hist_ts", T.ArrayType(typ("event_ts"))),
        *[T.StructField(f"hist_{c}", T.ArrayType(typ(c))) for c in side_columns],
        T.StructField("hist_len", T.IntegerType()),
        T.StructField("seq_pos", T.IntegerType()),
        T.StructField("split", T.StringType()),
    ]
    return T.StructType(fields)


def sorted_for_histories(
    events,
    side_columns: Sequence[str] = (),
    seeds=None,
    partitions: int | None = None,
):
    """Spark: the event rows :func:`histories_from_sorted` consumes, shuffled by user and sorted.

    With ``seeds`` (from :func:`seeds_from_sequences`), each seeded user's stored events come
    first as flagged rows (``_seed``) and every row carries the user's ``_base`` position.
    ``partitions``: the number of user partitions (default ``spark.sql.shuffle.partitions``).
    """
    from pyspark.sql import functions as F

    side_columns = tuple(side_columns)
    cols = ["event_id", "user_id", "item_id", "event_ts", *side_columns]
    rows = events.select(*cols, *ORDER_COLUMNS[1:3])
    if seeds is not None:
        rows = (
            rows.join(seeds.select("user_id", "_base"), "user_id", "left")
            .withColumn("_base", F.coalesce("_base", F.lit(0).cast("long")))
            .withColumn("_seed", F.lit(False))
            .withColumn("_seed_idx", F.lit(0))
            .withColumn("_phase", F.lit(1))
        )
        seed_rows = seed_events(seeds, side_columns).withColumn("_phase", F.lit(0))
        rows = rows.unionByName(seed_rows, allowMissingColumns=True)
        sort = ["user_id", "_phase", "_seed_idx", *ORDER_COLUMNS]
        keep = [*cols, "_seed", "_base"]
    else:
        sort = ["user_id", *ORDER_COLUMNS]
        keep = cols
    n = partitions or int(events.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    # Shuffle by a hash *expression* of the user, not the bare column: Spark 4 treats a union of
    # user-partitioned inputs (events joined to seeds, plus the seed rows) as already partitioned
    # by user_id and drops a plain repartition, which would split a user's rows across tasks.
    return rows.repartition(n, F.xxhash64("user_id")).sortWithinPartitions(*sort).select(*keep)


def build_user_sequences(
    events,
    max_len: int = 50,
    side_columns: Sequence[str] = (),
    split: str = "leave_one_out",
    valid_from: dt.datetime | None = None,
    test_from: dt.datetime | None = None,
    seeds=None,
    partitions: int | None = None,
):
    """Spark: ``events`` rows to one row per target event with its history arrays and split.

    Output columns: ``event_id``, ``user_id``, ``target_item_id``, ``target_ts``,
    ``target_<side>``, ``hist_item_ids``, ``hist_ts``, ``hist_<side>`` (arrays, oldest first,
    ``hist_len`` elements each), ``hist_len``, ``seq_pos`` (0-based position of the target in
    the user's order) and ``split``.

    ``seeds`` (from :func:`seeds_from_sequences`): per user, the last events before ``events``
    begin and the user's next position; histories then continue from them, so a new day is
    built without reading every earlier event. Seeded builds must not use leave-one-out (a
    user's last event is not known until the log ends).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    check_split_args(split, valid_from, test_from, seeds is not None)
    side_columns = tuple(side_columns)
    ordered = sorted_for_histories(events, side_columns, seeds, partitions)
    schema = sequence_schema(events.schema, side_columns)

    def kernel(batches):
        yield from histories_from_sorted(batches, max_len, side_columns, split, valid_from, test_from)

    return ordered.mapInArrow(kernel, schema)


def seeds_from_sequences(prior, users, max_len: int, side_columns: Sequence[str] = ("play_time_ms",)):
    """Spark: per user in ``users``, the seed a later build continues from.

    ``prior`` is the ``user_sequences`` rows of earlier days. For each user its latest row
    (highest ``seq_pos``) holds the user's last ``max_len`` earlier events plus the target
    itself: the last ``max_len`` of those are the seed, and ``seq_pos + 1`` is the next
    position. Columns: ``user_id``, ``seed_item_ids``, ``seed_ts``, ``seed_<side>`` (arrays,
    oldest first), ``_base`` (next position minus the number of seed events).
    """
    from pyspark.sql import functions as F

    latest = (
        prior.join(users.select("user_id").distinct(), "user_id", "left_semi")
        .groupBy("user_id")
        # (seq_pos, event_id): deterministic even on a table with a repeated seq_pos (which the
        # blocking coverage check flags)
        .agg(F.max_by(F.struct(*[c for c in prior.columns if c != "user_id"]), F.struct("seq_pos", "event_id")).alias("r"))
        .select("user_id", "r.*")
    )

    def tail(hist: str, target: str):
        full = F.concat(F.col(hist), F.array(F.col(target)))
        return F.slice(full, F.greatest(F.size(full) - F.lit(max_len) + 1, F.lit(1)), max_len)

    seeded = latest.select(
        "user_id",
        tail("hist_item_ids", "target_item_id").alias("seed_item_ids"),
        tail("hist_ts", "target_ts").alias("seed_ts"),
        *[tail(f"hist_{c}", f"target_{c}").alias(f"seed_{c}") for c in side_columns],
        (F.col("seq_pos") + 1).cast("long").alias("_next"),
    )
    return seeded.withColumn("_base", F.col("_next") - F.size("seed_item_ids")).drop("_next")


def seed_events(seeds, side_columns: Sequence[str]):
    """Spark: seeds exploded back into (flagged) event rows, in their stored order."""
    from pyspark.sql import functions as F

    zipped = F.arrays_zip(
        F.col("seed_item_ids").alias("item_id"),
        F.col("seed_ts").alias("event_ts"),
        *[F.col(f"seed_{c}").alias(c) for c in side_columns],
    )
    exploded = seeds.select("user_id", "_base", F.posexplode(zipped).alias("_seed_idx", "e"))
    return exploded.select(
        F.lit(None).cast("string").alias("event_id"),
        "user_id",
        F.col("e.item_id").alias("item_id"),
        F.col("e.event_ts").alias("event_ts"),
        *[F.col(f"e.{c}").alias(c) for c in side_columns],
        F.lit(None).cast("string").alias("source_file"),
        F.lit(None).cast("long").alias("source_line"),
        "_base",
        F.lit(True).alias("_seed"),
        F.col("_seed_idx").cast("int").alias("_seed_idx"),
    )


def kcore_filter(events, min_user_events: int = 0, min_item_events: int = 0, max_iterations: int = 50):
    """Spark: iterative k-core: keep events whose user has ``>= min_user_events`` events and whose
    item has ``>= min_item_events`` events, recounting until nothing changes.

    Dropping a rare item can push a user under its bound and the other way round, so the filter
    repeats until a pass removes nothing (RecBole's ``user_inter_num_interval`` /
    ``item_inter_num_interval`` lower bounds). Returns ``(events, passes)``; raises
    ``RuntimeError`` if ``max_iterations`` passes do not converge. 0 disables a bound.
    """
    from pyspark.sql import functions as F

    if min_user_events <= 1 and min_item_events <= 1:
        return events, 0
    current = events
    rows = current.count()
    for passes in range(1, max_iterations + 1):
        nxt = current
        if min_user_events > 1:
            users = nxt.groupBy("user_id").count().where(F.col("count") >= min_user_events).select("user_id")
            nxt = nxt.join(users, "user_id", "left_semi")
        if min_item_events > 1:
            items = nxt.groupBy("item_id").count().where(F.col("count") >= min_item_events).select("item_id")
            nxt = nxt.join(items, "item_id", "left_semi")
        nxt = nxt.localCheckpoint(eager=True)
        new_rows = nxt.count()
        current = nxt
        if new_rows == rows:
            return current, passes
        rows = new_rows
    raise RuntimeError(f"k-core filter did not converge in {max_iterations} passes")


__all__ = [
    "LOO_MIN_EVENTS", "ORDER_COLUMNS", "SPLIT_MODES", "SPLITS", "IncrementalPlan", "build_user_sequences",
    "check_split_args", "check_temporal_bounds", "histories_from_sorted", "histories_of_complete_users", "history_gather",
    "kcore_filter", "plan_incremental", "seed_events", "seeds_from_sequences", "sequence_schema",
    "sorted_for_histories", "split_labels",
]  # fmt: skip
