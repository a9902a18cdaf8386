"""user_sequences throughput (lean form: RoTE derived on read) against its I/O floor and Polars.

For each size: generate a synthetic source, ingest it (Spark engine; not timed), then time, in
this process, on the same committed ``events`` table:

* **view**: ``build_sequences_table`` with ``sequences.rote_storage: view`` (the default;
  leave-one-out, ``max_len`` 50): the job stores ``user_sequences`` only;
* **floor**: the I/O the view job cannot avoid, in two timed parts, summed:
  (1) the same Spark read of the event columns, a shuffle by user with the same hash and
  partition count and a sort within partitions, run to Spark's ``noop`` sink; (2) a write of
  the same output bytes: every Parquet file of the ``user_sequences`` version the job just
  committed is read and written again (pyarrow, default Parquet settings, as the job's tasks
  write), on as many threads as Spark has cores; the time of reading those files alone is
  measured the same way and subtracted;
* **polars**: the single-machine reference for the same 3 history lists (``hist_item_ids``,
  ``hist_ts``, ``hist_play_time_ms``): read the events' Parquet files, sort by user and the
  order keys, ``rolling(index, period=50 rows, closed="left", group_by=user)`` with the lists
  imploded, and a Parquet write. Its output is checked against the job's: same row count and,
  joined on ``event_id``, every row's 3 lists equal;
* **table**: the same job with ``rote_storage: table`` (``user_sequences`` and ``rote_features``
  with the year/month/day levels, both committed), for comparison.

Prints time, events/s and the peak RSS so far (``resource.getrusage`` of this process, and the
Spark JVM's ``VmHWM``) per step, and the ratios view/floor, view/polars and table/view.

    .venv/bin/python benchmarks/sequences_throughput.py                          # 1M events
    .venv/bin/python benchmarks/sequences_throughput.py --sizes 1000000 10000000
    .venv/bin/python benchmarks/sequences_throughput.py --sizes 300000 --no-polars --profile
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MAX_LEN = 50
COLUMNS = ["event_id", "user_id", "item_id", "event_ts", "play_time_ms", "source_file", "source_line"]
HIST = ["hist_item_ids", "hist_ts", "hist_play_time_ms"]


def floor_shuffle(spark, warehouse, partitions: int) -> None:
    """Floor part 1: read the event columns, shuffle by user, sort; Spark's noop sink."""
    from pyspark.sql import functions as F

    from features.sequences import ORDER_COLUMNS

    events = warehouse.read_spark(spark, "events").select(*COLUMNS)
    (events.repartition(partitions, F.xxhash64("user_id")).sortWithinPartitions("user_id", *ORDER_COLUMNS)
     .write.format("noop").mode("overwrite").save())


def _files(warehouse, table: str) -> list[str]:
    return warehouse.manifest(table).file_paths(warehouse.root)


def floor_write(warehouse, out: str, threads: int) -> tuple[float, float, int]:
    """Floor part 2: (seconds to read and rewrite, seconds to read only, bytes written) of the
    committed ``user_sequences`` files, ``threads`` at a time."""
    import pyarrow.parquet as pq

    files = _files(warehouse, "user_sequences")
    os.makedirs(out, exist_ok=True)

    def read(path: str) -> int:
        return pq.read_table(path).num_rows

    def rewrite(job: tuple[int, str]) -> int:
        i, path = job
        target = os.path.join(out, f"part-{i:05d}.parquet")
        pq.write_table(pq.read_table(path), target)
        return os.path.getsize(target)

    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        list(pool.map(read, files))
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        written = sum(pool.map(rewrite, enumerate(files)))
        t_both = time.perf_counter() - t0
    return t_both, t_read, written


def polars_reference(warehouse, out: str) -> int:
    """The 3 history lists with Polars: sort, a rolling window of the previous ``MAX_LEN`` rows
    of the same user (closed left: the target itself is not in its history), a Parquet write."""
    import polars as pl

    df = pl.read_parquet(_files(warehouse, "events"), columns=COLUMNS)
    df = df.sort(["user_id", "event_ts", "source_file", "source_line", "event_id"]).with_row_index("i")
    hist = df.rolling(index_column="i", period=f"{MAX_LEN}i", closed="left", group_by="user_id").agg(
        pl.col("item_id").alias("hist_item_ids"), pl.col("event_ts").alias("hist_ts"),
        pl.col("play_time_ms").alias("hist_play_time_ms"))
    result = df.select("i", "event_id", "user_id").join(hist.drop("user_id"), on="i").drop("i")
    result = result.with_columns(pl.col("hist_item_ids").list.len().cast(pl.Int32).alias("hist_len"))
    result.write_parquet(out)
    return result.height


def compare_polars(warehouse, out: str) -> tuple[int, int]:
    """(rows of the Polars output, rows whose 3 lists differ from the job's ``user_sequences``)."""
    import polars as pl

    ref = pl.read_parquet(out, columns=["event_id", *HIST])
    job = pl.read_parquet(_files(warehouse, "user_sequences"), columns=["event_id", *HIST])
    if ref.height != job.height:
        return ref.height, abs(ref.height - job.height)
    joined = ref.join(job, on="event_id", how="full", suffix="_job", coalesce=False)
    same = pl.lit(True)
    for c in HIST:
        same = same & pl.col(c).eq_missing(pl.col(f"{c}_job"))
    return ref.height, int(joined.select((~same).sum()).item())


def profile_stages(spark, warehouse, settings) -> dict[str, float]:
    """Seconds of the view job's stages, each run on its own to Spark's ``noop`` sink: the
    fingerprint pass over the events, the sorted rows handed to the Python workers as Arrow
    batches that do nothing with them, and the same with the history kernel (nothing written)."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StructField, StructType

    from features.sequences import histories_from_sorted, sorted_for_histories
    from pipelines.sequences import SIDE_COLUMNS, current_fingerprints, flag_filter

    out = {}
    t0 = time.perf_counter()
    current_fingerprints(spark, warehouse, settings, {}, None)
    out["fingerprints"] = time.perf_counter() - t0
    events = flag_filter(warehouse.read_spark(spark, "events"), settings.require_flags)
    ordered = sorted_for_histories(events, SIDE_COLUMNS, None, settings.partitions)
    schema = StructType([StructField("n", LongType())])

    def handed(batches):
        for b in batches:
            yield pa.RecordBatch.from_pydict({"n": [b.num_rows]})

    def kernel(batches):
        for b in histories_from_sorted(batches, settings.max_len, SIDE_COLUMNS, split=settings.split,
                                       valid_from=settings.valid_from, test_from=settings.test_from):
            yield pa.RecordBatch.from_pydict({"n": [b.num_rows]})

    for name, fn in (("arrow hand-off", handed), ("+ history kernel", kernel)):
        t0 = time.perf_counter()
        ordered.mapInArrow(fn, schema).write.format("noop").mode("overwrite").save()
        out[name] = time.perf_counter() - t0
    return out


def peak_rss(spark) -> str:
    """Peak resident set so far: this process (getrusage) and the Spark JVM (VmHWM)."""
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    jvm = "?"
    try:
        pid = spark.sparkContext._gateway.proc.pid
        with open(f"/proc/{pid}/status") as fh:
            line = next(x for x in fh if x.startswith("VmHWM:"))
        jvm = f"{int(line.split()[1]) / 1024:,.0f}"
    except Exception:  # noqa: BLE001 - a figure, not a failure
        pass
    return f"peak RSS so far: python {mine:,.0f} MiB, JVM {jvm} MiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="events per run (default 1,000,000)")
    p.add_argument("--no-polars", action="store_true", help="skip the Polars reference")
    p.add_argument("--partitions", type=int, default=8, help="user partitions of the shuffle (default 8)")
    p.add_argument("--profile", action="store_true", help="also time the view job's stages on their own")
    args = p.parse_args(argv)

    from pipelines.ingest import ingest_events
    from pipelines.sequences import SequenceSettings, build_sequences_table
    from pipelines.settings import SourceConfig, SparkSettings, SyntheticSettings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark
    from pipelines.synthetic import generate
    from pipelines.warehouse import Warehouse

    partitions = args.partitions
    spark = get_spark(SparkSettings(master="local[*]", shuffle_partitions=partitions, driver_memory="8g"))
    cores = spark.sparkContext.defaultParallelism
    view_settings = SequenceSettings(max_len=MAX_LEN, partitions=partitions)
    table_settings = SequenceSettings(max_len=MAX_LEN, rote_storage="table", partitions=partitions)
    print(f"sequences benchmark: {os.cpu_count()} CPUs, Spark cores {cores}, max_len {MAX_LEN}, {partitions} user partitions")
    work = tempfile.mkdtemp(prefix="recfeat-seq-bench-")
    try:
        for n in args.sizes:
            src = os.path.join(work, f"src-{n}")
            generate(src, SyntheticSettings(events=n, seed=11))
            wh = Warehouse(os.path.join(work, f"wh-{n}"))
            events = ingest_events(spark, wh, adapter_for("synthetic", SourceConfig(kind="synthetic", path=src)),
                                   engine="spark").new_events
            if n == args.sizes[0]:  # warm the JVM and the Python workers on this size, untimed
                floor_shuffle(spark, wh, partitions)
            t = {}

            def line(name: str, seconds: float, note: str = "") -> None:
                print(f"{name:<7}{events:>12,} events  {seconds:8.1f} s  {events / seconds:>10,.0f} events/s  {note}",
                      flush=True)

            t0 = time.perf_counter()
            build_sequences_table(spark, wh, view_settings)
            t["view"] = time.perf_counter() - t0
            seq = wh.manifest("user_sequences")
            out_bytes = sum(os.path.getsize(f) for f in _files(wh, "user_sequences"))
            line("view", t["view"], f"({seq.row_count:,} user_sequences rows, {out_bytes / 2**20:,.0f} MiB; {peak_rss(spark)})")

            t0 = time.perf_counter()
            floor_shuffle(spark, wh, partitions)
            t_shuffle = time.perf_counter() - t0
            t_both, t_read, written = floor_write(wh, os.path.join(work, f"floor-{n}"), cores)
            t["floor"] = t_shuffle + max(t_both - t_read, 0.0)
            line("floor", t["floor"], f"(read+shuffle+sort {t_shuffle:.1f} s + write {t_both - t_read:.1f} s of "
                 f"{written / 2**20:,.0f} MiB [read+write {t_both:.1f} s - read {t_read:.1f} s]; {peak_rss(spark)})")

            if args.profile:
                stages = profile_stages(spark, wh, view_settings)
                print("profile: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
                      + f" (floor read+shuffle+sort {t_shuffle:.1f} s, view job {t['view']:.1f} s)", flush=True)

            t0 = time.perf_counter()
            build_sequences_table(spark, wh, table_settings)
            t["table"] = time.perf_counter() - t0
            rote_bytes = sum(os.path.getsize(f) for f in _files(wh, "rote_features"))
            line("table", t["table"], f"(+ rote_features {rote_bytes / 2**20:,.0f} MiB; {peak_rss(spark)})")

            if not args.no_polars:
                out = os.path.join(work, f"polars-{n}.parquet")
                t0 = time.perf_counter()
                rows = polars_reference(wh, out)
                t["polars"] = time.perf_counter() - t0
                ref_rows, differ = compare_polars(wh, out)
                line("polars", t["polars"], f"({rows:,} rows; {peak_rss(spark)})")
                print(f"polars output vs the job's user_sequences: {ref_rows:,} rows against {seq.row_count:,}, "
                      f"{differ:,} rows whose 3 history lists differ", flush=True)
            print(f"ratio view/floor time at {events:,}: {t['view'] / t['floor']:.2f}x", flush=True)
            if "polars" in t:
                print(f"ratio view/polars time at {events:,}: {t['view'] / t['polars']:.2f}x", flush=True)
            print(f"ratio table/view time at {events:,}: {t['table'] / t['view']:.2f}x", flush=True)
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(os.path.join(work, f"wh-{n}"), ignore_errors=True)
            shutil.rmtree(os.path.join(work, f"floor-{n}"), ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
