"""The Delta Lake warehouse: conflicts, crashes, retention by time, time travel, migration.

Each test names the defect of the pre-Delta warehouse it pins (two writers both succeeding on a
stale read, a kill wedging the table, retention by count deleting what readers use, a vanished
staging folder committing an empty table).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contracts import TableContract
from features.layout import Manifest, PartitionEntry, legacy_manifest_path, legacy_pointer_path, pin_record
from pipelines.warehouse import CommitConflict, Warehouse, WarehouseError

from tests.pipelines.test_warehouse import DAILY, FLAT, rows  # the same test tables


def daily(day: str, keys: list[str]) -> pa.Table:
    return pa.table({"k": keys, "v": list(range(len(keys))), "day": pa.array([dt.date.fromisoformat(day)] * len(keys))})


def keys(wh: Warehouse, table: str, version=None) -> list[str]:
    return sorted(wh.read_arrow(table, version=version).column("k").to_pylist())


# ---- two writers -------------------------------------------------------------------
def test_two_writers_read_modify_write_one_partition_one_conflicts_nothing_lost(tmp_path):
    """Regression: two writers replacing the same day from the same read both succeeded and one
    writer's rows were silently lost."""
    root = str(tmp_path / "wh")
    Warehouse(root).write_arrow(DAILY, daily("2024-01-01", ["a"]))
    a, b = Warehouse(root), Warehouse(root)
    day_a = a.read_arrow("daily", partitions=["2024-01-01"])  # both read version 1 ...
    day_b = b.read_arrow("daily", partitions=["2024-01-01"])
    a.write_arrow(DAILY, pa.concat_tables([day_a, daily("2024-01-01", ["from_a"])]), replace_partitions=["2024-01-01"])
    with pytest.raises(CommitConflict) as info:  # ... so the second to commit must not overwrite the first
        b.write_arrow(DAILY, pa.concat_tables([day_b, daily("2024-01-01", ["from_b"])]), replace_partitions=["2024-01-01"])
    message = str(info.value)
    assert "\n" not in message and "'daily'" in message and "version 2" in message and "read version 1" in message
    assert info.value.lost_to == 2 and info.value.base_version == 1
    assert keys(Warehouse(root), "daily") == ["a", "from_a"]
    # The loser's retry (a fresh read) commits both.
    c = Warehouse(root)
    day_c = c.read_arrow("daily", partitions=["2024-01-01"])
    c.write_arrow(DAILY, pa.concat_tables([day_c, daily("2024-01-01", ["from_b"])]), replace_partitions=["2024-01-01"])
    assert keys(Warehouse(root), "daily") == ["a", "from_a", "from_b"]
    assert not [p for p in (tmp_path / "wh" / "daily" / "day=2024-01-01").iterdir() if "from_b" in p.name]


def test_two_first_writers_of_an_empty_table_cannot_both_land(tmp_path):
    """Regression: with no committed version to compare, two first commits could both land."""
    root = str(tmp_path / "wh")
    a, b = Warehouse(root), Warehouse(root)
    # Both looked before either committed: both are based on "no table yet" (version 0).
    base_a, base_b = a.current_version("daily") or 0, b.current_version("daily") or 0
    a.write_arrow(DAILY, daily("2024-01-01", ["from_a"]), replace_partitions=["2024-01-01"], base_version=base_a)
    with pytest.raises(CommitConflict, match="committed version 1 after this run read version 0"):
        b.write_arrow(DAILY, daily("2024-01-01", ["from_b"]), replace_partitions=["2024-01-01"], base_version=base_b)
    assert keys(Warehouse(root), "daily") == ["from_a"]


def test_concurrent_appends_both_land(tmp_path):
    root = str(tmp_path / "wh")
    Warehouse(root).write_arrow(FLAT, rows(1))
    a, b = Warehouse(root), Warehouse(root)
    a.read_arrow("flat"), b.read_arrow("flat")
    a.write_arrow(FLAT, rows(2, offset=10), append=True)
    b.write_arrow(FLAT, rows(2, offset=20), append=True)
    assert keys(Warehouse(root), "flat") == ["k0", "k10", "k11", "k20", "k21"]


def test_disjoint_partitions_from_a_stale_read_conflict_too(tmp_path):
    """Optimistic concurrency is per table: a write based on an old version never lands."""
    root = str(tmp_path / "wh")
    Warehouse(root).write_arrow(DAILY, daily("2024-01-01", ["a"]))
    a, b = Warehouse(root), Warehouse(root)
    a.manifest("daily"), b.manifest("daily")
    a.write_arrow(DAILY, daily("2024-01-02", ["x"]), replace_partitions=["2024-01-02"])
    with pytest.raises(CommitConflict):
        b.write_arrow(DAILY, daily("2024-01-03", ["y"]), replace_partitions=["2024-01-03"])
    assert keys(Warehouse(root), "daily") == ["a", "x"]


# ---- crashes -----------------------------------------------------------------------
KILL_BEFORE_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    import pyarrow as pa
    from features.contracts import TableContract
    from pipelines.warehouse import Warehouse
    flat = TableContract(name="flat", schema=pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())]),
                         key=("k",), description="test table")
    def die(*args, **kwargs):  # the files are in their committed place; the log entry is not written
        os.kill(os.getpid(), signal.SIGKILL)
    Warehouse._commit_actions = die
    Warehouse(sys.argv[1]).write_arrow(flat, pa.table({"k": ["killed"], "v": [1]}))
    """
)


def test_a_kill_between_placing_files_and_the_commit_does_not_wedge_the_table(tmp_path):
    """Regression: a kill between the manifest and the pointer made every later commit fail
    with "another writer is committing", forever; its files stayed on disk."""
    root = str(tmp_path / "wh")
    wh = Warehouse(root)
    wh.write_arrow(FLAT, rows(3))
    proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_COMMIT, root], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    table_dir = tmp_path / "wh" / "flat"
    assert len(list(table_dir.glob("*.parquet"))) == 2  # the killed writer's file is there, unreferenced
    assert wh.current_version("flat") == 1 and keys(wh, "flat") == ["k0", "k1", "k2"]
    assert Warehouse(root).write_arrow(FLAT, rows(1, offset=9)).version == 2  # not wedged
    # The dead transaction's file and staging area are gone after that commit.
    names = [p.name for p in table_dir.glob("*.parquet")]
    assert len(names) == 2 and not any("killed" in n for n in names)
    assert not list((table_dir / "_staging").iterdir())
    assert keys(Warehouse(root), "flat") == ["k9"] and keys(Warehouse(root), "flat", version=1) == ["k0", "k1", "k2"]


def test_a_vanished_staging_folder_commits_nothing(warehouse):
    """Regression: if the staging folder disappeared, the commit succeeded with an empty table."""
    warehouse.write_arrow(FLAT, rows(4))
    with pytest.raises(WarehouseError, match="staging area .* disappeared"):
        with warehouse.transaction(FLAT) as staged:
            warehouse.fs.rm(staged.path, recursive=True)
    assert warehouse.current_version("flat") == 1 and warehouse.read_arrow("flat").num_rows == 4


# ---- retention and time travel -----------------------------------------------------
def test_retention_by_time_keeps_what_a_reader_and_a_pinned_run_use(tmp_path):
    """Regression: retention kept 5 versions by count and deleted the rest at once, so a reader
    mid-read and a trainer that recorded an older version both hit FileNotFoundError."""
    root = str(tmp_path / "wh")
    wh = Warehouse(root)  # 7 days
    wh.write_arrow(FLAT, rows(3))
    files_v1 = wh.files("flat")
    for i in range(8):
        wh.write_arrow(FLAT, rows(2, offset=100 + i))
    assert wh.versions("flat") == list(range(1, 10))
    assert all(os.path.exists(f) for f in files_v1)  # a reader holding v1's file list can still read it
    assert keys(wh, "flat", version=1) == ["k0", "k1", "k2"]
    # Without a retention period only the newest and the pinned versions stay.
    short = Warehouse(root, retention_days=0, keep_versions=1)
    short.pin("flat", 1, "sasrec--run-1")
    short.write_arrow(FLAT, rows(1, offset=500))
    assert short.versions("flat") == [1, 10]
    assert keys(short, "flat", version=1) == ["k0", "k1", "k2"]
    assert len(short.last_removed_files["flat"]) == 8  # the files of versions 2..9
    with pytest.raises(WarehouseError, match="no version 5"):
        short.read_arrow("flat", version=5)
    short.unpin("flat", "sasrec--run-1")
    short.write_arrow(FLAT, rows(1, offset=600))
    assert short.versions("flat") == [11] and not any(os.path.exists(f) for f in files_v1)


def test_time_travel_by_timestamp_and_history(warehouse):
    warehouse.write_arrow(FLAT, rows(2))
    time.sleep(1.1)
    between = dt.datetime.now(dt.timezone.utc)
    time.sleep(1.1)
    warehouse.write_arrow(FLAT, rows(3, offset=10), producer={"job": "second"})
    assert warehouse.manifest("flat", between).version == 1
    assert keys(warehouse, "flat", version=between) == ["k0", "k1"]
    history = warehouse.history("flat")
    assert [h["version"] for h in history] == [2, 1, 0]
    assert json.loads(history[0]["recfeat.producer"]) == {"job": "second"}
    assert json.loads(history[0]["recfeat.row_counts"]) == {"all": 3}
    with pytest.raises(WarehouseError, match="no .*version"):
        warehouse.manifest("flat", dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))


def test_commit_metadata_is_in_the_delta_log(warehouse):
    m = warehouse.write_arrow(DAILY, daily("2024-01-01", ["a", "b"]), producer={"job": "test", "run_id": "r1"})
    assert m.producer == {"job": "test", "run_id": "r1"} and m.written_partitions == ("2024-01-01",)
    log = warehouse.table_path("daily") + "/_delta_log/00000000000000000001.json"
    with open(log) as fh:
        info = next(json.loads(line)["commitInfo"] for line in fh if line.startswith('{"commitInfo"'))
    assert info["recfeat.contract"].startswith("daily@")
    assert json.loads(info["recfeat.checks"]) == {"schema_vs_contract": "passed"}
    assert json.loads(info["recfeat.row_counts"]) == {"2024-01-01": 2}


def test_other_delta_readers_see_the_same_rows(warehouse):
    polars = pytest.importorskip("polars")
    warehouse.write_arrow(DAILY, pa.concat_tables([daily("2024-01-01", ["a", "b"]), daily("2024-01-02", ["c"])]))
    warehouse.write_arrow(DAILY, daily("2024-01-02", ["d"]), replace_partitions=["2024-01-02"])
    got = polars.read_delta(warehouse.table_path("daily")).sort("k")
    assert got["k"].to_list() == ["a", "b", "d"]
    assert [str(d) for d in got["day"].to_list()] == ["2024-01-01", "2024-01-01", "2024-01-02"]
    old = polars.read_delta(warehouse.table_path("daily"), version=1).sort("k")
    assert old["k"].to_list() == ["a", "b", "c"]


# ---- migration -----------------------------------------------------------------------
def _legacy_table(root: str) -> None:
    """A table in the pre-Delta layout: versions 3 and 5 kept (1, 2 and 4 removed), v3 pinned."""
    table_dir = f"{root}/daily"
    manifests = {}
    for version, day_rows in ((3, {"2024-01-01": ["a"], "2024-01-02": ["b"]}), (5, {"2024-01-02": ["c", "d"]})):
        parts = {}
        for day, ks in day_rows.items():
            rel = f"data/day={day}/v{version:06d}-txn{version}"
            os.makedirs(f"{table_dir}/{rel}", exist_ok=True)
            pq.write_table(daily(day, ks), f"{table_dir}/{rel}/part-00000.parquet")
            parts[day] = PartitionEntry(path=rel, row_count=len(ks), files=("part-00000.parquet",))
        if version == 5:  # day 1 carried over from version 3
            parts["2024-01-01"] = manifests[3].partitions["2024-01-01"]
        manifests[version] = Manifest(
            table="daily", version=version, committed_at=f"2026-11-0{version}T00:00:00+00:00", partition_column="day",
            schema=(("k", "string"), ("v", "int64"), ("day", "date32[day]")), partitions=parts,
            written_partitions=tuple(sorted(day_rows)), producer={"job": f"legacy-{version}"},
        )
        os.makedirs(f"{table_dir}/_manifests", exist_ok=True)
        with open(legacy_manifest_path(root, "daily", version), "w") as fh:
            fh.write(manifests[version].to_json())
    with open(legacy_pointer_path(root, "daily"), "w") as fh:
        fh.write("000005\n")
    os.makedirs(f"{table_dir}/_pins")
    with open(f"{table_dir}/_pins/sasrec--run.json", "w") as fh:
        fh.write(pin_record(3))


def test_migrate_keeps_versions_pins_and_rows(tmp_path):
    root = str(tmp_path / "wh")
    _legacy_table(root)
    wh = Warehouse(root)
    with pytest.raises(WarehouseError, match="recfeat migrate"):
        wh.read_arrow("daily")
    with pytest.raises(WarehouseError, match="recfeat migrate"):
        wh.write_arrow(DAILY, daily("2024-01-09", ["z"]), replace_partitions=["2024-01-09"])
    assert wh.migrate(dry_run=True) == {"daily": "would migrate"}
    assert "migrated versions [3, 5]" in wh.migrate()["daily"]
    assert wh.current_version("daily") == 5 and wh.versions("daily") == [3, 5]  # 1, 2, 4 are placeholders
    assert keys(wh, "daily") == ["a", "c", "d"] and keys(wh, "daily", version=3) == ["a", "b"]
    m = wh.manifest("daily")
    assert m.producer == {"job": "legacy-5"} and m.committed_at == "2026-11-05T00:00:00+00:00"
    assert wh.pins("daily") == {3: ["sasrec--run"]}
    with pytest.raises(WarehouseError, match="no version 4"):
        wh.read_arrow("daily", version=4)
    assert not os.path.exists(legacy_pointer_path(root, "daily")) and wh.migrate() == {}
    # And the table goes on as a Delta table.
    wh.write_arrow(DAILY, daily("2024-01-03", ["e"]), replace_partitions=["2024-01-03"])
    assert keys(Warehouse(root), "daily") == ["a", "c", "d", "e"]


def test_an_interrupted_migration_is_redone(tmp_path):
    root = str(tmp_path / "wh")
    _legacy_table(root)
    wh = Warehouse(root)
    os.makedirs(f"{root}/daily/_delta_log")
    with open(f"{root}/daily/_delta_log/00000000000000000000.json", "w") as fh:
        fh.write("{}\n")  # a half-written log from a killed migration
    assert "migrated" in wh.migrate()["daily"]
    assert keys(wh, "daily") == ["a", "c", "d"] and wh.versions("daily") == [3, 5]


# ---- review regressions --------------------------------------------------------------
TEXT = TableContract(
    name="text",
    schema=pa.schema([pa.field("k", pa.string()), pa.field("p", pa.string())]),
    key=("k",),
    partition_column="p",
    description="test table partitioned by free text",
)


def test_partition_values_with_spaces_and_percent_signs_round_trip(warehouse):
    """Regression: paths were URL-encoded twice, so such files could not be found, by recfeat or
    any Delta reader, and retention took the current files for garbage."""
    polars = pytest.importorskip("polars")
    data = pa.table({"k": ["1", "2", "3"], "p": ["a b", "x%y", "plain"]})
    warehouse.write_arrow(TEXT, data)
    warehouse.write_arrow(TEXT, pa.table({"k": ["4"], "p": ["plain"]}), replace_partitions=["plain"])
    assert sorted(warehouse.manifest("text").partitions) == ["a b", "plain", "x%y"]
    assert keys(warehouse, "text") == ["1", "2", "4"]
    short = Warehouse(warehouse.uri, retention_days=0, keep_versions=1)
    assert len(short.retain("text")) == 1  # only the replaced file of "plain"
    assert keys(short, "text") == ["1", "2", "4"]
    assert sorted(polars.read_delta(warehouse.table_path("text"))["k"].to_list()) == ["1", "2", "4"]


def test_retention_never_takes_a_concurrent_writers_new_files(tmp_path):
    """Regression: retention listed live transactions, then the log, then the files: a writer
    committing in between lost its files and the current version became unreadable."""
    root = str(tmp_path / "wh")
    a, b = Warehouse(root, retention_days=0, keep_versions=1), Warehouse(root)
    a.write_arrow(DAILY, daily("2024-01-01", ["a"]))
    original = Warehouse.cleanup_staging

    def cleanup_then_b_commits(self, table):
        live = original(self, table)
        if self is a and not getattr(self, "_raced", False):
            self._raced = True
            b.write_arrow(DAILY, daily("2024-01-02", ["b"]), replace_partitions=["2024-01-02"])
        return live

    Warehouse.cleanup_staging = cleanup_then_b_commits
    try:
        a.retain("daily")
    finally:
        Warehouse.cleanup_staging = original
    assert keys(Warehouse(root), "daily") == ["a", "b"]


def test_retention_keeps_a_version_whose_log_entry_cannot_be_read(tmp_path, monkeypatch):
    """Regression: an unreadable log entry counted as old, so retention deleted versions that
    were still inside the retention period."""
    import pipelines.warehouse.reading as warehouse_reading

    root = str(tmp_path / "wh")
    wh = Warehouse(root)
    for i in range(3):
        wh.write_arrow(FLAT, rows(1, offset=i))
    monkeypatch.setattr(warehouse_reading, "commit_info", lambda *args, **kwargs: {})
    fresh = Warehouse(root)
    assert fresh.retain("flat") == []
    assert keys(fresh, "flat", version=1) == ["k0"]


def test_writes_return_the_version_they_committed(tmp_path):
    """Regression: a write returned the latest manifest, which may be another writer's."""
    root = str(tmp_path / "wh")
    a = Warehouse(root)
    original = Warehouse.retain

    def retain_after_another_commit(self, table):
        if self is a:
            Warehouse(root).write_arrow(FLAT, rows(5, offset=50), append=True)
        return original(self, table)

    Warehouse.retain = retain_after_another_commit
    try:
        m = a.write_arrow(FLAT, rows(2))
    finally:
        Warehouse.retain = original
    assert m.version == 1 and m.row_count == 2 and Warehouse(root).current_version("flat") == 2


def test_a_fresh_read_after_an_own_commit_is_the_next_base(tmp_path):
    """Regression: after its own commit an object kept its old base, so a later read-modify-write
    failed although it had read the latest version."""
    root = str(tmp_path / "wh")
    a, b = Warehouse(root), Warehouse(root)
    a.write_arrow(FLAT, rows(1))
    a.write_arrow(FLAT, pa.concat_tables([a.read_arrow("flat"), rows(1, offset=10)]))
    b.write_arrow(FLAT, pa.concat_tables([b.read_arrow("flat"), rows(1, offset=50)]))
    a.write_arrow(FLAT, pa.concat_tables([a.read_arrow("flat"), rows(1, offset=20)]))
    assert keys(Warehouse(root), "flat") == ["k0", "k10", "k20", "k50"]


def test_migration_drops_pre_delta_staging_and_a_half_migrated_table_is_refused(tmp_path):
    """Regressions: a pre-Delta writer's staging area made the first commit after the migration
    delete the current files (its name is in the legacy data directories); a half-done
    migration served an old version as the latest."""
    root = str(tmp_path / "wh")
    _legacy_table(root)
    os.makedirs(f"{root}/daily/_staging/txn5")  # killed after its pointer, before its sweep
    wh = Warehouse(root)
    assert wh.current_version("daily") is None and wh.tables() == []
    wh.migrate()
    assert not os.path.exists(f"{root}/daily/_staging")
    wh.write_arrow(DAILY, daily("2024-01-09", ["z"]), replace_partitions=["2024-01-09"])
    assert keys(Warehouse(root), "daily") == ["a", "c", "d", "z"]


def test_time_travel_by_time_uses_a_migrated_versions_original_time(tmp_path):
    root = str(tmp_path / "wh")
    _legacy_table(root)
    wh = Warehouse(root)
    wh.migrate()
    at = dt.datetime(2026, 11, 4, tzinfo=dt.timezone.utc)  # between v3 (11-03) and v5 (11-05)
    assert wh.manifest("daily", at).version == 3
    assert keys(wh, "daily", version=dt.datetime(2026, 11, 6, tzinfo=dt.timezone.utc)) == ["a", "c", "d"]
    with pytest.raises(WarehouseError, match="had no committed version at"):
        wh.manifest("daily", dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc))
