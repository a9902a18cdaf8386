"""Point-in-time training set at scale: an N-row spine against N events, Spark against a
single-machine reference measured in the same run.

Data (seeded, written once into a git-ignored warehouse under ``var/``; not timed): N events
over 14 UTC days (N // 50 users, N // 100 items, ties in time), three ``lookalike_users`` builds
(cutoffs on days 4, 8 and 11, ``--k`` neighbours per user), and an N-row spine of random users at
random times (some before the first cutoff), with a label column.

* **spark**: ``pipelines.training_set.training_set`` for ``user_sequences`` (``max_len`` 50) and
  ``lookalike_users``, from the spine's Parquet file to the written Parquet directory with its
  record (spine hash included). ``--history full`` (default) asks for the whole history group
  (the 3 lists, ``hist_len`` and the RoTE columns, year/month/day); ``--history lean`` for the
  3 lists and ``hist_len`` only (RoTE derived by the reader from ``hist_ts``);
* **reference** (one process, Polars + NumPy): read the events and the spine, sort, ``join_asof``
  each spine row to the latest build at or before it, join that build's neighbour lists, the
  history gathers with ``np.searchsorted`` on (user, time) keys and Arrow list arrays, the same
  RoTE columns (``features.sequences.rote.rote_batch``) for ``full``, and a Parquet write. The
  wide columns are built and written in chunks of ``--chunk`` spine rows, so its memory is the
  events, the spine and one chunk (an unchunked reference needed 9.9 GB at 1M rows).

Prints both times, spine rows per second, the peak resident memory of each (the reference: this
process; Spark: this process and the JVM with its Python workers, sampled every 0.2 s) and the
ratio spark/reference. Then it checks, streaming both outputs in spine order, that every row
agrees: the spine's own columns (user, time, label) and a 64-bit digest per row of its history
items, history times and look-alike neighbours.

    .venv/bin/python benchmarks/training_set_scale.py                                   # 200,000 rows
    .venv/bin/python benchmarks/training_set_scale.py --rows 10000000                   # the 10M figure
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import sys
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks._memory import TreeRss  # noqa: E402

UTC = dt.timezone.utc
DAY0 = dt.datetime(2022, 4, 8, tzinfo=UTC)
MAX_LEN = 50
CUTOFF_DAYS = (4, 8, 11)
LEAN = ["user_sequences.hist_item_ids", "user_sequences.hist_ts", "user_sequences.hist_play_time_ms",
        "user_sequences.hist_len"]
CHECKED = ("hist_item_ids", "hist_ts", "lookalike_users__neighbor_user_id")
#: The spine's own columns, checked per row so the two outputs are known to be aligned on the
#: same examples (not only on equal ``spine_row`` numbers).
SPINE_CHECKED = ("user_id", "event_ts", "label")


def self_peak_gib() -> float:
    """Peak resident set of this process so far (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


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


def features_of(history: str) -> list[str]:
    return (["user_sequences"] if history == "full" else LEAN) + ["lookalike_users"]


def run_spark(root: str, spine_path: str, out: str, history: str):
    from pipelines.settings import SparkSettings
    from pipelines.spark import get_spark
    from pipelines.training_set import training_set
    from pipelines.warehouse import Warehouse

    spark = get_spark(SparkSettings(master=f"local[{os.cpu_count()}]", shuffle_partitions=max(os.cpu_count() * 2, 4),
                                    driver_memory="6g"))
    spark.range(1).count()  # start the session outside the timing
    with TreeRss() as rss:
        t = time.perf_counter()
        ts = training_set(spark, Warehouse(root), spine_path, features_of(history), max_len=MAX_LEN,
                          out=out, overwrite=True)
        elapsed = time.perf_counter() - t
    return elapsed, ts, rss.peak_mb


def run_reference(root: str, spine_path: str, out: str, history: str, chunk: int) -> float:
    """Polars join_asof for the builds, NumPy gathers for the histories, one process; the wide
    columns built and written ``chunk`` spine rows at a time."""
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
    end_all = np.searchsorted(ev_key, sp_key, side="left")
    user_start = np.searchsorted(ev_key, sp_code * shift, side="left")
    len_all = np.minimum(end_all - user_start, MAX_LEN)
    evt = ev.select("item_id", "event_ts", "play_time_ms").to_arrow()
    ev_cols = {name: evt.column(name).combine_chunks() for name in evt.column_names}
    del ev, evt, ev_key, ev_code, ev_t
    sp_all = spine.drop("build_version").to_arrow()
    writer = None
    for lo in range(0, len(end_all), chunk):
        hi = min(lo + chunk, len(end_all))
        end, hist_len = end_all[lo:hi], len_all[lo:hi]
        offsets = np.zeros(len(end) + 1, dtype=np.int64)
        np.cumsum(hist_len, out=offsets[1:])
        idx = np.repeat(end - hist_len, hist_len) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], hist_len))
        off = pa.array(offsets.astype(np.int32))
        take = pa.array(idx)
        hist = {
            "hist_item_ids": pa.ListArray.from_arrays(off, ev_cols["item_id"].take(take).cast(pa.string())),
            "hist_ts": pa.ListArray.from_arrays(off, ev_cols["event_ts"].take(take)),
            "hist_play_time_ms": pa.ListArray.from_arrays(off, ev_cols["play_time_ms"].take(take)),
            "hist_len": pa.array(hist_len.astype(np.int32)),
        }
        table = sp_all.slice(lo, hi - lo)
        for name, col in hist.items():
            table = table.append_column(name, col)
        if history == "full":
            rote = rote_batch(pa.table({"event_id": pa.nulls(len(end), pa.string()), "user_id": table.column("user_id"),
                                        "hist_ts": table.column("hist_ts"), "target_ts": table.column("event_ts"),
                                        "target_date": pa.nulls(len(end), pa.date32())}))
            for name in rote.column_names:
                if name not in ("event_id", "user_id", "hist_len", "target_date"):
                    table = table.append_column(name, rote.column(name))
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    return time.perf_counter() - t


# ---- the check: a 64-bit digest per row of each checked column, streamed ------------------
_NULL_LIST = np.uint64(0x9E3779B97F4A7C15)


def list_digest(col: pa.ListArray) -> np.ndarray:
    """Per row: sum over positions p of hash(value) * (p + 1), wrapping at 2**64 (a null list:
    a constant; an empty list: 0). Values hash through Polars (strings) or as their int64."""
    import polars as pl

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if isinstance(col, pa.ChunkedArray):  # an empty chunked array
        col = pa.array([], col.type)
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.slice(offsets[0], offsets[-1] - offsets[0]) if len(col) else col.values.slice(0, 0)
    offsets = offsets - offsets[0]
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        h = pl.Series(values).hash(seed=0).to_numpy().astype(np.uint64)
    else:
        h = values.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
        h = h * np.uint64(0xFF51AFD7ED558CCD)
    lengths = np.diff(offsets)
    pos = np.arange(len(h), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    weighted = h * (pos.astype(np.uint64) + np.uint64(1))
    cs = np.zeros(len(weighted) + 1, dtype=np.uint64)
    np.cumsum(weighted, out=cs[1:])
    out = cs[offsets[1:]] - cs[offsets[:-1]]
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    out[nulls] = _NULL_LIST
    return out


def scalar_digest(col) -> np.ndarray:
    """Per row: a 64-bit hash of a scalar column (strings through Polars, others as int64)."""
    import polars as pl

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pl.Series(col).hash(seed=0).to_numpy().astype(np.uint64)
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)


def digests(files: list[str]) -> dict[str, np.ndarray]:
    """Spine row and the digest of every checked column, streamed in row groups."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ("spine_row", *SPINE_CHECKED, *CHECKED)}
    for f in files:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=200_000, columns=["spine_row", *SPINE_CHECKED, *CHECKED]):
            parts["spine_row"].append(batch.column("spine_row").to_numpy(zero_copy_only=False).astype(np.int64))
            for c in SPINE_CHECKED:
                parts[c].append(scalar_digest(batch.column(c)))
            for c in CHECKED:
                parts[c].append(list_digest(batch.column(c)))
    return {c: np.concatenate(v) if v else np.empty(0) for c, v in parts.items()}


def compare(ref_file: str, spark_dir: str) -> bool:
    """Both outputs in spine order, row by row.

    ``spine_row`` is the row number in the reference but, for a spine read from a file, an id
    that only increases with the spine's order in the Spark output (``monotonically_increasing_id``:
    a spine read in several partitions jumps at each partition's start; docs/python-api.md). So
    the rows are aligned by the rank of ``spine_row`` on each side, and the spine's own columns
    (:data:`SPINE_CHECKED`) are compared too, which shows the alignment is the same examples.
    """
    ref = digests([ref_file])
    got = digests(sorted(str(p) for p in __import__("pathlib").Path(spark_dir).glob("part-*.parquet")))
    if len(ref["spine_row"]) != len(got["spine_row"]):
        print(f"row counts differ: reference {len(ref['spine_row']):,}, spark {len(got['spine_row']):,}")
        return False
    ro, go = np.argsort(ref["spine_row"], kind="stable"), np.argsort(got["spine_row"], kind="stable")
    same = True
    for name, rows in (("reference", ref["spine_row"][ro]), ("spark", got["spine_row"][go])):
        if len(rows) and not bool(np.all(np.diff(rows) > 0)):
            print(f"{name}: spine_row is not unique")
            same = False
    if not np.array_equal(ref["spine_row"][ro], np.arange(len(ro))):
        print("reference: spine_row is not the row number 0..N-1")
        same = False
    for c in (*SPINE_CHECKED, *CHECKED):
        bad = int(np.count_nonzero(ref[c][ro] != got[c][go]))
        if bad:
            print(f"{c}: {bad:,} rows differ")
        same = same and bad == 0
    return same


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000, help="spine rows and events (default 200,000)")
    p.add_argument("--k", type=int, default=10, help="look-alike neighbours per user in each build")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--history", choices=("full", "lean"), default="full",
                   help="full: the whole history group with RoTE columns; lean: the 3 lists and hist_len")
    p.add_argument("--chunk", type=int, default=500_000, help="spine rows per chunk of the reference's wide columns")
    p.add_argument("--dir", default="var/bench-training-set", help="scratch folder (git-ignored var/)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the two results")
    p.add_argument("--check-only", action="store_true",
                   help="only compare the two outputs an earlier run left in --dir (same --rows)")
    args = p.parse_args()
    if args.rows < 1 or args.chunk < 1:
        p.error("--rows and --chunk must be positive")
    root = os.path.abspath(os.path.join(args.dir, str(args.rows)))
    if args.check_only:
        same = compare(os.path.join(root, "reference.parquet"), os.path.join(root, "spark_out"))
        print(f"results agree ({', '.join((*SPINE_CHECKED, *CHECKED))}, every row in spine order): {same}")
        return 0 if same else 1
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    t = time.perf_counter()
    wh_root, spine_path = make_data(root, args.rows, args.k, args.seed)
    print(f"data: {args.rows:,} events, {args.rows:,} spine rows, 3 look-alike builds, history {args.history} "
          f"({time.perf_counter() - t:.1f} s, not timed)")
    before = self_peak_gib()
    ref_s = run_reference(wh_root, spine_path, os.path.join(root, "reference.parquet"), args.history, args.chunk)
    print(f"reference (Polars join_asof + NumPy gathers, 1 process): {ref_s:8.1f} s  {args.rows / ref_s:12,.0f} rows/s"
          f"  peak RSS {max(self_peak_gib(), before):.1f} GiB")
    spark_s, ts, peak = run_spark(wh_root, spine_path, os.path.join(root, "spark_out"), args.history)
    print(f"spark training_set (local[{os.cpu_count()}]):                  {spark_s:8.1f} s  {args.rows / spark_s:12,.0f} rows/s"
          f"  peak RSS {peak / 1024:.1f} GiB (driver, JVM and workers)")
    print(f"ratio spark / reference (time): {spark_s / ref_s:.2f}")
    print(f"rows before the first cutoff: {ts.report['lookalike_users_rows_before_first_cutoff']:,}; "
          f"rows with a history: {ts.report['non_null']['hist_item_ids']:,}")
    if not args.no_check:
        same = compare(os.path.join(root, "reference.parquet"), os.path.join(root, "spark_out"))
        print(f"results agree ({', '.join((*SPINE_CHECKED, *CHECKED))}, every row in spine order): {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
