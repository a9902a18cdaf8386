"""Job: ``events`` to ``user_sequences`` (point-in-time histories with their split)."""
from __future__ import annotations

from features.events import EVENTS
from features.layout import Manifest
from features.sequences import USER_SEQUENCES, assign_split, build_user_sequences
from pipelines.settings import SequenceSettings
from pipelines.warehouse import Warehouse


def build_sequences_table(spark, warehouse: Warehouse, settings: SequenceSettings) -> Manifest:
    """Rebuild ``user_sequences`` from the committed ``events`` (every partition).

    Histories span partitions, so the whole table is rebuilt and committed atomically.
    """
    from pyspark.sql import functions as F

    events = warehouse.read_spark(spark, EVENTS.name)
    seqs = build_user_sequences(events, max_len=settings.max_len, side_columns=("play_time_ms",))
    seqs = assign_split(seqs, settings.split, settings.valid_from, settings.test_from)
    seqs = seqs.withColumn("target_date", F.to_date("target_ts"))
    return warehouse.write_spark(
        seqs.select(*USER_SEQUENCES.columns),
        USER_SEQUENCES,
        producer={"job": "build_sequences_table", "max_len": str(settings.max_len), "split": settings.split},
    )


def check_sequences(spark, warehouse: Warehouse, settings: SequenceSettings) -> dict[str, int]:
    """Count violations of the table's invariants (all zero when it is correct)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = warehouse.read_spark(spark, USER_SEQUENCES.name)
    per_user = Window.partitionBy("user_id")
    flagged = df.select(
        F.exists("hist_ts", lambda t: t > F.col("target_ts")).alias("future"),
        (F.col("hist_len") > settings.max_len).alias("too_long"),
        ((F.size("hist_item_ids") != F.col("hist_len")) | (F.size("hist_ts") != F.col("hist_len"))
         | (F.size("hist_play_time_ms") != F.col("hist_len"))).alias("misaligned"),
        (F.col("split") == "test").cast("int").alias("is_test"),
        (F.col("split") == "valid").cast("int").alias("is_valid"),
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
    ]
    if settings.split == "leave_one_out":
        aggs.append(F.sum(loo_bad.cast("long")).alias("rows_of_users_with_bad_split_counts"))
    row = flagged.agg(*aggs).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}
