"""One writer per table: Dagster pools in the project's instance, commit conflicts retried or
reported in one line, and the slots of a killed ``recfeat`` process released."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from pipelines.settings import load_settings
from pipelines.warehouse import CommitConflict, Warehouse

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-11}}
synthetic: {{events: 3000, days: 3, seed: 7}}
"""
#: Tables no asset writes (sources and models write files and run directories, not tables).
NOT_TABLES = {"synthetic_source"}


@pytest.fixture
def project(tmp_path):
    """(config path, settings) of a generated synthetic source, with the project's Dagster instance."""
    from orchestration.instance import ensure_dagster_home
    from pipelines.synthetic import generate

    path = tmp_path / "recfeat.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    settings = load_settings(path)
    generate(settings.source.path, settings.synthetic)
    ensure_dagster_home()
    return path, settings


def test_the_project_instance_gives_every_table_pool_one_slot(tmp_path, monkeypatch):
    """Regression: nothing serialised the writers of a table (the schedule, the sensor, the UI and
    ``recfeat materialize`` could run the ingestion at the same time)."""
    from orchestration.definitions import build_definitions
    from orchestration.instance import DAGSTER_YAML, ensure_dagster_home
    from trainers.registry import model_names

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # what earlier versions wrote
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()
    assert (home / "dagster.yaml").read_text() == DAGSTER_YAML
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    ensure_dagster_home(mine)  # a file someone wrote is kept as it is
    assert (mine / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

    path = tmp_path / "recfeat.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    graph = build_definitions(load_settings(path), str(path)).resolve_asset_graph()
    pools = {}
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        if name not in NOT_TABLES and name not in model_names():
            pools[name] = graph.get(key).assets_def.node_def.pool
    assert pools["events"] == pools["rejected_events"] == "table/events"  # one run writes both (and ingest_runs)
    assert pools["user_sequences"] == "table/user_sequences"
    assert "rote_features" not in pools  # a view by default (sequences.rote_storage): no asset, no writer
    assert pools["users"] == "table/users" and pools["recall_items"] == "table/recall_items"
    assert all(p is not None and p.startswith("table/") for p in pools.values()), pools


def test_a_second_writer_waits_for_the_table_pool(project):
    """``recfeat materialize`` waits while another run holds the table's slot, then commits."""
    import threading

    from orchestration.cli import materialize_assets

    path, settings = project
    instance = dg.DagsterInstance.get()
    storage = instance.event_log_storage
    holder = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED)
    storage.initialize_concurrency_limit_to_default("table/users")
    assert storage.claim_concurrency_slot("table/users", holder.run_id, "users", 0).is_claimed
    lines, outcome = [], {}

    def second_writer():
        try:
            outcome["done"] = materialize_assets(settings, str(path), "users", log=lines.append)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=second_writer, daemon=True)
    thread.start()

    def waiting() -> bool:
        return any(p.run_id != holder.run_id for p in storage.get_concurrency_info("table/users").pending_steps)

    deadline = time.monotonic() + 120
    while not waiting():
        assert thread.is_alive(), f"the second writer did not wait for the pool: {outcome}"
        assert time.monotonic() < deadline, "the second writer never asked for the pool"
        time.sleep(0.2)
    time.sleep(1.0)
    wh = Warehouse(settings.warehouse.root)
    assert thread.is_alive() and not wh.exists("users")  # blocked, nothing committed
    storage.free_concurrency_slots_for_run(holder.run_id)  # the first writer is done
    thread.join(timeout=120)
    assert outcome.get("done") == ["users"], outcome
    assert lines[0] == f"waiting for pool table/users (one writer per table): run {holder.run_id} holds it"
    assert wh.current_version("users") == 1


def test_a_killed_recfeat_run_does_not_hold_its_pool_slot_forever(project):
    """Crash safety: a ``recfeat materialize`` killed mid-step (SIGKILL) kept its slot, and every
    later writer of the table would have waited for ever."""
    from orchestration.cli import materialize_assets
    from orchestration.instance import HOST_TAG, LAUNCHER_TAG, PID_TAG, release_dead_cli_runs

    path, settings = project
    instance = dg.DagsterInstance.get()
    storage = instance.event_log_storage
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tags = {LAUNCHER_TAG: "recfeat", HOST_TAG: socket.gethostname(), PID_TAG: str(dead.pid)}
    crashed = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED, tags=tags)
    alive = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED, tags={**tags, PID_TAG: str(os.getppid())})
    elsewhere = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED, tags={**tags, HOST_TAG: "another-host"})
    storage.initialize_concurrency_limit_to_default("table/users")
    assert storage.claim_concurrency_slot("table/users", crashed.run_id, "users", 0).is_claimed
    assert release_dead_cli_runs(instance) == [crashed.run_id]
    assert instance.get_run_by_id(crashed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(elsewhere.run_id).status == dg.DagsterRunStatus.STARTED
    assert not storage.get_concurrency_info("table/users").claimed_slots
    assert materialize_assets(settings, str(path), "users", log=lambda *_: None) == ["users"]
    run = instance.get_runs(limit=1)[0]
    assert run.tags[LAUNCHER_TAG] == "recfeat" and run.tags[PID_TAG] == str(os.getpid())


def _conflict(table: str = "users") -> CommitConflict:
    return CommitConflict(table, base_version=1, lost_to=2)


def test_a_commit_conflict_is_retried_by_dagster(project, monkeypatch):
    """Regression: a commit that lost to another writer failed the run, though running the step
    again (it re-reads its inputs) is safe."""
    import orchestration.commits as commits
    import pipelines.ingest as ingest
    from orchestration.cli import materialize_assets

    path, settings = project
    real, calls = ingest.ingest_dimension, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise _conflict()
        return real(*args, **kwargs)

    monkeypatch.setattr(commits, "CONFLICT_RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(ingest, "ingest_dimension", flaky)
    assert materialize_assets(settings, str(path), "users", log=lambda *_: None) == ["users"]
    assert len(calls) == 3
    assert Warehouse(settings.warehouse.root).current_version("users") == 1


def test_a_persistent_commit_conflict_fails_in_one_line(project, monkeypatch):
    import orchestration.commits as commits
    import pipelines.ingest as ingest
    from orchestration.cli import CliError, materialize_assets

    path, settings = project
    calls = []

    def lose(*args, **kwargs):
        calls.append(1)
        raise _conflict()

    monkeypatch.setattr(commits, "CONFLICT_RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(ingest, "ingest_dimension", lose)
    with pytest.raises(CliError) as info:
        materialize_assets(settings, str(path), "users", log=lambda *_: None)
    assert len(calls) == 1 + commits.CONFLICT_RETRIES
    assert str(info.value) == (
        "materializing users failed: table 'users': commit conflict: another writer committed version 2 after "
        "this run read version 1; nothing of this run was committed (retry the run) (after 3 retries)"
    )
    failure = next(e for e in dg.DagsterInstance.get().get_records_for_run(
        dg.DagsterInstance.get().get_runs(limit=1)[0].run_id).records
        if e.event_log_entry.dagster_event and e.event_log_entry.dagster_event.is_step_failure)
    meta = failure.event_log_entry.dagster_event.step_failure_data.user_failure_data.metadata
    assert meta["table"].value == "users" and meta["lost_to"].value == 2


class _Adapter:
    name = "kuairand"

    def event_files(self):
        return ["log.csv"]


class _Result:
    def summary(self):
        return "kuairand: 1 records read"


@pytest.mark.parametrize("table, failures, code, attempts", [
    ("rejected_events", 2, 0, 3),   # an append: retried, then it goes through
    ("ingest_runs", 9, 1, 4),       # an append that keeps losing: bounded
    ("events", 1, 1, 1),            # a partition replacement: not retried by the command
])
def test_recfeat_ingest_retries_conflicting_appends_and_fails_in_one_line(
    tmp_path, monkeypatch, capsys, table, failures, code, attempts
):
    """Regression: ``recfeat ingest`` racing another writer failed on a lost append (safe to
    retry) like on any other error."""
    import orchestration.cli as cli
    import pipelines.ingest as ingest
    import pipelines.sources as sources
    import pipelines.spark as spark

    calls = []

    def run(*args, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise _conflict(table)
        return _Result()

    monkeypatch.setattr(cli, "APPEND_RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(sources, "adapter_for", lambda name, config: _Adapter())
    monkeypatch.setattr(spark, "get_spark", lambda *a, **k: None)
    monkeypatch.setattr(ingest, "ingest_with_settings", run)
    monkeypatch.setattr(ingest, "ingest_dimension", lambda *a, **k: None)
    rc = cli.main(["ingest", "--source", "kuairand", "--input", str(tmp_path), "--warehouse", str(tmp_path / "wh")])
    out, err = capsys.readouterr()
    assert (rc, len(calls)) == (code, attempts)
    lines = err.strip().splitlines()
    notes = [x for x in lines if x.startswith("note:")]
    assert len(notes) == (attempts - 1)
    if code:
        assert lines[-1] == f"recfeat: error: {str(_conflict(table))}"
        assert len(lines) == len(notes) + 1
    else:
        assert "kuairand: 1 records read" in out


def test_recfeat_materialize_reports_a_lost_commit_in_one_line(project, monkeypatch, capsys):
    """Regression: a failed step printed Dagster's whole error log (a traceback per failure)
    before the command's own error line."""
    import orchestration.commits as commits
    import pipelines.ingest as ingest
    from orchestration.cli import main

    path, _ = project
    monkeypatch.setattr(commits, "CONFLICT_RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(ingest, "ingest_dimension", lambda *a, **k: (_ for _ in ()).throw(_conflict()))
    capsys.readouterr()
    assert main(["--config", str(path), "materialize", "--select", "users"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"recfeat: error: materializing users failed: {_conflict()} (after 3 retries)"]
