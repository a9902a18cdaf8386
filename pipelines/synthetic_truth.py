"""Job: the generator's ground-truth file joined to ``events``, as the ``synthetic_truth`` table."""
from __future__ import annotations

from pyspark.sql import functions as F

from features.events import EVENTS
from features.layout import Manifest
from features.synthetic_truth import RAW_TRUTH_SCHEMA, SYNTHETIC_TRUTH
from pipelines.spark import spark_path
from pipelines.warehouse import Warehouse, WarehouseError


def build_synthetic_truth(spark, warehouse: Warehouse, truth_file: str, source: str) -> Manifest:
    """Attach ``event_id`` and ``event_ts`` to each planted truth row.

    The truth file is aligned with the generator's log files by (source_file, source_line);
    the join is exact, and a truth row without its event (for example a day outside the
    ingested partitions) is left out. Raises if an ingested synthetic event has no truth.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    truth = spark.read.schema(from_arrow_schema(RAW_TRUTH_SCHEMA)).parquet(spark_path(str(truth_file)))
    events = (
        warehouse.read_spark(spark, EVENTS.name)
        .where(F.col("source") == source)
        .select("event_id", "event_ts", "source_file", "source_line")
    )
    joined = events.join(truth, on=["source_file", "source_line"], how="left")
    unmatched = joined.where(F.col("interest").isNull()).count()
    if unmatched:
        raise WarehouseError(
            f"{unmatched} synthetic events have no ground-truth row in {truth_file}; regenerate the source"
        )
    return warehouse.write_spark(
        joined.select(*SYNTHETIC_TRUTH.columns),
        SYNTHETIC_TRUTH,
        producer={"job": "build_synthetic_truth", "truth_file": str(truth_file)},
    )
