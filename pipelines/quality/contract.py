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


def check_contract(spark, warehouse: Warehouse, contract: TableContract, partitions: list[str] | None = None) -> CheckOutcome:
    """Check the committed table (or some partitions) against its contract."""
    from pyspark.sql import functions as F

    manifest = warehouse.manifest(contract.name)
    schema = warehouse.arrow_schema(manifest)
    problems: list[str] = []
    if schema is not None:
        try:
            contract.validate_schema(schema)
        except ValueError as exc:
            problems.append(str(exc))
    df = warehouse.read_spark(spark, contract.name, partitions=partitions)
    key = list(contract.key)
    aggs = [F.count(F.lit(1)).alias("rows")]
    aggs += [F.sum(F.col(k).isNull().cast("long")).alias(f"null_{k}") for k in key]
    aggs.append(F.countDistinct(*[F.col(k) for k in key]).alias("distinct_keys"))
    if contract.partition_column == "event_date" and "event_ts" in df.columns:
        aggs.append(F.sum((F.to_date("event_ts") != F.col("event_date")).cast("long")).alias("date_mismatch"))
    row = df.agg(*aggs).collect()[0].asDict()
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
