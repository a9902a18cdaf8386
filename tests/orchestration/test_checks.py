"""Quality checks in real Dagster runs: a failing suite blocks the downstream asset.

One small synthetic source, the real assets, checks and resources of ``build_definitions``, a
real Dagster instance (``$DAGSTER_HOME`` from conftest). A clean run materializes
``synthetic_truth``; after null user ids are committed into an ``events`` partition, the next
run re-ingests the partition (committed rows are merged with the source's), the blocking
``events_quality`` check fails, and ``synthetic_truth`` is skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.settings import load_settings

SMALL = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-11}}
synthetic: {{events: 3000, days: 3, seed: 11}}
"""
TABLES = ["events", "users", "items", "synthetic_truth"]


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "recfeat.yaml"
    path.write_text(SMALL.format(root=tmp_path))
    return path


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_every_table_has_a_blocking_quality_check(small_config):
    from orchestration.definitions import build_definitions

    defs = build_definitions(load_settings(small_config), str(small_config))
    specs = {s.name: s for c in defs.asset_checks for s in c.check_specs}
    assert {f"{t}_quality" for t in TABLES} | {"events_referential_integrity", "user_sequences_invariants"} <= set(specs)
    # rote_features is a view by default: no checks of its own (user_sequences_invariants checks a derived sample) ...
    assert not {"rote_features_quality", "rote_features_invariants"} & set(specs)
    # ... and a stored table with sequences.rote_storage: table.
    stored = build_definitions(load_settings(small_config, overrides={"sequences.rote_storage": "table"}), str(small_config))
    assert {"rote_features_quality", "rote_features_invariants"} <= {s.name for c in stored.asset_checks for s in c.check_specs}
    warnings = {"events_referential_integrity", "ingest_runs_rejection_rate", "lookalike_users_recall"}  # non-blocking by design
    assert all(s.blocking for name, s in specs.items() if name not in warnings)
    assert all(specs[f"{t}_quality"].blocking for t in TABLES)
    assert not any(specs[name].blocking for name in warnings)


def test_failing_suite_blocks_downstream_asset_in_a_real_run(spark, small_config, tmp_path, capsys):
    from features.events import EVENTS
    from orchestration.factory import daily_partitions
    from orchestration.automation import partition_range_tags
    from orchestration.cli import main
    from orchestration.definitions import build_definitions
    from pipelines.warehouse import Warehouse

    settings = load_settings(small_config)
    defs = build_definitions(settings, str(small_config))
    everything = list(defs.assets) + list(defs.asset_checks)
    instance = dg.DagsterInstance.get()
    tags = partition_range_tags(daily_partitions(settings))

    def run(*keys: str):
        return dg.materialize(
            everything,
            selection=dg.AssetSelection.assets(*keys).required_multi_asset_neighbors(),
            resources=defs.resources,
            instance=instance,
            tags=tags,
            raise_on_error=False,
        )

    assert run("synthetic_source").success

    # A clean run: every check passes and the downstream synthetic_truth is materialized.
    clean = run(*TABLES)
    assert clean.success
    assert _materialized(clean) == set(TABLES) | {"rejected_events", "ingest_runs"}
    checks = _checks(clean)
    assert {name: c.passed for name, c in checks.items()} == {
        **{f"{t}_quality": True for t in TABLES + ["rejected_events", "ingest_runs"]},
        "events_referential_integrity": True, "ingest_runs_invariants": True, "ingest_runs_rejection_rate": True,
    }
    events_meta = checks["events_quality"].metadata
    assert events_meta["rows_validated"].value == 3000
    assert events_meta["partitions"].value == "2022-04-08, 2022-04-09, 2022-04-10"
    assert Path(events_meta["data_docs"].value).is_file()
    wh = Warehouse(settings.warehouse.root)
    assert wh.current_version("synthetic_truth") == 1

    # Inject null user ids: commit 5 extra rows without a user into the first partition.
    day = "2022-04-08"
    part = wh.read_arrow(EVENTS.name, partitions=[day])
    bad = part.slice(0, 5)
    bad = bad.set_column(bad.schema.get_field_index("event_id"), "event_id", pa.array([f"bad{i}" for i in range(5)]))
    bad = bad.set_column(bad.schema.get_field_index("user_id"), "user_id", pa.nulls(5, pa.string()))
    wh.write_arrow(EVENTS, pa.concat_tables([part, bad]), replace_partitions=[day])

    # The next run re-ingests the range (merging the committed rows): the check fails and
    # blocks synthetic_truth, which is not materialized in this run.
    blocked = run("events", "synthetic_truth")
    assert not blocked.success
    assert _materialized(blocked) == {"events", "rejected_events", "ingest_runs"}
    assert wh.current_version("synthetic_truth") == 1
    assert pc.sum(pc.is_null(wh.read_arrow(EVENTS.name, columns=["user_id"]).column(0))).as_py() == 5
    failed = _checks(blocked)["events_quality"]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert "expect_column_values_to_not_be_null(user_id): 5 unexpected" in failed.description
    assert "user_id" in failed.metadata["failed_expectations"].value
    steps = {st.step_key: st.status.value for st in instance.get_run_step_stats(blocked.run_id)}
    assert steps == {  # synthetic_truth never started
        "ingest": "SUCCESS", "events_checks": "FAILURE", "rejected_events_checks": "SUCCESS", "ingest_runs_checks": "SUCCESS",
    }
    messages = [r.user_message for r in instance.all_logs(blocked.run_id)]
    assert "Dependencies for step synthetic_truth failed: ['events_checks']. Not executing." in messages

    # The data docs page of this validation exists and shows the failure.
    page = Path(failed.metadata["data_docs"].value)
    html = page.read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Status: Failed" in text
    assert "user_id" in text and "values must never be null" in text and "5 unexpected values found" in text
    index = Path(failed.metadata["data_docs_index"].value)
    assert index == Path(settings.warehouse.root) / "reports" / "gx" / "index.html"
    assert page.relative_to(index.parent).as_posix() in index.read_text()

    # `recfeat report` prints the stored verdicts and the data docs path without running anything.
    assert main(["--config", str(small_config), "report"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "FAILED" in lines["events"] and "passed" in lines["users"] and "passed" in lines["synthetic_truth"]
    assert "error:   expect_column_values_to_not_be_null(user_id): 5 unexpected" in out
    assert f"data docs: {index}" in out


def test_report_without_reports(tmp_path, capsys):
    from orchestration.cli import main

    assert main(["report", "--warehouse", str(tmp_path / "wh")]) == 0
    assert "no quality reports in" in capsys.readouterr().out


def test_run_partitions_from_tags():
    from orchestration.factory import run_partitions

    assert run_partitions({}) is None
    assert run_partitions({"dagster/partition": "2022-04-09"}) == ["2022-04-09"]
    tags = {"dagster/asset_partition_range_start": "2022-04-30", "dagster/asset_partition_range_end": "2022-05-02"}
    assert run_partitions(tags) == ["2022-04-30", "2022-05-01", "2022-05-02"]


def test_event_window_follows_the_ingestion_rules():
    import datetime as dt
    from types import SimpleNamespace

    from orchestration.factory import event_window

    utc = dt.timezone.utc
    now = dt.datetime(2026, 1, 1, tzinfo=utc)
    rules = SimpleNamespace(min_event_ts=dt.date(1995, 1, 1), max_event_ts=None, future_tolerance_s=3600)
    assert event_window(SimpleNamespace(rules=rules), now) == (
        dt.datetime(1995, 1, 1, tzinfo=utc),
        dt.datetime(2026, 1, 1, 1, tzinfo=utc),
    )
    rules = SimpleNamespace(min_event_ts=dt.date(1995, 1, 1), max_event_ts=dt.date(2023, 1, 1), future_tolerance_s=3600)
    assert event_window(SimpleNamespace(rules=rules), now)[1] == dt.datetime(2022, 12, 31, 23, 59, 59, 999999, tzinfo=utc)
