"""user_sequences + rote_features throughput against a pandas reference and the Spark I/O floor.

For each size: generate a synthetic source, ingest it (Spark engine; not timed), then time, in
this process, on the same committed ``events`` table:

* **floor**: the same Spark read of the event columns, a shuffle by user with the same hash
  and partition count, a sort within partitions and a Parquet write: no feature logic;
* **spark**: ``build_sequences_table`` (leave-one-out, ``max_len`` 50), which writes
  ``user_sequences`` and ``rote_features`` (year, month, day) in one pass, both committed;
* **pandas**: the RecBole-style reference: read the events into pandas, sort by user and order
  keys, ``groupby(user).apply`` building each row's history lists with a Python loop, the RoTE
  columns with ``features.sequences.rote`` on the padded histories, and a Parquet write.

Prints events per second and the ratios spark/floor (time) and pandas/spark (time), plus the
peak RSS of the process after the pandas step (pandas holds the events and one chunk of users'
histories in memory).

    .venv/bin/python benchmarks/sequences_throughput.py                    # 1M and 10M events
    .venv/bin/python benchmarks/sequences_throughput.py 200000             # other sizes
    .venv/bin/python benchmarks/sequences_throughput.py 10000000 --no-pandas
"""
from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

MAX_LEN = 50
COLUMNS = ["event_id", "user_id", "item_id", "event_ts", "play_time_ms", "source_file", "source_line"]


def floor(spark, warehouse, out: str, partitions: int) -> None:
    from pyspark.sql import functions as F

    from features.sequences import ORDER_COLUMNS

    events = warehouse.read_spark(spark, "events").select(*COLUMNS)
    (
        events.repartition(partitions, F.xxhash64("user_id"))
        .sortWithinPartitions("user_id", *ORDER_COLUMNS)
        .write.mode("overwrite")
        .parquet(out)
    )


def spark_build(spark, warehouse, settings) -> None:
    from pipelines.sequences import build_sequences_table

    build_sequences_table(spark, warehouse, settings)


def pandas_reference(warehouse, out: str, chunk_rows: int = 250_000) -> int:
    """RecBole-style: sort, group by user, a Python loop per row; RoTE on padded histories.

    Users are processed in chunks of about ``chunk_rows`` events (whole users) and each chunk is
    appended to one Parquet file: Python lists of a million rows' histories do not fit in this
    machine's memory (the unchunked version was killed at 12 GiB at 1M events).
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.sequences.rote import rote_features

    df = warehouse.read_arrow("events", columns=COLUMNS).to_pandas()
    df = df.sort_values(["user_id", "event_ts", "source_file", "source_line", "event_id"], kind="stable").reset_index(drop=True)

    def per_user(g: pd.DataFrame) -> pd.DataFrame:
        items = g["item_id"].tolist()
        ts = g["event_ts"].tolist()
        play = g["play_time_ms"].tolist()
        n = len(items)
        hist_items, hist_ts, hist_play, split = [], [], [], []
        for i in range(n):
            lo = max(0, i - MAX_LEN)
            hist_items.append(items[lo:i])
            hist_ts.append(ts[lo:i])
            hist_play.append(play[lo:i])
            split.append("test" if n >= 4 and i == n - 1 else "valid" if n >= 4 and i == n - 2 else "train")
        return pd.DataFrame(
            {
                "event_id": g["event_id"].values,
                "target_item_id": items,
                "target_ts": ts,
                "hist_item_ids": hist_items,
                "hist_ts": hist_ts,
                "hist_play_time_ms": hist_play,
                "hist_len": [len(h) for h in hist_items],
                "seq_pos": np.arange(n),
                "split": split,
            }
        )

    users = df["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds, last = [0], 0
    for s_ in starts:
        if s_ - last >= chunk_rows:
            bounds.append(int(s_))
            last = s_
    bounds.append(len(df))
    writer, rows = None, 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        seqs = df.iloc[lo:hi].groupby("user_id", sort=False, group_keys=True).apply(per_user, include_groups=False).reset_index(level=0)
        # RoTE: pad the histories into a matrix, compute, keep them as lists again.
        lengths = seqs["hist_len"].to_numpy()
        width = max(int(lengths.max()), 1)
        mat = np.zeros((len(seqs), width), dtype=np.int64)
        mask = np.arange(width)[None, :] < lengths[:, None]
        flat = pd.to_datetime(pd.Series([t for h in seqs["hist_ts"] for t in h]), utc=True)
        if len(flat):
            mat[mask] = flat.astype("int64").to_numpy() // 1_000_000_000
        target = pd.to_datetime(seqs["target_ts"], utc=True).astype("int64").to_numpy() // 1_000_000_000
        feats = rote_features(mat, target, mask=mask)
        for name, values in feats.items():
            seqs[name] = [row[:n] for row, n in zip(values, lengths)] if values.ndim == 2 else values
        table = pa.Table.from_pandas(seqs, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table.cast(writer.schema))
        rows += len(seqs)
    if writer is not None:
        writer.close()
    return rows


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(sizes: list[int], run_pandas: bool) -> None:
    from pipelines.ingest import ingest_events
    from pipelines.sequences import SequenceSettings
    from pipelines.settings import SourceConfig, SparkSettings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark
    from pipelines.settings import SyntheticSettings
    from pipelines.synthetic import generate
    from pipelines.warehouse import Warehouse

    partitions = 8
    spark = get_spark(SparkSettings(master="local[*]", shuffle_partitions=partitions, driver_memory="8g"))
    settings = SequenceSettings(max_len=MAX_LEN)
    print(f"sequences benchmark: {os.cpu_count()} CPUs, max_len {MAX_LEN}, {partitions} user partitions")
    work = tempfile.mkdtemp(prefix="recfeat-seq-bench-")
    try:
        for n in sizes:
            src = os.path.join(work, f"src-{n}")
            generate(src, SyntheticSettings(events=n, seed=11))
            wh = Warehouse(os.path.join(work, f"wh-{n}"))
            adapter = adapter_for("synthetic", SourceConfig(kind="synthetic", path=src))
            result = ingest_events(spark, wh, adapter, engine="spark")
            events = result.new_events
            if n == sizes[0]:  # warm the JVM and the Python workers on this size, untimed
                floor(spark, wh, os.path.join(work, "warm"), partitions)
            times = {}
            t0 = time.perf_counter()
            floor(spark, wh, os.path.join(work, f"floor-{n}"), partitions)
            times["floor"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            spark_build(spark, wh, settings)
            times["spark"] = time.perf_counter() - t0
            rows = wh.manifest("user_sequences").row_count
            print(f"floor  {events:>12,} events  {times['floor']:8.1f} s  {events / times['floor']:>10,.0f} events/s", flush=True)
            print(f"spark  {events:>12,} events  {times['spark']:8.1f} s  {events / times['spark']:>10,.0f} events/s  ({rows:,} sequence rows + RoTE)", flush=True)
            print(f"ratio spark/floor time at {events:,}: {times['spark'] / times['floor']:.2f}x", flush=True)
            if run_pandas:
                t0 = time.perf_counter()
                prow = pandas_reference(wh, os.path.join(work, f"pandas-{n}.parquet"))
                times["pandas"] = time.perf_counter() - t0
                print(f"pandas {events:>12,} events  {times['pandas']:8.1f} s  {events / times['pandas']:>10,.0f} events/s  ({prow:,} rows; peak RSS so far {peak_rss_mib():,.0f} MiB)", flush=True)
                print(f"ratio pandas/spark time at {events:,}: {times['pandas'] / times['spark']:.2f}x", flush=True)
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(os.path.join(work, f"wh-{n}"), ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main([int(a) for a in args] or [1_000_000, 10_000_000], run_pandas="--no-pandas" not in sys.argv)
