"""The new_source_files sensor: it waits for files to settle, and for in-flight ingestion runs.

Real sensor evaluations (``dg.build_sensor_context``) against a real Dagster instance (the test's
``$DAGSTER_HOME``); the sensor's clock is replaced, nothing sleeps.
"""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

import orchestration.automation as automation
from pipelines.settings import load_settings

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-11}}
synthetic: {{events: 3000, days: 3, seed: 7}}
"""


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def project(tmp_path, monkeypatch):
    """(settings, definitions, instance, clock) of a synthetic source (settle_s: the default, 30)."""
    from orchestration.definitions import build_definitions
    from pipelines.synthetic import generate

    path = tmp_path / "recfeat.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    settings = load_settings(path)
    generate(settings.source.path, settings.synthetic)
    clock = Clock()
    monkeypatch.setattr(automation, "clock", clock, raising=False)
    with dg.instance_for_test(temp_dir=os.environ["DAGSTER_HOME"]) as instance:
        yield settings, build_definitions(settings, str(path)), instance, clock


def _tick(defs, instance, cursor=None):
    """One evaluation of the sensor: (its result, the cursor it left)."""
    sensor = defs.resolve_sensor_def("new_source_files")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as ctx:
        result = sensor(ctx)
        return result, ctx.cursor


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_a_file_is_ingested_only_once_it_kept_its_size_and_mtime_for_settle_s(project):
    """Regression: the sensor ingested a file the moment it appeared, so the half-written last
    line of a file still being copied became a permanent dead letter."""
    settings, defs, instance, clock = project
    result, cursor = _tick(defs, instance)
    assert isinstance(result, dg.SkipReason) and "ingest.settle_s = 30 s" in result.skip_message
    clock.now += 20
    result, cursor = _tick(defs, instance, cursor)
    assert isinstance(result, dg.SkipReason)  # 20 s unchanged: not yet
    log = sorted(Path(settings.source.path).glob("log_*.csv"))[0]
    _append(log, "1,2")  # the writer is still at it: half a line
    os.utime(log, ns=(os.stat(log).st_atime_ns, os.stat(log).st_mtime_ns + 1_000_000))
    clock.now += 15  # 35 s after the first sight, 15 s after the change
    result, cursor = _tick(defs, instance, cursor)
    assert isinstance(result, dg.SkipReason) and log.name in result.skip_message
    clock.now += 30
    result, cursor = _tick(defs, instance, cursor)
    assert isinstance(result, dg.RunRequest)
    assert result.tags[automation.SOURCE_TAG] == "synthetic"
    assert log.name in result.tags["recfeat/changed_files"]
    clock.now += 60
    result, _ = _tick(defs, instance, cursor)
    assert isinstance(result, dg.SkipReason) and result.skip_message == "no new or changed source files"


def test_settle_s_zero_ingests_at_once_and_an_old_cursor_is_read(project, tmp_path):
    from orchestration.definitions import build_definitions

    settings, _, instance, _ = project
    path = tmp_path / "now.yaml"
    path.write_text(CONFIG.format(root=tmp_path) + "ingest: {settle_s: 0}\n")
    defs = build_definitions(load_settings(path), str(path))
    result, cursor = _tick(defs, instance)
    assert isinstance(result, dg.RunRequest)
    # The cursor of earlier versions (name -> [size, mtime_ns]) still means "already requested".
    old = automation.source_file_state(settings)
    import json

    result, _ = _tick(defs, instance, json.dumps(old))
    assert isinstance(result, dg.SkipReason) and result.skip_message == "no new or changed source files"


@pytest.mark.parametrize("how", ["tagged", "events_asset", "daily_job"])
def test_the_sensor_skips_while_an_ingestion_run_is_in_flight(project, how):
    """Regression: a changed file started a second ingestion while the first was still running."""
    _, defs, instance, clock = project
    clock.now += 3600
    result, cursor = _tick(defs, instance)  # first sight
    clock.now += 60
    kwargs = {
        "tagged": {"tags": {"recfeat/source": "synthetic"}},
        "events_asset": {"asset_selection": frozenset({dg.AssetKey("events"), dg.AssetKey("rejected_events")})},
        "daily_job": {"job_name": automation.INGEST_JOB},
    }[how]
    run = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED, **kwargs)
    other = create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED, tags={"recfeat/source": "another"})
    result, cursor = _tick(defs, instance, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "in flight" in result.skip_message and run.run_id in result.skip_message
    assert other.run_id not in result.skip_message
    assert automation.in_flight_ingest_runs(instance, "synthetic") == [run.run_id]
    instance.report_run_failed(run)  # the run ends: the next tick asks for the files it may have missed
    result, _ = _tick(defs, instance, cursor)
    assert isinstance(result, dg.RunRequest)
