"""Throughput of the label jobs: the Spark jobs (``duration_stats`` + ``watch_time_labels`` on a
temporary warehouse), their I/O floor and the pandas + scikit-learn path of
``features.labels.math`` on the same events, in one run; checks the outputs agree.

    .venv/bin/python benchmarks/labels_throughput.py                          # 1M events
    .venv/bin/python benchmarks/labels_throughput.py --sizes 1000000 10000000

Per size it prints, for each of the three: seconds, events/s and peak RSS, and the ratios
job/floor and job/pandas. Each part runs in a fresh process, so its peak RSS is its own
(``resource.getrusage``; for the Spark jobs the sum of the peaks of the driver, the JVM and the
Python workers, from /proc); the Spark session starts before the clock does.

* **Spark jobs**: ``build_duration_stats`` then ``build_watch_time_labels``, as the assets run them.
* **I/O floor**: reading the ``events`` columns the jobs read (the fit window's three columns
  for the fit, then the seven label-input columns of every file) and writing the same
  ``watch_time_labels`` rows again as Parquet, one file per day (pyarrow's defaults, in one
  process).
* **pandas**: ``prepare_rows_pandas`` + ``fit_stats_pandas`` + ``label_frame_pandas`` on the events
  already in memory as pandas (loading them is not timed).

Rows are drawn like the synthetic source (lognormal durations around 60 s, a quarter of short
noisy plays, the rest growing with duration), over 14 days; the fit window is the first 9.
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.events import EVENTS

D0 = dt.date(2022, 4, 8)
COMPARED = ["event_id", "duration_s", "watch_time_s", "play_time_ms", "is_complete", "is_in_fit_window", "pcr",
            "wtg_gain", "wtg", "d2q_bin", "d2q", "d2q_dense", "d2co", "cwm_target", "is_censored",
            "is_long_view_d2co", "is_long_view_cwm"]  # fmt: skip


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


def _peak_mib(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def _tree_peak_mib() -> float:
    """Peak RSS of this process plus that of each live descendant (the JVM and its Python
    workers), from ``VmHWM`` in /proc; without /proc, ``getrusage`` of this process."""
    try:
        parent = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return _peak_mib(resource.RUSAGE_SELF)
    tree, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0.0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024.0
        except (OSError, StopIteration):
            pass
    return total


# ---- the three parts, each run in a fresh process -------------------------------------------
def run_spark(root: str, master: str) -> dict:
    from pipelines.labels import LabelSettings, build_duration_stats, build_watch_time_labels
    from pipelines.settings import SparkSettings
    from pipelines.spark import get_spark, stop_spark
    from pipelines.warehouse import Warehouse

    spark = get_spark(SparkSettings(master=master, shuffle_partitions=8, driver_memory="6g"))
    spark.range(1).count()  # the session is up before the clock starts
    wh, settings = Warehouse(root), LabelSettings()
    t0 = time.perf_counter()
    build_duration_stats(spark, wh, settings)
    t1 = time.perf_counter()
    res = build_watch_time_labels(spark, wh, settings)
    t2 = time.perf_counter()
    rss = _tree_peak_mib()
    stop_spark()
    return {"stats_s": t1 - t0, "labels_s": t2 - t1, "s": t2 - t0, "labelled": res.manifests["watch_time_labels"].row_count,
            "rss_mib": rss}


def run_floor(root: str, out_dir: str) -> dict:
    from features.labels import WATCH_TIME_LABELS
    from features.labels.arrow_path import FIT_INPUT_COLUMNS, LABEL_INPUT_COLUMNS
    from pipelines.labels import LabelSettings
    from pipelines.warehouse import Warehouse

    wh, s = Warehouse(root), LabelSettings()
    m = wh.manifest(EVENTS.name)
    fit_days = [k for k in m.partitions if s.fit_start <= dt.date.fromisoformat(k.split("=")[-1]) < s.fit_end]
    labels = {k: wh.read_arrow(WATCH_TIME_LABELS.name, partitions=[k]) for k in wh.manifest(WATCH_TIME_LABELS.name).partitions}
    t0 = time.perf_counter()
    n = 0
    for f in m.file_paths(wh.root, fit_days):
        n += pq.read_table(f, columns=list(FIT_INPUT_COLUMNS)).num_rows
    for f in m.file_paths(wh.root):
        n += pq.read_table(f, columns=list(LABEL_INPUT_COLUMNS)).num_rows
    t1 = time.perf_counter()
    for k, table in labels.items():
        pq.write_table(table, os.path.join(out_dir, f"{k}.parquet"))
    t2 = time.perf_counter()
    return {"read_s": t1 - t0, "write_s": t2 - t1, "s": t2 - t0, "rss_mib": _peak_mib(resource.RUSAGE_SELF)}


def run_pandas(root: str, out: str) -> dict:
    from features.labels import math as lm
    from pipelines.labels import LabelSettings
    from pipelines.warehouse import Warehouse

    wh, s = Warehouse(root), LabelSettings()
    ev = wh.read_arrow(EVENTS.name, columns=["event_id", "event_ts", "event_date", "play_time_ms", "duration_ms"]).to_pandas()
    params = s.params()
    t0 = time.perf_counter()
    rows = lm.prepare_rows_pandas(ev, params, s.fit_start, s.fit_end)
    stats, rank = lm.fit_stats_pandas(rows, params)
    t1 = time.perf_counter()
    frame = lm.label_frame_pandas(rows, stats, rank, params)
    t2 = time.perf_counter()
    rss = _peak_mib(resource.RUSAGE_SELF)
    frame["d2q_bin"] = frame["d2q_bin"].astype(np.int32)
    pq.write_table(pa.Table.from_pandas(frame[COMPARED], preserve_index=False), out)
    return {"stats_s": t1 - t0, "labels_s": t2 - t1, "s": t2 - t0, "labelled": len(frame), "rss_mib": rss}


def _in_fresh_process(fn, *args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def outputs_agree(root: str, pandas_out: str) -> bool:
    """The job's ``watch_time_labels`` and the pandas frame: the same rows, every value equal."""
    from pipelines.warehouse import Warehouse

    job = Warehouse(root).read_arrow("watch_time_labels", columns=COMPARED).sort_by("event_id")
    ref = pq.read_table(pandas_out).sort_by("event_id")
    if job.num_rows != ref.num_rows:
        return False
    return all(
        pc.all(pc.equal(job.column(c), ref.column(c).cast(job.schema.field(c).type))).as_py() is True for c in COMPARED
    )


def bench(n: int, master: str, scratch: str | None) -> dict:
    from pipelines.warehouse import Warehouse

    tmp = tempfile.mkdtemp(prefix="labels-bench-", dir=scratch)
    try:
        root = os.path.join(tmp, "wh")
        Warehouse(root).write_arrow(EVENTS, make_events(n))
        job = _in_fresh_process(run_spark, root, master)
        floor_dir = os.path.join(tmp, "floor")
        os.makedirs(floor_dir)
        floor = _in_fresh_process(run_floor, root, floor_dir)
        pandas_out = os.path.join(tmp, "pandas.parquet")
        ref = _in_fresh_process(run_pandas, root, pandas_out)
        same = ref["labelled"] == job["labelled"] and outputs_agree(root, pandas_out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"events": n, "job": job, "floor": floor, "pandas": ref, "agree": same}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--scratch", default=None, help="folder for the temporary warehouse (default: the system's)")
    a = ap.parse_args(argv)
    print(f"label jobs: Spark ({a.master}) vs their I/O floor vs pandas + scikit-learn, {os.cpu_count()} CPUs")
    failed = False
    for n in a.sizes:
        r = bench(n, a.master, a.scratch)
        j, f, p = r["job"], r["floor"], r["pandas"]
        print(
            f"{n:>11,} events ({j['labelled']:,} labelled)\n"
            f"  spark jobs {j['s']:7.1f} s (stats {j['stats_s']:.1f} + labels {j['labels_s']:.1f}) "
            f"{n / j['s']:>11,.0f} ev/s  peak RSS {j['rss_mib']:,.0f} MiB\n"
            f"  I/O floor  {f['s']:7.1f} s (read {f['read_s']:.1f} + write {f['write_s']:.1f}) "
            f"{n / f['s']:>11,.0f} ev/s  peak RSS {f['rss_mib']:,.0f} MiB\n"
            f"  pandas     {p['s']:7.1f} s (stats {p['stats_s']:.1f} + labels {p['labels_s']:.1f}) "
            f"{n / p['s']:>11,.0f} ev/s  peak RSS {p['rss_mib']:,.0f} MiB\n"
            f"  job/floor x{j['s'] / f['s']:.2f}  job/pandas x{j['s'] / p['s']:.2f}  outputs agree: {r['agree']}",
            flush=True,
        )
        failed |= not r["agree"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
