"""What a Delta commit costs: Warehouse.write_arrow against its I/O floor, and as a table grows.

    python benchmarks/warehouse_commit.py                 # 1M rows in 10 daily partitions; 200 commits
    python benchmarks/warehouse_commit.py 5000000 400

Per size, in one process and one temporary folder:
- **floor**: pyarrow writes the same rows as one Parquet file per partition into a plain
  directory (no staging, no log, no retention);
- **warehouse**: ``Warehouse.write_arrow`` of the same rows as a new table (staging, schema check
  against the contract, move to the committed names, one Delta transaction, retention);
- **growth**: one-partition replacements (1,000 rows each) committed one after the other,
  reporting the time per commit at the first, middle and last tenth, so the cost of the
  conflict check, the log and retention as the history grows is visible.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.contracts import TableContract  # noqa: E402
from pipelines.warehouse import Warehouse  # noqa: E402

DAILY = TableContract(
    name="bench_daily",
    schema=pa.schema([pa.field("event_id", pa.string()), pa.field("user_id", pa.string()),
                      pa.field("play_time_ms", pa.int64()), pa.field("event_date", pa.date32())]),
    key=("event_id",), partition_column="event_date", description="benchmark table",
)


def rows(n: int, days: int, offset: int = 0) -> pa.Table:
    start = dt.date(2022, 4, 8)
    return pa.table({
        "event_id": [f"e{offset + i}" for i in range(n)],
        "user_id": [f"u{(offset + i) % 5000}" for i in range(n)],
        "play_time_ms": list(range(offset, offset + n)),
        "event_date": pa.array([start + dt.timedelta(days=i % days) for i in range(n)], pa.date32()),
    })


def floor(table: pa.Table, folder: Path) -> float:
    import pyarrow.compute as pc

    t0 = time.perf_counter()
    keys = pc.cast(table.column("event_date"), pa.string())
    for value in sorted(pc.unique(keys).to_pylist()):
        part = folder / f"event_date={value}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pc.equal(keys, value)), part / "part-00000.parquet")
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    size = int(argv[0]) if argv else 1_000_000
    commits = int(argv[1]) if len(argv) > 1 else 200
    base = Path(tempfile.mkdtemp(prefix="recfeat-commit-bench-"))
    try:
        table = rows(size, days=10)
        print(f"warehouse commit benchmark: {os.cpu_count()} CPUs, {size:,} rows in 10 partitions, then {commits} commits")
        f = floor(table, base / "floor")
        t0 = time.perf_counter()
        wh = Warehouse(str(base / "wh"))
        wh.write_arrow(DAILY, table)
        w = time.perf_counter() - t0
        print(f"floor      {size:>10,} rows {f:7.2f} s  (pyarrow, one file per partition)")
        print(f"warehouse  {size:>10,} rows {w:7.2f} s  (stage, check, move, Delta commit, retention)")
        print(f"ratio warehouse/floor: {w / f:.2f}x")
        times = []
        for i in range(commits):
            day = (dt.date(2022, 4, 8) + dt.timedelta(days=i % 10)).isoformat()
            chunk = rows(1_000, days=1, offset=10_000_000 + i * 1_000).set_column(
                3, "event_date", pa.array([dt.date.fromisoformat(day)] * 1_000, pa.date32()))
            t0 = time.perf_counter()
            wh.write_arrow(DAILY, chunk, replace_partitions=[day])
            times.append(time.perf_counter() - t0)
        tenth = max(1, commits // 10)
        first, middle, last = times[:tenth], times[commits // 2: commits // 2 + tenth], times[-tenth:]
        print(f"commit of 1,000 rows replacing one partition: median {statistics.median(first) * 1000:.0f} ms "
              f"(commits 1-{tenth}), {statistics.median(middle) * 1000:.0f} ms (middle), "
              f"{statistics.median(last) * 1000:.0f} ms (last {tenth}; {commits + 1} versions)")
        print(f"ratio last/first tenth: {statistics.median(last) / statistics.median(first):.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
