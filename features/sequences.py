"""Point-in-time user sequences: for every target event, the user's strictly earlier events.

Total order within a user (``docs/sequences.md``): ``event_ts``, then source order
``(source_file, source_line)``, then ``event_id``. Real logs have many equal timestamps (half of
ML-100K's consecutive gaps are 0 s), so time alone is not an order. A history holds exactly the
events that come *before* the target in this order (never the target itself, never a later
event, never a tie that sorts after it), truncated to the last ``max_len``.

Split assignment:

* ``leave_one_out`` (RoTE, SASRec): per user, the last event in the order is ``test``, the
  second to last ``valid``, the rest ``train``; users with fewer than 4 events are all ``train``.
* ``temporal``: ``train`` before ``t1``, ``valid`` in ``[t1, t2)``, ``test`` from ``t2`` (UTC).

Pure DataFrame-to-DataFrame functions; no I/O.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa

from features.contracts import TableContract, register
from features.events import TS_TYPE

ORDER_COLUMNS = ("event_ts", "source_file", "source_line", "event_id")
SPLITS = ("train", "valid", "test")

USER_SEQUENCES = register(
    TableContract(
        name="user_sequences",
        schema=pa.schema(
            [
                pa.field("event_id", pa.string(), nullable=False),
                pa.field("user_id", pa.string(), nullable=False),
                pa.field("target_item_id", pa.string(), nullable=False),
                pa.field("target_ts", TS_TYPE, nullable=False),
                pa.field("hist_item_ids", pa.list_(pa.string())),
                pa.field("hist_ts", pa.list_(TS_TYPE)),
                pa.field("hist_play_time_ms", pa.list_(pa.int64())),
                pa.field("hist_len", pa.int32(), nullable=False),
                pa.field("seq_pos", pa.int32(), nullable=False),
                pa.field("split", pa.string(), nullable=False),
                pa.field("target_date", pa.date32(), nullable=False),
            ]
        ),
        key=("event_id",),
        partition_column="target_date",
        description="One row per target event with the user's strictly earlier events (point in time) and its split.",
        invariants=(
            "every hist_ts[i] <= target_ts, and ties sort before the target by (source_file, source_line, event_id)",
            "hist_len = size(hist_item_ids) = size(hist_ts) = size(hist_play_time_ms) <= max_len",
            "leave_one_out: per user with >= 4 events exactly one test and one valid row",
        ),
    )
)


def build_user_sequences(events, max_len: int = 50, side_columns: tuple[str, ...] = ()):
    """Spark: ``events`` rows to one row per target event with its history arrays.

    Output columns: ``event_id``, ``user_id``, ``target_item_id``, ``target_ts``,
    ``hist_item_ids`` (array<string>), ``hist_ts`` (array<timestamp>), one ``hist_<col>`` array
    per side column, ``hist_len`` (int), and ``seq_pos`` (0-based position of the target in the
    user's order). Arrays are oldest first and all have ``hist_len`` elements.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    order = [F.col(c) for c in ORDER_COLUMNS]
    by_user = Window.partitionBy("user_id").orderBy(*order)
    frame = by_user.rowsBetween(-max_len, -1)
    fields = [F.col(c).alias(f"k{i}") for i, c in enumerate(ORDER_COLUMNS)] + [F.col("item_id").alias("item")]
    fields += [F.col(c).alias(f"s_{c}") for c in side_columns]
    # collect_list over a window frame has no guaranteed order: sort the structs by the order keys.
    hist = F.array_sort(F.collect_list(F.struct(*fields)).over(frame))
    out = events.select("event_id", "user_id", "item_id", *ORDER_COLUMNS[1:3], "event_ts", *side_columns).withColumn(
        "_hist", hist
    )
    cols = [
        F.col("event_id"),
        F.col("user_id"),
        F.col("item_id").alias("target_item_id"),
        F.col("event_ts").alias("target_ts"),
        F.transform("_hist", lambda s: s["item"]).alias("hist_item_ids"),
        F.transform("_hist", lambda s: s["k0"]).alias("hist_ts"),
    ]
    cols += [F.transform("_hist", _field(f"s_{c}")).alias(f"hist_{c}") for c in side_columns]
    cols += [F.size("_hist").alias("hist_len"), (F.row_number().over(by_user) - 1).alias("seq_pos")]
    return out.select(*cols)


def _field(name: str):
    """A one-argument lambda for ``F.transform`` that picks struct field ``name``."""
    return lambda s: s[name]


def assign_split(sequences, mode: str = "leave_one_out", t1: dt.datetime | None = None, t2: dt.datetime | None = None):
    """Spark: add ``split`` (train / valid / test) to the rows of :func:`build_user_sequences`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if mode == "leave_one_out":
        per_user = Window.partitionBy("user_id")
        n = F.max("seq_pos").over(per_user) + 1
        split = (
            F.when(n < 4, "train")
            .when(F.col("seq_pos") == n - 1, "test")
            .when(F.col("seq_pos") == n - 2, "valid")
            .otherwise("train")
        )
    elif mode == "temporal":
        if t1 is None or t2 is None or t2 < t1:
            raise ValueError("temporal split needs t1 <= t2")
        split = (
            F.when(F.col("target_ts") < F.lit(t1), "train")
            .when(F.col("target_ts") < F.lit(t2), "valid")
            .otherwise("test")
        )
    else:
        raise ValueError(f"unknown split mode {mode!r} (leave_one_out or temporal)")
    return sequences.withColumn("split", split)
