"""The same staging as the Beam pipeline, run as a plain Spark job.

Each source file is read by one Spark task through the same adapter and the same rules
(``SourceAdapter.read_records``), so validation is identical; occurrences, event ids and
de-duplication use the window functions of ``features.events``. The output is the stage
directory layout of :mod:`pipelines.beam_ingest` (``accepted/``, ``rejected/``,
``counts.json``) and the same dead-letter messages, so the commit step does not care which
engine staged the run. ``repeated_lines`` is honoured as in the Beam pipeline.
Selected with ``ingest.engine: spark``; the benchmark compares the two engines.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa

from features.events import ID_SEPARATOR, STAGED_EVENT_SCHEMA, add_event_ids
from features.rejections import REJECTED_RECORD_SCHEMA, Reason
from pipelines.beam_ingest import ACCEPTED_SCHEMA, COUNTS_FILE, IngestBalanceError, StageCounts

KIND = "_kind"  # accepted | rejected | count


def _combined_schema() -> pa.Schema:
    fields = [pa.field(KIND, pa.string())]
    seen = {KIND}
    for f in list(STAGED_EVENT_SCHEMA) + list(REJECTED_RECORD_SCHEMA) + [pa.field("records", pa.int64())]:
        if f.name not in seen:
            fields.append(pa.field(f.name, f.type, nullable=True))
            seen.add(f.name)
    return pa.schema(fields)


COMBINED = _combined_schema()


def _as_combined(table: pa.Table, kind: str) -> pa.RecordBatch:
    n = table.num_rows
    cols = []
    for f in COMBINED:
        if f.name == KIND:
            cols.append(pa.array([kind] * n, pa.string()))
        elif f.name in table.column_names:
            cols.append(table.column(f.name).combine_chunks().cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.RecordBatch.from_arrays(cols, schema=COMBINED)


def _reader(name, config, rules, chunk_rows, now, follow_symlinks=False):
    def read(batches):
        from pipelines.sources import adapter_for

        adapter = adapter_for(name, config)
        for batch in batches:
            for file in batch.column("file").to_pylist():
                records = 0
                convs = adapter.read_records(
                    file, rules, chunk_rows=chunk_rows, now=now, on_file_error="reject", follow_symlinks=follow_symlinks
                )
                for conv in convs:
                    records += conv.records
                    if conv.staged.num_rows:
                        yield _as_combined(conv.staged, "accepted")
                    if conv.rejected.num_rows:
                        yield _as_combined(conv.rejected, "rejected")
                count = pa.table({"source_file": [os.path.basename(file)], "records": [records]})
                yield _as_combined(count, "count")

    return read


def run_stage_spark(
    spark, files, stage_dir, name, config, rules, chunk_rows=500_000, now: dt.datetime | None = None,
    repeated_lines: str = "duplicate", follow_symlinks: bool = False,
) -> StageCounts:
    """Stage ``files`` with Spark into ``stage_dir``; raise if the counts do not balance.

    ``repeated_lines``, ``follow_symlinks``: as for :func:`pipelines.beam_ingest.run_stage`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from pipelines.spark import spark_path

    os.makedirs(stage_dir, exist_ok=True)
    file_df = spark.createDataFrame([(f,) for f in sorted(files)], "file string").repartition(max(1, len(files)))
    reader = _reader(name, config, rules, chunk_rows, now, follow_symlinks)
    combined = file_df.mapInArrow(reader, from_arrow_schema(COMBINED)).persist()
    try:
        staged = combined.where(F.col(KIND) == "accepted").select(*STAGED_EVENT_SCHEMA.names)
        keyed = add_event_ids(staged, repeated_lines)
        first = Window.partitionBy("event_id").orderBy("source_file", "source_line")
        ranked = (
            keyed.withColumn("_rank", F.row_number().over(first))
            .withColumn("_first_file", F.first("source_file").over(first))
            .withColumn("_first_line", F.first("source_line").over(first).cast("string"))
            .persist()
        )
        accepted = ranked.where("_rank = 1").select(*ACCEPTED_SCHEMA.names)
        dups = ranked.where("_rank > 1").select(
            "source", "source_file", "source_line",
            F.regexp_replace("record_key", ID_SEPARATOR, ",").alias("raw_record"),
            F.lit(Reason.DUPLICATE.value).alias("reason_code"),
            # The text of pipelines.beam_ingest.duplicate_reason.
            F.when(
                F.col("source_file") == F.col("_first_file"),
                F.concat(F.lit("exact repeat of line "), F.col("_first_line"), F.lit(" of the same file")),
            )
            .otherwise(F.concat(F.lit("same event_id as "), F.col("_first_file"), F.lit(" line "), F.col("_first_line")))
            .alias("reason"),
        )
        rejected = combined.where(F.col(KIND) == "rejected").select(*REJECTED_RECORD_SCHEMA.names).unionByName(dups)
        accepted.write.mode("overwrite").parquet(spark_path(os.path.join(stage_dir, "accepted")))
        rejected.write.mode("overwrite").parquet(spark_path(os.path.join(stage_dir, "rejected")))
        by_file = {r.source_file: int(r.records) for r in combined.where(F.col(KIND) == "count").select("source_file", "records").collect()}
        by_reason = {r.reason_code: int(r["count"]) for r in rejected.groupBy("reason_code").count().collect()}
        n_accepted = accepted.count()
        ranked.unpersist()
    finally:
        combined.unpersist()
    duplicates = by_reason.get(Reason.DUPLICATE.value, 0)
    result = StageCounts(
        records_in=sum(by_file.values()),
        accepted=n_accepted,
        rejected=sum(by_reason.values()) - duplicates,
        duplicates=duplicates,
        by_reason=by_reason,
        by_file=by_file,
    )
    with open(os.path.join(stage_dir, COUNTS_FILE), "w") as fh:
        json.dump(result.__dict__, fh, sort_keys=True)
    if result.records_in != result.accepted + result.rejected + result.duplicates:
        raise IngestBalanceError(
            f"records in {result.records_in:,} != accepted {result.accepted:,} + rejected {result.rejected:,} "
            f"+ duplicates {result.duplicates:,}"
        )
    return result
