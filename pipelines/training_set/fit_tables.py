"""Labels and duration statistics as features: the build whose fit window ended at or before
each example's time (``watch_time_labels``, ``duration_stats``; docs/python-api.md)."""
from __future__ import annotations

from pipelines.training_set.spec import FeatureError, out_name


def _round_s(col):
    """Milliseconds to whole seconds, rounded half to even (as ``features.labels.math.round_ms_to_s``)."""
    from pyspark.sql import functions as F

    q = F.floor(col / 1000)
    r = col - q * 1000
    up = (r > 500) | ((r == 500) & (F.pmod(q, 2) == 1))
    return (q + F.when(up, 1).otherwise(0)).cast("long")


def join_fit_table(spark, warehouse, table, result, found, chosen, want, idx, version_of, ts_column):
    from pyspark.sql import functions as F

    fit_end = out_name(table, "fit_end")
    ends = F.lit(None).cast("date")
    for i, b in enumerate(found):
        ends = F.when(F.col(idx) == i, F.lit(b.valid_from.date())).otherwise(ends)
    frames = [warehouse.read_spark(spark, table, version=found[i].version).withColumn(idx, F.lit(i)) for i in chosen]
    if table == "duration_stats":
        if "duration_ms" in result.columns:
            result = result.withColumn("_duration_s", _round_s(F.col("duration_ms").cast("long")))
        else:
            if "item_id" not in result.columns:
                raise FeatureError("duration_stats features need duration_ms or item_id in the spine")
            items = warehouse.read_spark(spark, "items", version=version_of("items"))
            if "duration_ms" not in items.columns:
                raise FeatureError("duration_stats features need duration_ms in the spine (items has none)")
            items = items.select(F.col("item_id").cast("string").alias("item_id"),
                                 _round_s(F.col("duration_ms").cast("long")).alias("_duration_s"))
            result = result.join(items, "item_id", "left")
        keys = ["_duration_s", idx]
        skip = {"duration_s", "fit_start", "fit_end"}
    else:
        keys = ["event_id", idx] if "event_id" in result.columns else ["user_id", "item_id", "_t", idx]
        if "item_id" not in result.columns and "event_id" not in result.columns:
            raise FeatureError("watch_time_labels features need event_id, or item_id, in the spine")
        skip = {"event_id", "user_id", "item_id", "event_ts", "event_date"}
    if frames:
        cols = [c for c in frames[0].columns if c not in skip and c != idx]
    else:
        from features.labels import DURATION_STATS, WATCH_TIME_LABELS

        contract = DURATION_STATS if table == "duration_stats" else WATCH_TIME_LABELS
        cols = [c for c in contract.columns if c not in skip]
    if want is None:
        want = cols
    bad = [c for c in want if c not in cols]
    if bad:
        raise FeatureError(f"{table} has no feature column(s) {bad}: one of {', '.join(cols)}")
    if frames:
        union = frames[0]
        for f in frames[1:]:
            union = union.unionByName(f, allowMissingColumns=True)
        if table == "duration_stats":
            union = union.select(F.col("duration_s").alias("_duration_s"), idx,
                                 *[F.col(c).alias(out_name(table, c)) for c in want])
        else:
            from pyspark.sql import Window

            if keys[0] == "event_id":
                union = union.select("event_id", idx, *[F.col(c).alias(out_name(table, c)) for c in want])
            else:
                first = Window.partitionBy("user_id", "item_id", "_t", idx).orderBy("event_id")
                union = (union.withColumn("_t", F.unix_micros("event_ts"))
                         .withColumn("_n", F.row_number().over(first)).where("_n = 1")
                         .select("user_id", "item_id", "_t", idx, *[F.col(c).alias(out_name(table, c)) for c in want]))
        result = result.join(union, keys, "left")
    else:
        from features.labels import DURATION_STATS, WATCH_TIME_LABELS
        from pyspark.sql.pandas.types import from_arrow_type

        contract = DURATION_STATS if table == "duration_stats" else WATCH_TIME_LABELS
        for c in want:
            typ = from_arrow_type(contract.schema.field(c).type) if c in contract.columns else None
            result = result.withColumn(out_name(table, c), F.lit(None).cast(typ.simpleString() if typ else "double"))
    result = result.withColumn(fit_end, ends)
    return result.drop("_duration_s")


# ---- output --------------------------------------------------------------------------
