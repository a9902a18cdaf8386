"""The commit step of ingestion and what surrounds it: the balance check, runs that bring nothing
new, which partitions are replaced, the concurrency hook (one version read, ``base_version``),
stage roots, stale stage directories (a killed run's), and merging users/items files whose
columns changed."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from features.events import EVENTS
from pipelines.ingest import events as ingest_events_module
from pipelines.beam_ingest import IngestBalanceError
from pipelines.ingest import ingest_dimension, ingest_events
from pipelines.settings import ColumnMapping, ConfigError, DimensionFile, SourceConfig, load_settings
from pipelines.sources import adapter_for
from pipelines.warehouse import CommitConflict, Warehouse

REPO = Path(__file__).resolve().parents[2]
HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
)
DAY0 = int(dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc).timestamp() * 1000)
DAY = 86_400_000


def line(user: int, day: int = 0, video: int = 10) -> str:
    return f"{user},{video},20220425,0,{DAY0 + day * DAY + 5},1,0,0,0,0,0,0,1000,9000,0,0,0,0,1"


def kuairand(path):
    return adapter_for("k", SourceConfig(kind="kuairand", path=str(path)))


def versions(warehouse: Warehouse) -> dict[str, int | None]:
    return {t: warehouse.current_version(t) for t in (EVENTS.name, "rejected_events", "ingest_runs")}


def stage_dirs(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.startswith("ingest-")) if base.exists() else []


# ---- the balance check -------------------------------------------------------------------------


def test_rows_lost_between_staging_and_commit_fail_the_run_and_commit_nothing(spark, warehouse, tmp_path, monkeypatch):
    # Before: the commit step computed "outside the window" as accepted - in window, so a row
    # lost on the way was reported as outside the window and the run committed.
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, line(1), line(2, day=1), line(3, day=2), "1,2,x"]) + "\n")
    original = ingest_events_module._read_stage

    def lossy(spark_, path, schema):
        df = original(spark_, path, schema)
        return df.limit(max(df.count() - 1, 0)) if path.endswith("accepted") else df

    monkeypatch.setattr(ingest_events_module, "_read_stage", lossy)
    with pytest.raises(IngestBalanceError, match=r"accepted 3 records but the commit accounts for 2 .*nothing was committed"):
        ingest_events(spark, warehouse, kuairand(src))
    assert versions(warehouse) == {EVENTS.name: None, "rejected_events": None, "ingest_runs": None}


# ---- no-op runs, replaced partitions, the concurrency hook, stage roots ------------------------


def _kill_after_creating_a_stage_dir(base: Path) -> str:
    """A run killed with SIGKILL right after creating its stage directory; returns the directory."""
    from pipelines.ingest import clean_stale_stage_dirs

    code = (
        "import sys, time\n"
        "from pipelines.ingest import new_stage_dir\n"
        f"stage = new_stage_dir({str(base)!r}, 'killed')\n"
        "open(stage.path + '/part.parquet', 'wb').write(b'x' * 100_000)\n"
        "print(stage.path, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        path = child.stdout.readline().strip()
        assert path and os.path.isdir(path), "the child did not create its stage directory"
        assert clean_stale_stage_dirs(str(base)) == []  # its run is alive: kept
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return path


def test_unchanged_files_commit_nothing_and_new_events_replace_only_their_partition(spark, warehouse, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, line(1), line(2, day=1), line(3, day=2)]) + "\n")
    adapter = kuairand(src)
    stage = Path(warehouse.root) / "_tmp"  # the default stage root of a local warehouse
    options = {}

    first = ingest_events(spark, warehouse, adapter, **options)
    v1 = warehouse.current_version(EVENTS.name)

    # The same files again: nothing new, so no new events version; ingest_runs says so.
    again = ingest_events(spark, warehouse, adapter, **options)
    assert warehouse.current_version(EVENTS.name) == v1
    assert (again.events_committed, again.replaced_partitions, again.new_events, again.already_present) == (False, [], 0, 3)
    assert again.manifest.version == v1 and "nothing new: events not committed" in again.summary()
    run = warehouse.read_arrow("ingest_runs").to_pylist()[-1]
    assert (run["new_events"], run["already_present"], run["events_version"]) == (0, 3, v1)

    # One new event on 04-26 (and an overlap): only that partition is replaced, on the version read.
    (src / "log_b.csv").write_text("\n".join([HEADER, line(2, day=1), line(4, day=1, video=11)]) + "\n")
    calls = []
    for name in ("current_version", "read_spark", "write_spark"):
        real = getattr(warehouse, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            out = _real(*args, **kwargs)
            calls.append((_name, args, kwargs, out if _name == "current_version" else None))
            return out

        monkeypatch.setattr(warehouse, name, spy)
    third = ingest_events(spark, warehouse, adapter, **options)
    monkeypatch.undo()

    assert (third.new_events, third.already_present, third.duplicates) == (1, 3, 1)  # log_b's line 1 is log_a's
    assert first.replaced_partitions == ["2022-04-25", "2022-04-26", "2022-04-27"]
    assert third.replaced_partitions == ["2022-04-26"]
    assert third.manifest.written_partitions == ("2022-04-26",)
    assert {k: p.row_count for k, p in third.manifest.partitions.items()} == {"2022-04-25": 1, "2022-04-26": 2, "2022-04-27": 1}
    reads = [c for c in calls if c[0] == "read_spark" and EVENTS.name in c[1]]
    writes = [c for c in calls if c[0] == "write_spark"]
    assert reads and all(c[2].get("version") == v1 for c in reads)  # the semi-join and the rewrite read v1
    assert len(writes) == 1 and writes[0][2]["replace_partitions"] == ["2022-04-26"] and writes[0][2]["base_version"] == v1
    assert warehouse.current_version(EVENTS.name) == v1 + 1
    assert stage_dirs(stage) == []  # each run removes its own stage directory

    # A run killed with SIGKILL left its stage directory: the next run removes it at its start.
    killed = _kill_after_creating_a_stage_dir(stage)
    ingest_events(spark, warehouse, adapter, **options)
    assert not os.path.exists(killed) and stage_dirs(stage) == []


def test_a_commit_conflict_on_events_fails_the_run_and_commits_nothing_else(spark, warehouse, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, line(1), line(2, day=1)]) + "\n")
    adapter = kuairand(src)
    ingest_events(spark, warehouse, adapter)
    (src / "log_b.csv").write_text("\n".join([HEADER, line(3), "1,2,x"]) + "\n")
    before = versions(warehouse)
    real_write = warehouse.write_spark

    def racing_write(df, contract, *args, **kwargs):
        # Another writer commits to events after this run read it.
        committed = warehouse.read_spark(spark, EVENTS.name, partitions=["2022-04-26"])
        rows = spark.createDataFrame(committed.collect(), committed.schema)
        real_write(rows, EVENTS, replace_partitions=["2022-04-26"], producer={"job": "other"},
                   base_version=warehouse.current_version(EVENTS.name))  # fmt: skip
        return real_write(df, contract, *args, **kwargs)

    monkeypatch.setattr(warehouse, "write_spark", racing_write)
    try:
        ingest_events(spark, warehouse, adapter)
    except CommitConflict as exc:
        assert exc.table == EVENTS.name and exc.base_version == before[EVENTS.name]
    else:
        pytest.skip("this warehouse does not check base_version (the Delta Lake warehouse does)")
    after = versions(warehouse)
    assert after[EVENTS.name] == before[EVENTS.name] + 1  # the other writer's version, not this run's
    assert (after["rejected_events"], after["ingest_runs"]) == (before["rejected_events"], before["ingest_runs"])
    assert "3" not in warehouse.read_arrow(EVENTS.name, columns=["user_id"]).column("user_id").to_pylist()
    assert stage_dirs(Path(warehouse.root) / "_tmp") == []


def test_a_uri_stage_root_is_refused_naming_the_field(tmp_path, warehouse, monkeypatch):
    # Before: hdfs://nn/stage staged into a local folder named "hdfs:" and committed 0 events.
    monkeypatch.chdir(tmp_path)
    for uri in ["hdfs://namenode:8020/stage", "s3://bucket/stage", "gs://bucket/stage"]:
        config = tmp_path / "recfeat.yaml"
        config.write_text(f"ingest:\n  stage_root: {uri}\n")
        with pytest.raises(ConfigError) as err:
            load_settings(config)
        assert "ingest.stage_root" in str(err.value) and uri in str(err.value) and "\n" not in str(err.value)
    config.write_text(f"ingest:\n  stage_root: file://{tmp_path}/stage\n")
    assert load_settings(config).ingest.stage_root == f"{tmp_path}/stage"

    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, line(1)]) + "\n")
    with pytest.raises(ValueError, match=r"stage_root: 'hdfs://nn/stage': only a local directory"):
        ingest_events(None, warehouse, kuairand(src), stage_root="hdfs://nn/stage")
    assert not (tmp_path / "hdfs:").exists() and not warehouse.exists(EVENTS.name)


# ---- stale stage directories -------------------------------------------------------------------


def test_stale_stage_dirs_are_removed_and_running_ones_kept(tmp_path):
    from pipelines.ingest import STALE_STAGE_SECONDS, clean_stale_stage_dirs, new_stage_dir

    base = tmp_path / "_tmp"
    killed = _kill_after_creating_a_stage_dir(base)  # checks that it is kept while its run lives
    running = new_stage_dir(str(base), "running")  # a concurrent run in this process
    legacy = base / "ingest-legacy"  # no owner file (an older version's, or a run killed while creating it)
    legacy.mkdir()
    (legacy / "x").write_bytes(b"x")
    other = base / "unrelated"
    other.mkdir()

    assert clean_stale_stage_dirs(str(base)) == [killed]
    assert os.path.isdir(running.path) and legacy.is_dir() and other.is_dir()
    old = time.time() - STALE_STAGE_SECONDS - 60
    os.utime(legacy, (old, old))
    assert clean_stale_stage_dirs(str(base), own_folder=False) == []  # not ingestion's own folder: kept
    assert clean_stale_stage_dirs(str(base)) == [str(legacy)]
    assert os.path.isdir(running.path) and other.is_dir()
    running.remove()
    assert not os.path.exists(running.path)


def test_stage_base_is_ingestions_own_folder(tmp_path, warehouse):
    from pipelines.ingest import stage_base

    assert stage_base(warehouse, None) == (os.path.join(warehouse.root, "_tmp"), True)
    assert stage_base(warehouse, str(tmp_path / "s")) == (str(tmp_path / "s"), True)
    assert stage_base(warehouse, f"file://{tmp_path}/s") == (f"{tmp_path}/s", True)


# ---- users and items files whose columns changed -----------------------------------------------


def test_a_users_file_with_changed_columns_keeps_every_committed_user(tmp_path, warehouse):
    # Before: any change of columns replaced the table by the new file, dropping user 1.
    events = tmp_path / "e.csv"
    events.write_text("uid,iid,ts\n1,2,1650812741\n")
    users = tmp_path / "users.csv"
    mapping = ColumnMapping(user_id="uid", item_id="iid", timestamp="ts")
    adapter = adapter_for("gen", SourceConfig(kind="csv", path=str(events), mapping=mapping,
                                              users=DimensionFile(path=str(users), id_column="uid")))  # fmt: skip

    users.write_text("uid,age,city\n1,30,Oslo\n2,40,Rome\n")
    assert ingest_dimension(warehouse, adapter, "users").row_count == 2
    users.write_text("uid,age,gender\n2,41,f\n3,25,m\n")  # city dropped, gender added
    m = ingest_dimension(warehouse, adapter, "users")
    table = warehouse.read_arrow("users")
    assert table.column_names == ["user_id", "source", "age", "city", "gender"]
    assert table.sort_by("user_id").to_pylist() == [
        {"user_id": "1", "source": "gen", "age": 30, "city": "Oslo", "gender": None},
        {"user_id": "2", "source": "gen", "age": 41, "city": None, "gender": "f"},
        {"user_id": "3", "source": "gen", "age": 25, "city": None, "gender": "m"},
    ]
    assert m.row_count == 3

    users.write_text("uid,age\n4,2.5\n5,\n")  # int64 -> float64 widens; an empty column takes the committed type
    ingest_dimension(warehouse, adapter, "users")
    ages = dict(zip(*warehouse.read_arrow("users").select(["user_id", "age"]).to_pydict().values()))
    assert ages == {"1": 30.0, "2": 41.0, "3": 25.0, "4": 2.5, "5": None}

    from pipelines.ingest import DimensionSchemaError

    version = warehouse.current_version("users")
    users.write_text("uid,age,city\n6,old,7\n")  # text where numbers were, numbers where text was
    with pytest.raises(DimensionSchemaError, match=r"users: .*'age' \(double committed, string in the new file\), 'city' \(string committed, int64 in the new file\) changed type"):
        ingest_dimension(warehouse, adapter, "users")
    assert warehouse.current_version("users") == version


def test_an_unchanged_users_file_commits_nothing(tmp_path, warehouse):
    # Before: every ingest of the same users file committed a new version.
    events = tmp_path / "e.csv"
    events.write_text("uid,iid,ts\n1,2,1650812741\n")
    users = tmp_path / "users.csv"
    users.write_text("uid,age\n1,30\n2,40\n")
    mapping = ColumnMapping(user_id="uid", item_id="iid", timestamp="ts")
    adapter = adapter_for("gen", SourceConfig(kind="csv", path=str(events), mapping=mapping,
                                              users=DimensionFile(path=str(users), id_column="uid")))  # fmt: skip
    assert ingest_dimension(warehouse, adapter, "users").version == 1
    assert ingest_dimension(warehouse, adapter, "users").version == 1
    assert warehouse.current_version("users") == 1
    users.write_text("uid,age\n2,41\n")
    assert ingest_dimension(warehouse, adapter, "users").version == 2
