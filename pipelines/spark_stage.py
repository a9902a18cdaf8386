"""The same staging as the Beam pipeline, run as a plain Spark job.

Each source file is read by one Spark task through the same adapter and the same rules
(``SourceAdapter.read_records``), so validation is identical; event ids and occurrences are
``features.events``' rule, and the first copy of a repeated id (by file and line) is kept, as
Beam keeps it. Nothing is cached in Spark's block manager: the reader's rows are written once
as Parquet and read back (:func:`run_stage_spark`). The output is the stage
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

from features.events import ID_SEPARATOR, STAGED_EVENT_SCHEMA
from features.rejections import REJECTED_RECORD_SCHEMA, Reason
from pipelines.beam_ingest import ACCEPTED_SCHEMA, COUNTS_FILE, IngestBalanceError, StageCounts

KIND = "_kind"  # accepted | rejected | count
#: Intermediate folders of a stage directory, removed when the stage is written.
PARSED_DIR, KEYED_DIR, REPEATED_DIR = "_parsed", "_keyed", "_repeated"
#: Repeated ids up to which their table is broadcast to the join that marks later copies
#: (about 60 bytes each); above it Spark plans the join itself.
BROADCAST_REPEATED_IDS = 2_000_000


def _combined_schema() -> pa.Schema:
    fields = [pa.field(KIND, pa.string())]
    seen = {KIND}
    for f in list(STAGED_EVENT_SCHEMA) + list(REJECTED_RECORD_SCHEMA) + [pa.field("records", pa.int64())]:
        if f.name not in seen:
            fields.append(pa.field(f.name, f.type, nullable=True))
            seen.add(f.name)
    return pa.schema(fields)


COMBINED = _combined_schema()
#: The reader's rows as written to ``_parsed/``: :data:`COMBINED` and the accepted rows' ids.
PARSED = COMBINED.append(pa.field("event_id", pa.string()))
#: ``_repeated/``: each id staged more than once and its first copy's (file, line).
REPEATED = pa.schema([("event_id", pa.string()), ("_first_file", pa.string()), ("_first_line", pa.int64())])


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


def read_stage_dir(spark, path: str, schema: pa.Schema):
    """The Parquet files of a local stage folder as a Spark DataFrame of ``schema`` (an empty
    one when the folder is absent or holds no file, as a run with nothing to write leaves it)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from pipelines.spark import spark_path

    files = [f for f in (os.listdir(path) if os.path.isdir(path) else []) if f.endswith(".parquet")]
    if not files:
        return spark.createDataFrame([], from_arrow_schema(schema))
    return spark.read.schema(from_arrow_schema(schema)).parquet(*[spark_path(os.path.join(path, f)) for f in sorted(files)])


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

    ``repeated_lines``, ``follow_symlinks``: as for :func:`pipelines.beam_ingest.run_stage`.

    Passes, none of which caches a dataset in Spark's block manager (docs/ingestion.md):

    1. the reader (Python, one task per file) runs once; its rows (accepted, rejected, and one
       count per file) are written to ``_parsed/`` as Parquet, with the event ids of the
       accepted rows (row-local under ``repeated_lines: duplicate``; under ``distinct`` the
       occurrences need a window by file and key, so the accepted rows with their ids are
       written once more, to ``_keyed/``);
    2. the ids seen more than once, with their first copy's (file, line), from a grouping of
       the ids, files and lines only (the one shuffle), written to ``_repeated/``;
    3. ``accepted/``: every accepted row that is no later copy of a repeated id (its
       ``_repeated`` match broadcast when small);
    4. ``rejected/``: the reader's dead letters and the later copies, each with its reason
       (with no repeated id, 3 and 4 are plain copies: no join).

    The counts are read from the reader's per-file rows and the written outputs, and the
    intermediate folders are removed before returning.
    """
    import shutil

    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from features.events import add_event_ids, check_repeated_lines, event_id_column
    from pipelines.spark import spark_path

    row_local_ids = check_repeated_lines(repeated_lines) == "duplicate"
    os.makedirs(stage_dir, exist_ok=True)
    parsed_dir, keyed_dir, repeated_dir = (os.path.join(stage_dir, d) for d in (PARSED_DIR, KEYED_DIR, REPEATED_DIR))
    try:
        # 1. Parse once.
        file_df = spark.createDataFrame([(f,) for f in sorted(files)], "file string").repartition(max(1, len(files)))
        reader = _reader(name, config, rules, chunk_rows, now, follow_symlinks)
        combined = file_df.mapInArrow(reader, from_arrow_schema(COMBINED))
        ids = event_id_column(F.lit("0")) if row_local_ids else F.lit(None).cast("string")
        combined = combined.withColumn("event_id", F.when(F.col(KIND) == "accepted", ids))
        combined.write.mode("overwrite").parquet(spark_path(parsed_dir))
        parsed = read_stage_dir(spark, parsed_dir, PARSED)

        def kind(k: str):
            return parsed.where(F.col(KIND) == k)

        by_file = {r.source_file: int(r.records) for r in kind("count").select("source_file", "records").collect()}
        keyed = kind("accepted").select(*ACCEPTED_SCHEMA.names)
        if not row_local_ids:
            add_event_ids(keyed.drop("event_id"), repeated_lines).select(*ACCEPTED_SCHEMA.names).write.mode(
                "overwrite"
            ).parquet(spark_path(keyed_dir))
            keyed = read_stage_dir(spark, keyed_dir, ACCEPTED_SCHEMA)

        # 2. The repeated ids and their first copies: min (file, line) = the first by that order.
        first = F.min(F.struct("source_file", "source_line"))
        (
            keyed.groupBy("event_id")
            .agg(F.count(F.lit(1)).alias("_copies"), first.alias("_first"))
            .where(F.col("_copies") > 1)
            .select("event_id", F.col("_first.source_file").alias("_first_file"), F.col("_first.source_line").alias("_first_line"))
            .write.mode("overwrite").parquet(spark_path(repeated_dir))
        )
        repeated = read_stage_dir(spark, repeated_dir, REPEATED)
        repeated_ids = repeated.count()
        reader_rejected = kind("rejected").select(*REJECTED_RECORD_SCHEMA.names)
        if repeated_ids == 0:
            accepted, rejected = keyed, reader_rejected
        else:
            # 3, 4. One left join marks the later copies; the small side is broadcast.
            side = F.broadcast(repeated) if repeated_ids <= BROADCAST_REPEATED_IDS else repeated
            marked = keyed.join(side, "event_id", "left")
            later = F.col("_first_file").isNotNull() & ~(
                (F.col("source_file") == F.col("_first_file")) & (F.col("source_line") == F.col("_first_line"))
            )
            accepted = marked.where(~later).select(*ACCEPTED_SCHEMA.names)
            first_line = F.col("_first_line").cast("string")
            dups = marked.where(later).select(
                "source", "source_file", "source_line",
                F.regexp_replace("record_key", ID_SEPARATOR, ",").alias("raw_record"),
                F.lit(Reason.DUPLICATE.value).alias("reason_code"),
                # The text of pipelines.beam_ingest.duplicate_reason.
                F.when(
                    F.col("source_file") == F.col("_first_file"),
                    F.concat(F.lit("exact repeat of line "), first_line, F.lit(" of the same file")),
                )
                .otherwise(F.concat(F.lit("same event_id as "), F.col("_first_file"), F.lit(" line "), first_line))
                .alias("reason"),
            )
            rejected = reader_rejected.unionByName(dups)
        accepted_path, rejected_path = (os.path.join(stage_dir, d) for d in ("accepted", "rejected"))
        accepted.write.mode("overwrite").parquet(spark_path(accepted_path))
        rejected.write.mode("overwrite").parquet(spark_path(rejected_path))
        n_accepted = read_stage_dir(spark, accepted_path, ACCEPTED_SCHEMA).count()
        written = read_stage_dir(spark, rejected_path, REJECTED_RECORD_SCHEMA)
        by_reason = {r.reason_code: int(r["count"]) for r in written.groupBy("reason_code").count().collect()}
    finally:
        for d in (parsed_dir, keyed_dir, repeated_dir):
            shutil.rmtree(d, ignore_errors=True)
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
