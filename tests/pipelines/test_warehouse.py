"""Warehouse: versioned tables, atomic commits, partition replacement, kill mid-write."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from features.contracts import TableContract
from features.layout import Manifest
from pipelines.warehouse import Warehouse, WarehouseError

FLAT = TableContract(
    name="flat",
    schema=pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())]),
    key=("k",),
    description="test table",
)
DAILY = TableContract(
    name="daily",
    schema=pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64()), pa.field("day", pa.date32())]),
    key=("k",),
    partition_column="day",
    description="test table",
)


def rows(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"k": [f"k{i}" for i in range(offset, offset + n)], "v": list(range(offset, offset + n))})


def daily_rows(days: dict[str, int]) -> pa.Table:
    ks, vs, ds = [], [], []
    for day, n in days.items():
        for i in range(n):
            ks.append(f"{day}-{i}")
            vs.append(i)
            ds.append(dt.date.fromisoformat(day))
    return pa.table({"k": ks, "v": vs, "day": pa.array(ds, pa.date32())})


def test_write_read_versions(warehouse):
    assert warehouse.tables() == []
    m1 = warehouse.write_arrow(FLAT, rows(10))
    assert m1.version == 1 and m1.row_count == 10
    m2 = warehouse.write_arrow(FLAT, rows(5, offset=100))
    assert m2.version == 2
    assert warehouse.tables() == ["flat"]
    assert warehouse.read_arrow("flat").num_rows == 5
    assert sorted(warehouse.read_arrow("flat", version=1).column("k").to_pylist()) == sorted(rows(10).column("k").to_pylist())


def test_retention_without_a_period_keeps_the_newest_versions(tmp_path):
    wh = Warehouse(str(tmp_path / "wh"), retention_days=0, keep_versions=2)
    for i in range(4):
        wh.write_arrow(FLAT, rows(3, offset=i * 10))
    assert wh.versions("flat") == [3, 4]
    data_files = [p for p in (tmp_path / "wh" / "flat").iterdir() if p.suffix == ".parquet"]
    assert len(data_files) == 2
    with pytest.raises(WarehouseError, match="no version 1"):
        wh.read_arrow("flat", version=1)


def test_retention_by_time_keeps_every_recent_version(tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))  # 7 days by default
    for i in range(7):
        wh.write_arrow(FLAT, rows(3, offset=i * 10))
    assert wh.versions("flat") == list(range(1, 8))
    assert wh.read_arrow("flat", version=1).column("k").to_pylist() == rows(3).column("k").to_pylist()
    assert wh.last_removed["flat"] == [] and wh.last_removed_files["flat"] == []


def test_streamed_chunks_and_partitions(warehouse):
    chunks = [daily_rows({"2022-04-08": 3, "2022-04-09": 2}), daily_rows({"2022-04-10": 4})]
    m = warehouse.write_arrow(DAILY, iter(chunks))
    assert sorted(m.partitions) == ["2022-04-08", "2022-04-09", "2022-04-10"]
    assert {k: p.row_count for k, p in m.partitions.items()} == {"2022-04-08": 3, "2022-04-09": 2, "2022-04-10": 4}
    # Replace one partition and drop another (covered, but no rows): the third is carried over.
    m2 = warehouse.write_arrow(
        DAILY, daily_rows({"2022-04-09": 7}), replace_partitions=["2022-04-09", "2022-04-10"]
    )
    assert {k: p.row_count for k, p in m2.partitions.items()} == {"2022-04-08": 3, "2022-04-09": 7}
    assert m2.partitions["2022-04-08"] == m.partitions["2022-04-08"]
    assert warehouse.read_arrow("daily", partitions=["2022-04-09"]).num_rows == 7


def test_write_outside_replaced_partitions_fails_and_keeps_table(warehouse):
    warehouse.write_arrow(DAILY, daily_rows({"2022-04-08": 3}))
    with pytest.raises(WarehouseError, match="outside the ones it replaces"):
        warehouse.write_arrow(DAILY, daily_rows({"2022-04-09": 1}), replace_partitions=["2022-04-08"])
    assert warehouse.current_version("daily") == 1
    assert warehouse.read_arrow("daily").num_rows == 3
    assert not list((warehouse.fs.ls(warehouse.table_path("daily") + "/_staging")))


def test_failed_write_leaves_last_version(warehouse):
    warehouse.write_arrow(FLAT, rows(4))

    def exploding():
        yield rows(2)
        raise RuntimeError("source broke mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        warehouse.write_arrow(FLAT, exploding())
    assert warehouse.current_version("flat") == 1
    assert warehouse.read_arrow("flat").num_rows == 4


def test_schema_violation_is_refused(warehouse):
    bad = pa.table({"k": ["a"], "v": ["not an int"]})
    with pytest.raises((WarehouseError, pa.ArrowInvalid)):
        warehouse.write_arrow(FLAT, bad)
    assert not warehouse.exists("flat")


def test_manifest_round_trip(warehouse):
    m = warehouse.write_arrow(FLAT, rows(3), producer={"job": "test"})
    assert Manifest.from_json(m.to_json()) == m
    assert m.producer == {"job": "test"}


def test_export_one_file(warehouse, tmp_path):
    warehouse.write_arrow(DAILY, daily_rows({"2022-04-08": 3, "2022-04-09": 2}))
    out = tmp_path / "out" / "daily.parquet"
    assert warehouse.export("daily", str(out)) == 5
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 5


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from features.contracts import TableContract
    from pipelines.warehouse import Warehouse
    contract = TableContract(name="flat", schema=pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())]),
                             key=("k",), description="test table")
    def chunks():
        for i in range(10_000):
            yield pa.table({"k": [f"new{i}-{j}" for j in range(100)], "v": list(range(100))})
            if i == 3:
                print("STAGED", flush=True)
            time.sleep(0.01)
    Warehouse(sys.argv[1]).write_arrow(contract, chunks())
    """
)


def test_killed_writer_leaves_previous_version_intact(tmp_path):
    root = str(tmp_path / "wh")
    wh = Warehouse(root)
    wh.write_arrow(FLAT, rows(50))
    before = wh.read_arrow("flat").sort_by("k")

    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, root], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "STAGED"
    time.sleep(0.2)
    staging = tmp_path / "wh" / "flat" / "_staging"
    assert any(staging.iterdir()), "the writer should be mid-write, with staged files"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    # The killed write is invisible: same version, same rows, readable.
    assert wh.current_version("flat") == 1
    assert wh.read_arrow("flat").sort_by("k").equals(before)
    # A re-run commits, and gives identical rows to a clean run.
    first = wh.write_arrow(FLAT, rows(50, offset=7))
    second = wh.write_arrow(FLAT, rows(50, offset=7))
    assert first.version == 2 and second.version == 3
    assert wh.read_arrow("flat", version=2).sort_by("k").equals(wh.read_arrow("flat", version=3).sort_by("k"))


def test_the_log_entry_is_the_commit_point(warehouse):
    warehouse.write_arrow(FLAT, rows(3))
    # Files moved into place without a log entry (a crash just before the commit) are invisible,
    # and they do not wedge the table: the next commit succeeds.
    stray = f"{warehouse.table_path('flat')}/part-00000-20260101T000000-deadbeef.parquet"
    import pyarrow.parquet as pq

    pq.write_table(rows(9, offset=500), stray)
    assert warehouse.current_version("flat") == 1
    assert warehouse.read_arrow("flat").num_rows == 3
    assert warehouse.write_arrow(FLAT, rows(1)).version == 2


def test_spark_write_and_read(spark, warehouse):
    pdf = daily_rows({"2022-04-08": 3, "2022-04-09": 2}).to_pandas()
    df = spark.createDataFrame(pdf)
    m = warehouse.write_spark(df, DAILY)
    assert {k: p.row_count for k, p in m.partitions.items()} == {"2022-04-08": 3, "2022-04-09": 2}
    back = warehouse.read_spark(spark, "daily")
    assert back.count() == 5
    assert sorted(r.k for r in back.collect()) == sorted(pdf["k"])
    arrow = warehouse.read_arrow("daily")
    assert arrow.schema.field("day").type == pa.date32()
