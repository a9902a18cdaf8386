"""Point-in-time training set at scale: an N-row spine against N events, Spark against a
single-machine reference measured in the same run.

Data (seeded, written once into a git-ignored warehouse under ``var/``; not timed): N events
over 14 UTC days (N // 50 users, N // 100 items, ties in time), three ``lookalike_users`` builds
(cutoffs on days 4, 8 and 11, ``--k`` neighbours per user), and an N-row spine of random users at
random times (some before the first cutoff), with a label column.

* **spark**: ``pipelines.training_set.training_set`` for ``user_sequences`` (``max_len`` 50, RoTE
  year/month/day) and ``lookalike_users``, from the spine's Parquet file to the written Parquet
  directory with its record (spine hash included);
* **reference** (one process, Polars + NumPy): read the events and the spine, sort, ``join_asof``
  each spine row to the latest build at or before it, join that build's neighbour lists, the
  history gathers with ``np.searchsorted`` on (user, time) keys and Arrow list arrays, the same
  RoTE columns (``features.sequences.rote.rote_batch``), and a Parquet write.

Prints both times, spine rows per second and the ratio spark/reference, and checks on the
result that both agree (every row's history items and look-alike cutoff).

    .venv/bin/python benchmarks/training_set_scale.py                  # 200,000 rows
    .venv/bin/python benchmarks/training_set_scale.py --rows 10000000  # the 10M figure
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

UTC = dt.timezone.utc
DAY0 = dt.datetime(2022, 4, 8, tzinfo=UTC)
MAX_LEN = 50
CUTOFF_DAYS = (4, 8, 11)


def _us(d: dt.datetime) -> int:
    return int(d.timestamp()) * 1_000_000


def make_data(root: str, rows: int, k: int, seed: int) -> tuple[str, str]:
    from features.events import EVENTS, FEEDBACK_FLAGS
    from features.lookalike import LOOKALIKE_USERS
    from pipelines.warehouse import Warehouse

    rng = np.random.default_rng(seed)
    users, items = max(rows // 50, 2), max(rows // 100, 2)
    t0 = _us(DAY0)
    ts = t0 + rng.integers(0, 14 * 86400, rows) * 1_000_000
    ts_type = pa.timestamp("us", tz="UTC")
    ev_ts = pa.array(ts).cast(pa.timestamp("us")).cast(ts_type)
    n_files = 14
    cols = {
        "event_id": pa.array([f"e{i:012d}" for i in range(rows)]),
        "source": pa.array(["bench"] * rows),
        "user_id": pa.array([f"u{u}" for u in rng.integers(0, users, rows)]),
        "item_id": pa.array([f"i{i}" for i in rng.integers(0, items, rows)]),
        "event_ts": ev_ts,
        "play_time_ms": pa.array(rng.integers(0, 120_000, rows)),
        "duration_ms": pa.array(np.full(rows, 60_000)),
        "rating": pa.nulls(rows, pa.float64()),
        **{f: pa.nulls(rows, pa.bool_()) for f in FEEDBACK_FLAGS},
        "event_date": ev_ts.cast(pa.date32()),
        "source_file": pa.array([f"log{d:02d}.csv" for d in rng.integers(0, n_files, rows)]),
        "source_line": pa.array(np.arange(1, rows + 1)),
    }
    wh = Warehouse(os.path.join(root, "warehouse"))
    wh.write_arrow(EVENTS, pa.table(cols))
    for day in CUTOFF_DAYS:
        cutoff = DAY0 + dt.timedelta(days=day)
        u = np.repeat(np.arange(users), k)
        r = np.tile(np.arange(1, k + 1), users)
        nb = (u + r * 7 + day) % users
        lk = pa.table({
            "user_id": pa.array([f"u{x}" for x in u]), "rank": pa.array(r.astype(np.int32)),
            "neighbor_user_id": pa.array([f"u{x}" for x in nb]), "similarity": pa.array(1.0 - r / (k + 1)),
            "cutoff_ts": pa.array(np.full(len(u), _us(cutoff))).cast(pa.timestamp("us")).cast(ts_type),
        })
        wh.write_arrow(LOOKALIKE_USERS, lk, producer={"cutoff_ts": cutoff.isoformat()})
    spine_ts = t0 + rng.integers(-86400, 14 * 86400, rows) * 1_000_000
    spine = pa.table({
        "user_id": pa.array([f"u{u}" for u in rng.integers(0, users, rows)]),
        "event_ts": pa.array(spine_ts).cast(pa.timestamp("us")).cast(ts_type),
        "label": pa.array(rng.integers(0, 2, rows)),
    })
    spine_path = os.path.join(root, "spine.parquet")
    pq.write_table(spine, spine_path)
    return wh.root, spine_path


def run_spark(root: str, spine_path: str, out: str):
    from pipelines.settings import SparkSettings
    from pipelines.spark import get_spark
    from pipelines.training_set import training_set
    from pipelines.warehouse import Warehouse

    spark = get_spark(SparkSettings(master=f"local[{os.cpu_count()}]", shuffle_partitions=max(os.cpu_count() * 2, 4),
                                    driver_memory="6g"))
    spark.range(1).count()  # start the session outside the timing
    t = time.perf_counter()
    ts = training_set(spark, Warehouse(root), spine_path, ["user_sequences", "lookalike_users"], max_len=MAX_LEN,
                      out=out, overwrite=True)
    return time.perf_counter() - t, ts


def run_reference(root: str, spine_path: str, out: str) -> float:
    """Polars join_asof for the builds, NumPy gathers for the histories, one process."""
    import polars as pl

    from features.sequences.rote import rote_batch
    from pipelines.warehouse import Warehouse

    t = time.perf_counter()
    wh = Warehouse(root)
    ev = pl.from_arrow(wh.read_arrow("events", columns=["user_id", "item_id", "event_ts", "play_time_ms",
                                                        "source_file", "source_line", "event_id"]))
    spine = pl.read_parquet(spine_path).with_row_index("spine_row")
    ev = ev.sort(["user_id", "event_ts", "source_file", "source_line", "event_id"])
    # builds: the table history, then the latest cutoff at or before each example
    builds = []
    for v in wh.versions("lookalike_users"):
        cutoff = dt.datetime.fromisoformat(wh.manifest("lookalike_users", v).producer["cutoff_ts"])
        builds.append((v, cutoff))
    bdf = pl.DataFrame({"build_version": [b[0] for b in builds],
                        "cutoff_ts": [b[1] for b in builds]}).with_columns(pl.col("cutoff_ts").dt.cast_time_unit("us"))
    spine = spine.sort("event_ts").join_asof(bdf.sort("cutoff_ts"), left_on="event_ts", right_on="cutoff_ts",
                                             strategy="backward")
    lists = []
    for v, _ in builds:
        lk = pl.from_arrow(wh.read_arrow("lookalike_users", version=v)).sort(["user_id", "rank"])
        lists.append(lk.group_by("user_id", maintain_order=True).agg(
            pl.col("neighbor_user_id").alias("lookalike_users__neighbor_user_id"),
            pl.col("similarity").alias("lookalike_users__similarity"),
        ).with_columns(pl.lit(v).alias("build_version")))
    spine = spine.join(pl.concat(lists), on=["user_id", "build_version"], how="left").sort("spine_row")
    # histories: events before (user, t), by searchsorted on (user code, time) keys
    codes = pl.concat([ev.select("user_id"), spine.select("user_id")]).get_column("user_id").unique().sort()
    lookup = pl.DataFrame({"user_id": codes, "code": np.arange(len(codes), dtype=np.int64)})
    ev_code = ev.join(lookup, on="user_id", how="left", maintain_order="left").get_column("code").to_numpy()
    sp_code = spine.join(lookup, on="user_id", how="left", maintain_order="left").get_column("code").to_numpy()
    ev_t = ev.get_column("event_ts").dt.epoch("us").to_numpy()
    sp_t = spine.get_column("event_ts").dt.epoch("us").to_numpy()
    shift = np.int64(2**42)  # µs offsets within [0, 2^42) after subtracting the minimum
    base = min(ev_t.min(initial=np.iinfo(np.int64).max), sp_t.min(initial=np.iinfo(np.int64).max))
    ev_key = ev_code * shift + (ev_t - base)
    sp_key = sp_code * shift + (sp_t - base)
    end = np.searchsorted(ev_key, sp_key, side="left")
    user_start = np.searchsorted(ev_key, sp_code * shift, side="left")
    hist_len = np.minimum(end - user_start, MAX_LEN)
    offsets = np.zeros(len(end) + 1, dtype=np.int64)
    np.cumsum(hist_len, out=offsets[1:])
    idx = np.repeat(end - hist_len, hist_len) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], hist_len))
    off = pa.array(offsets.astype(np.int32))
    take = pa.array(idx)
    evt = ev.select("item_id", "event_ts", "play_time_ms").to_arrow()
    hist = pa.table({
        "hist_item_ids": pa.ListArray.from_arrays(off, evt.column("item_id").combine_chunks().take(take).cast(pa.string())),
        "hist_ts": pa.ListArray.from_arrays(off, evt.column("event_ts").combine_chunks().take(take)),
        "hist_play_time_ms": pa.ListArray.from_arrays(off, evt.column("play_time_ms").combine_chunks().take(take)),
        "hist_len": pa.array(hist_len.astype(np.int32)),
    })
    sp_arrow = spine.to_arrow()
    rote = rote_batch(pa.table({"event_id": pa.nulls(len(end), pa.string()), "user_id": sp_arrow.column("user_id"),
                                "hist_ts": hist.column("hist_ts"), "target_ts": sp_arrow.column("event_ts"),
                                "target_date": pa.nulls(len(end), pa.date32())}))
    table = sp_arrow
    for name in hist.column_names:
        table = table.append_column(name, hist.column(name))
    for name in rote.column_names:
        if name not in ("event_id", "user_id", "hist_len", "target_date"):
            table = table.append_column(name, rote.column(name))
    pq.write_table(table, out)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000, help="spine rows and events (default 200,000)")
    p.add_argument("--k", type=int, default=10, help="look-alike neighbours per user in each build")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dir", default="var/bench-training-set", help="scratch folder (git-ignored var/)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the two results")
    args = p.parse_args()
    root = os.path.abspath(os.path.join(args.dir, str(args.rows)))
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    t = time.perf_counter()
    wh_root, spine_path = make_data(root, args.rows, args.k, args.seed)
    print(f"data: {args.rows:,} events, {args.rows:,} spine rows, 3 look-alike builds ({time.perf_counter() - t:.1f} s, not timed)")
    ref_s = run_reference(wh_root, spine_path, os.path.join(root, "reference.parquet"))
    print(f"reference (Polars join_asof + NumPy gathers, 1 process): {ref_s:8.1f} s  {args.rows / ref_s:12,.0f} rows/s")
    spark_s, ts = run_spark(wh_root, spine_path, os.path.join(root, "spark_out"))
    print(f"spark training_set (local[{os.cpu_count()}]):                  {spark_s:8.1f} s  {args.rows / spark_s:12,.0f} rows/s")
    print(f"ratio spark / reference (time): {spark_s / ref_s:.2f}")
    print(f"rows before the first cutoff: {ts.report['lookalike_users_rows_before_first_cutoff']:,}; "
          f"rows with a history: {ts.report['non_null']['hist_item_ids']:,}")
    if not args.no_check:
        ref = pq.read_table(os.path.join(root, "reference.parquet"), columns=["spine_row", "hist_item_ids",
                                                                               "lookalike_users__neighbor_user_id"])
        got = pq.read_table(os.path.join(root, "spark_out"), columns=["spine_row", "hist_item_ids",
                                                                       "lookalike_users__neighbor_user_id"])
        ref, got = ref.sort_by("spine_row"), got.sort_by("spine_row")
        same = (ref.column("hist_item_ids").to_pylist() == got.column("hist_item_ids").to_pylist()
                and ref.column("lookalike_users__neighbor_user_id").to_pylist()
                == got.column("lookalike_users__neighbor_user_id").to_pylist())
        print(f"results agree: {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
