"""Throughput of the label jobs: the Spark job (duration_stats + watch_time_labels, written to a
temporary warehouse) against the pandas + scikit-learn path of ``features.labels.math`` on the
same rows, in the same run. Prints events/s of each and the ratio Spark / pandas.

    .venv/bin/python benchmarks/labels_throughput.py --sizes 1000000 10000000

Rows are drawn like the synthetic source (lognormal durations around 60 s, a quarter of short
noisy plays, the rest growing with duration), over 14 days; the fit window is the first 9.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from features.labels import math as lm
from features.events import EVENTS
from pipelines.labels import LabelSettings
from pipelines.settings import SparkSettings

D0 = dt.date(2022, 4, 8)


def make_events(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    dur = np.clip(np.exp(np.log(60.0) + 0.9 * rng.standard_normal(n)), 3, 600) * 1000
    noisy = rng.random(n) < 0.25
    engaged = 30.0 * (dur / 60000.0) ** 0.7 * np.exp(0.8 * rng.standard_normal(n)) * 1000
    play = np.where(noisy, np.exp(np.log(1500.0) + 0.8 * rng.standard_normal(n)), engaged).astype(np.int64)
    ts = (pd.Timestamp(D0, tz="UTC").value // 1000) + rng.integers(0, 14 * 86400 * 10**6, n)
    ts_arr = pa.array(ts, type=pa.timestamp("us", tz="UTC"))
    cols = {
        "event_id": pa.array(np.char.mod("%024x", np.arange(n))),
        "source": pa.array(np.full(n, "bench")),
        "user_id": pa.array(np.char.mod("%d", rng.integers(0, n // 50 + 1, n))),
        "item_id": pa.array(np.char.mod("%d", rng.integers(0, n // 100 + 1, n))),
        "event_ts": ts_arr,
        "play_time_ms": pa.array(play),
        "duration_ms": pa.array(dur.astype(np.int64)),
        "event_date": pa.compute.cast(ts_arr, pa.date32()),
        "source_file": pa.array(np.full(n, "bench.csv")),
        "source_line": pa.array(np.arange(1, n + 1, dtype=np.int64)),
    }
    for f in EVENTS.schema:
        if f.name not in cols:
            cols[f.name] = pa.nulls(n, type=f.type)
    return pa.table({f.name: cols[f.name] for f in EVENTS.schema})


def bench(n: int, spark, settings: LabelSettings) -> dict:
    from pipelines.labels import build_duration_stats, build_watch_time_labels
    from pipelines.warehouse import Warehouse

    table = make_events(n)
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(os.path.join(tmp, "wh"))
        wh.write_arrow(EVENTS, table)
        t0 = time.perf_counter()
        build_duration_stats(spark, wh, settings)
        t1 = time.perf_counter()
        res = build_watch_time_labels(spark, wh, settings)
        t2 = time.perf_counter()
        labelled = res.manifests["watch_time_labels"].row_count
    ev = table.select(["event_id", "event_ts", "event_date", "play_time_ms", "duration_ms"]).to_pandas()
    params = settings.params()
    t3 = time.perf_counter()
    rows = lm.prepare_rows_pandas(ev, params, settings.fit_start, settings.fit_end)
    stats, rank = lm.fit_stats_pandas(rows, params)
    t4 = time.perf_counter()
    out = lm.label_frame_pandas(rows, stats, rank, params)
    t5 = time.perf_counter()
    assert len(out) == labelled, (len(out), labelled)
    return {"events": n, "labelled": labelled, "spark_stats_s": t1 - t0, "spark_labels_s": t2 - t1,
            "spark_s": t2 - t0, "pandas_stats_s": t4 - t3, "pandas_labels_s": t5 - t4, "pandas_s": t5 - t3}


def main(argv=None) -> int:
    from pipelines.spark import get_spark

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args(argv)
    spark = get_spark(SparkSettings(master=a.master, shuffle_partitions=8, driver_memory="6g"))
    settings = LabelSettings()
    print(f"label jobs: Spark ({a.master}) vs pandas + scikit-learn, {os.cpu_count()} CPUs")
    for n in a.sizes:
        r = bench(n, spark, settings)
        print(
            f"{r['events']:>11,} events ({r['labelled']:,} labelled)  "
            f"spark {r['spark_s']:7.1f} s (stats {r['spark_stats_s']:.1f} + labels {r['spark_labels_s']:.1f}) "
            f"{r['events'] / r['spark_s']:>10,.0f} ev/s | pandas {r['pandas_s']:7.1f} s (stats {r['pandas_stats_s']:.1f} + labels "
            f"{r['pandas_labels_s']:.1f}) {r['events'] / r['pandas_s']:>10,.0f} ev/s | spark/pandas time x{r['spark_s'] / r['pandas_s']:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
