"""The structural contract check of a committed table: schema as declared, key present and unique.

Every table gets it before its Great Expectations suite (:mod:`pipelines.quality.check`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from features.contracts import TableContract
from pipelines.warehouse import Warehouse


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    details: dict[str, int | str] = field(default_factory=dict)


def check_contract(spark, warehouse: Warehouse, contract: TableContract, partitions: list[str] | None = None,
                   frame=None) -> CheckOutcome:
    """Check the committed table (or some partitions) against its contract.

    ``frame``: the rows to check when the caller has read them already (an Arrow table or a
    Spark DataFrame of those partitions: the check step's one read); else Spark reads them.
    Both give the same counts (``rows``, ``null_<key>``, ``distinct_keys``, ``date_mismatch``).
    """
    manifest = warehouse.manifest(contract.name)
    schema = warehouse.arrow_schema(manifest)
    problems: list[str] = []
    if schema is not None:
        try:
            contract.validate_schema(schema)
        except ValueError as exc:
            problems.append(str(exc))
    if frame is None:
        frame = warehouse.read_spark(spark, contract.name, partitions=partitions)
    key = list(contract.key)
    if _is_arrow(frame):
        row = _arrow_counts(frame, contract, key)
    else:
        row = _spark_counts(frame, contract, key)
    row = {k: int(v or 0) for k, v in row.items()}
    for k in key:
        if row[f"null_{k}"]:
            problems.append(f"{row[f'null_{k}']} rows with null {k}")
    non_null = row["rows"] - max((row[f"null_{k}"] for k in key), default=0)
    if row["distinct_keys"] != non_null:
        problems.append(f"{non_null - row['distinct_keys']} duplicate keys {tuple(key)}")
    if row.get("date_mismatch"):
        problems.append(f"{row['date_mismatch']} rows whose event_date is not the UTC date of event_ts")
    return CheckOutcome(
        passed=not problems,
        description="; ".join(problems) or f"{row['rows']} rows; key {tuple(key)} present and unique; schema matches",
        details=row,
    )


def _is_arrow(frame) -> bool:
    import pyarrow as pa

    return isinstance(frame, pa.Table)


def _checks_event_date(contract: TableContract, columns: list[str]) -> bool:
    return contract.partition_column == "event_date" and "event_ts" in columns


def _spark_counts(df, contract: TableContract, key: list[str]) -> dict:
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("rows")]
    aggs += [F.sum(F.col(k).isNull().cast("long")).alias(f"null_{k}") for k in key]
    aggs.append(F.countDistinct(*[F.col(k) for k in key]).alias("distinct_keys"))
    if _checks_event_date(contract, df.columns):
        aggs.append(F.sum((F.to_date("event_ts") != F.col("event_date")).cast("long")).alias("date_mismatch"))
    return df.agg(*aggs).collect()[0].asDict()


def _arrow_counts(table, contract: TableContract, key: list[str]) -> dict:
    """The Spark aggregate's counts on Arrow: ``countDistinct`` skips keys with a null part;
    ``event_date`` is compared with the UTC date of ``event_ts`` (Spark's session zone is UTC)."""
    import pyarrow.compute as pc

    row = {"rows": table.num_rows}
    for k in key:
        row[f"null_{k}"] = table.column(k).null_count
    keys = table.select(key)
    if key:
        valid = None
        for k in key:
            v = pc.is_valid(keys.column(k))
            valid = v if valid is None else pc.and_(valid, v)
        keys = keys.filter(valid)
        row["distinct_keys"] = keys.group_by(key).aggregate([]).num_rows if keys.num_rows else 0
    else:
        row["distinct_keys"] = 0
    if _checks_event_date(contract, table.column_names):
        from pipelines.quality.frames import arrow_utc_date

        row["date_mismatch"] = pc.sum(pc.not_equal(arrow_utc_date(table.column("event_ts")), table.column("event_date"))).as_py()
    return row
