"""``recfeat materialize``: one Dagster run per selection, and one progress line per step.

Real in-process runs against the test's ``$DAGSTER_HOME`` instance.
"""
from __future__ import annotations

import logging
import re

import dagster as dg
import pytest

from pipelines.settings import load_settings

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-10}}
synthetic: {{events: 2000, days: 2, seed: 3}}
"""


@pytest.fixture
def project(tmp_path):
    from orchestration.instance import ensure_dagster_home

    path = tmp_path / "recfeat.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    ensure_dagster_home()
    return path, load_settings(path)


def test_a_selection_is_one_run_with_a_line_per_step(project):
    from orchestration.materialize import MATERIALIZE_JOB, materialize_assets

    path, settings = project
    lines: list[str] = []
    done = materialize_assets(settings, str(path), "synthetic_source,users,items", log=lines.append)
    assert done[0] == "synthetic_source" and set(done) == {"synthetic_source", "users", "items"}
    runs = dg.DagsterInstance.get().get_runs()
    assert len(runs) == 1 and runs[0].job_name == MATERIALIZE_JOB
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS
    text = "\n".join(lines)
    started = re.findall(r"^start   (\S+)", text, re.M)
    assert sorted(started) == sorted(re.findall(r"^done    (\S+) .*in \d+\.\d s", text, re.M)), text
    assert {"synthetic_source", "users", "items"} <= set(started), text
    users_rows = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey("users")).asset_materialization.metadata[
        "dagster/row_count"].value
    assert re.search(rf"^done    users in \d+\.\d s: users {users_rows:,} rows$", text, re.M), text
    # The users checks ran in the same run, in a step of their own, with their verdicts.
    assert re.search(r"^done    \S+ .*: users_quality passed", text, re.M), text
    assert lines[-1].startswith("materialized 3 asset(s) in one run (")


def test_unknown_assets_are_named(project):
    from orchestration.cli_common import CliError
    from orchestration.materialize import materialize_assets

    path, settings = project
    with pytest.raises(CliError, match=r"unknown asset\(s\) \['nope'\]"):
        materialize_assets(settings, str(path), "users,nope", log=lambda *_: None)
    assert dg.DagsterInstance.get().get_runs() == []


def test_selecting_a_view_says_it_is_derived_on_read(project):
    """rote_features is a view by default (sequences.rote_storage: view): no asset, and the
    error says what to select instead."""
    from orchestration.cli_common import CliError
    from orchestration.definitions import build_definitions
    from orchestration.materialize import resolve_selection

    path, settings = project
    defs = build_definitions(settings, str(path))
    with pytest.raises(CliError, match=r"'rote_features' is a view of 'user_sequences'.*select 'user_sequences'"):
        resolve_selection(defs, "rote_features", settings)
    with pytest.raises(CliError) as plain:
        resolve_selection(defs, "nope", settings)
    assert "view" not in str(plain.value)


def test_selecting_one_asset_of_a_multi_asset_step_selects_the_step(project):
    from orchestration.definitions import build_definitions
    from orchestration.materialize import resolve_selection

    path, settings = project
    defs = build_definitions(settings, str(path))
    step = [s.key.to_user_string() for s in defs.resolve_asset_graph().get(dg.AssetKey("events")).assets_def.specs]
    assert {"events", "rejected_events"} <= set(step)  # one ingestion step writes both
    assert resolve_selection(defs, "events") == step
    assert set(resolve_selection(defs, "rejected_events,users")) == set(step) | {"users"}
    everything = resolve_selection(defs, None)
    assert len(everything) == len(set(everything)) == len(defs.resolve_asset_graph().get_all_asset_keys())


def _record(step, event_type, **data):
    """A log record as Dagster hands it to a logger."""
    from types import SimpleNamespace

    event = SimpleNamespace(event_type_value=event_type, step_key=step, **data)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    record.dagster_meta = {"dagster_event": event, "step_key": step}
    return record


def test_progress_lines_from_dagster_events():
    from types import SimpleNamespace

    from orchestration.progress import RunProgress

    now = [100.0]
    lines: list[str] = []
    p = RunProgress(log=lines.append, step_assets={"ingest": ["events", "rejected_events"]}, clock=lambda: now[0])
    p.handle(_record("ingest", "STEP_START"))
    for day in ("2022-04-08", "2022-04-09"):  # one record per partition, the same metadata: counted once
        mat = SimpleNamespace(asset_key=dg.AssetKey("events"), metadata={"dagster/row_count": dg.MetadataValue.int(1200)},
                              partition=day)
        p.handle(_record("ingest", "ASSET_MATERIALIZATION", step_materialization_data=SimpleNamespace(materialization=mat)))
    message = logging.LogRecord("x", logging.INFO, __file__, 1, "epoch 1/2: loss 0.5", None, None)
    message.dagster_meta = {"dagster_event": None, "step_key": "ingest", "orig_message": "epoch 1/2: loss 0.5"}
    p.handle(message)
    now[0] += 12.34
    p.handle(_record("ingest", "STEP_SUCCESS"))
    assert lines == [
        "start   ingest (events, rejected_events)",
        "  ingest: epoch 1/2: loss 0.5",
        "done    ingest (events, rejected_events) in 12.3 s: events 1,200 rows",
    ]
