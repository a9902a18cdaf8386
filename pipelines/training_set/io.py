"""Spines in, training sets out: loading and hashing a spine, writing and reading an output.

An output is a directory of ``part-NNNNN.parquet`` files whose metadata (key
``recfeat.training_set``) and sidecar ``_training_set.json`` hold the record of the build: the
versions read, the builds used, the spine's hash and the code version (docs/python-api.md).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa

from pipelines.training_set.spec import FeatureError

METADATA_KEY = b"recfeat.training_set"
SIDECAR = "_training_set.json"
#: Spines up to this many rows are hashed from one collect, larger ones streamed in sorted order.
SMALL_SPINE = 1_000_000
UTC = dt.timezone.utc


def load_spine(spark, spine, ts_column: str = "event_ts"):
    """A Spark DataFrame of the spine with ``spine_row`` (an int64 that increases with the
    spine's order; 0-based row numbers for pandas and Arrow spines) and ``_t`` (µs since the
    epoch). ``spine``: a pandas DataFrame, a pyarrow Table, a Spark DataFrame, or the path of a
    Parquet file or directory or a CSV file (header line; times in ISO 8601, UTC unless zoned)."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    if isinstance(spine, (str, os.PathLike)):
        path = str(spine)
        from pipelines.spark import spark_path

        if path.endswith(".csv") or path.endswith(".csv.gz"):
            df = spark.read.option("header", True).option("inferSchema", True).csv(spark_path(path))
        else:
            df = spark.read.parquet(spark_path(path))
        df = df.withColumn("spine_row", F.monotonically_increasing_id()) if "spine_row" not in df.columns else df
    elif isinstance(spine, DataFrame):
        df = spine if "spine_row" in spine.columns else spine.withColumn("spine_row", F.monotonically_increasing_id())
    else:
        table = spine if isinstance(spine, pa.Table) else pa.Table.from_pandas(spine, preserve_index=False)
        if "spine_row" not in table.column_names:
            import numpy as np

            table = table.append_column("spine_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        df = spark.createDataFrame(table.to_pandas())
    for name in ("user_id", ts_column):
        if name not in df.columns:
            raise FeatureError(f"the spine has no column {name!r} (columns: {', '.join(df.columns)})")
    for name in ("_t", "_k"):
        if name in df.columns:
            raise FeatureError(f"the spine has a column named {name!r}, which is reserved")
    df = df.withColumn("user_id", F.col("user_id").cast("string"))
    if "item_id" in df.columns:
        df = df.withColumn("item_id", F.col("item_id").cast("string"))
    if "event_id" in df.columns:
        df = df.withColumn("event_id", F.col("event_id").cast("string"))
    if dict(df.dtypes)[ts_column] not in ("timestamp", "timestamp_ntz"):
        df = df.withColumn(ts_column, F.to_timestamp(F.col(ts_column)))
    df = df.withColumn(ts_column, F.col(ts_column).cast("timestamp"))
    return df.withColumn("spine_row", F.col("spine_row").cast("long")).withColumn("_t", F.unix_micros(ts_column))


def spine_hash(df, columns: list[str], rows: int | None = None) -> str:
    """sha256 of the spine's sorted content: each row is the text of its ``columns`` (sorted by
    name; ``\\x1f`` between fields, ``\\x00`` for a null) hashed with sha256; the row digests are
    sorted and hashed, one hex digest per line. The same rows in any order give the same hash."""
    from pyspark.sql import functions as F

    parts = []
    for name in sorted(columns):
        parts += [F.lit(name), F.coalesce(F.col(f"`{name}`").cast("string"), F.lit("\x00"))]
    digests = df.select(F.sha2(F.concat_ws("\x1f", *parts), 256).alias("h"))
    h = hashlib.sha256()
    if rows is not None and rows <= SMALL_SPINE:
        for d in sorted(r.h for r in digests.collect()):
            h.update(d.encode() + b"\n")
        return h.hexdigest()
    for r in digests.orderBy("h").toLocalIterator():  # streamed: the driver holds one partition
        h.update(r.h.encode() + b"\n")
    return h.hexdigest()


# ---- versions ------------------------------------------------------------------------
def read_metadata(path: str) -> dict:
    """The record of an earlier output: its directory, its sidecar JSON, or one of its Parquet files."""
    p = Path(path)
    if p.is_dir():
        p = p / SIDECAR
    if p.suffix == ".json":
        return json.loads(p.read_text())
    import pyarrow.parquet as pq

    meta = pq.read_schema(str(p)).metadata or {}
    if METADATA_KEY not in meta:
        raise FeatureError(f"{path} holds no training-set record")
    return json.loads(meta[METADATA_KEY])


def write_output(df, metadata: dict, out: str, overwrite: bool = False) -> str:
    """Write ``df`` (sorted by ``spine_row``, one range per partition) as ``out/part-NNNNN.parquet``
    from the Spark tasks, each file carrying ``metadata``, plus the sidecar ``out/_training_set.json``."""
    import shutil

    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema

    out = os.path.abspath(out)
    if os.path.exists(out):
        if not overwrite and os.listdir(out):
            raise FeatureError(f"{out} exists and is not empty (pass overwrite)")
        shutil.rmtree(out)
    os.makedirs(out)
    text = json.dumps(metadata, sort_keys=True, default=str)
    schema = to_arrow_schema(df.schema)
    target = out

    def write(batches):
        from pyspark import TaskContext

        pid = TaskContext.get().partitionId()
        writer = None
        rows = 0
        try:
            for b in batches:
                if b.num_rows == 0:
                    continue
                if writer is None:
                    sch = b.schema.with_metadata({METADATA_KEY: text.encode()})
                    writer = pq.ParquetWriter(f"{target}/part-{pid:05d}.parquet", sch)
                writer.write_batch(b)
                rows += b.num_rows
        finally:
            if writer is not None:
                writer.close()
        yield pa.RecordBatch.from_pydict({"rows": [rows]}, schema=pa.schema([("rows", pa.int64())]))

    df.mapInArrow(write, "rows long").collect()
    if not any(n.endswith(".parquet") for n in os.listdir(out)):
        pq.write_table(schema.empty_table().replace_schema_metadata({METADATA_KEY: text.encode()}),
                       f"{out}/part-00000.parquet")
    with open(os.path.join(out, SIDECAR), "w") as fh:
        fh.write(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    return out


def _read_output_arrow(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    files = sorted(Path(path).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(str(f)) for f in files], promote_options="default").sort_by("spine_row")


def read_output(path: str):
    """An output directory as pandas, in spine order (``attrs["recfeat.training_set"]``: the record)."""
    pdf = _read_output_arrow(path).to_pandas()
    pdf.attrs["recfeat.training_set"] = read_metadata(path)
    return pdf
