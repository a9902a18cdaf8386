"""Dagster: the definitions load, every asset materializes with its checks, sensor and schedule."""
from __future__ import annotations

import dagster as dg
import pyarrow.compute as pc
import pytest

from features.events import EVENTS
from pipelines.settings import load_settings

SMALL = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-11}}
synthetic: {{events: 3000, days: 3, seed: 7}}
ingest: {{settle_s: 0}}
"""


CORE = {"synthetic_source", "events", "rejected_events", "ingest_runs", "users", "items", "synthetic_truth",
        "user_sequences"}


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "recfeat.yaml"
    path.write_text(SMALL.format(root=tmp_path))
    return path


def test_definitions_load_with_assets_checks_schedule_sensor(small_config):
    from orchestration.definitions import build_definitions

    defs = build_definitions(load_settings(small_config), str(small_config))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    from trainers.registry import model_names

    assert {"watch_time_fm", "watch_time_deepfm", "sasrec", "multitask"} <= set(model_names())
    from pipelines.catalog import families

    catalogued = {t.name for f in families() for t in f.tables}
    settings = load_settings(small_config)
    stored = {t.name for f in families() for t in f.stored_tables(settings)}
    assert CORE - {"synthetic_source"} | {"rote_features", "duration_stats", "watch_time_labels", "user_vectors",
                                          "lookalike_users", "item_neighbors", "recall_items"} <= catalogued
    assert catalogued - stored == {"rote_features"}  # a view by default (sequences.rote_storage): no asset
    assert keys == stored | {"synthetic_source"} | set(model_names())  # every stored table; one asset per model
    assert graph.get(dg.AssetKey("events")).partitions_def.get_partition_keys() == ["2022-04-08", "2022-04-09", "2022-04-10"]
    checks = {c.name for c in graph.asset_check_keys}
    with_counters = {t for f in families() for t in f.invariants}
    assert {"ingest_runs", "user_sequences", "rote_features", "duration_stats", "watch_time_labels",
            "user_vectors", "lookalike_users", "item_neighbors", "recall_items"} <= with_counters
    from pipelines.quality import warning_check_name

    warnings = {warning_check_name(t) for t in stored} - {None}
    assert {"events_referential_integrity", "ingest_runs_rejection_rate"} <= warnings
    extras = {c.name for f in families() for c in f.extra_checks}
    assert "lookalike_users_recall" in extras
    assert checks == {f"{t}_quality" for t in stored} | {f"{t}_invariants" for t in with_counters & stored} | warnings | extras
    # sequences.rote_storage: table stores rote_features: its asset (one step with user_sequences) and checks.
    table_mode = build_definitions(load_settings(small_config, overrides={"sequences.rote_storage": "table"}),
                                   str(small_config)).resolve_asset_graph()
    assert {k.to_user_string() for k in table_mode.get_all_asset_keys()} == keys | {"rote_features"}
    assert {"rote_features_quality", "rote_features_invariants"} <= {c.name for c in table_mode.asset_check_keys}
    assert defs.resolve_schedule_def("daily_ingest_schedule").cron_schedule == "0 3 * * *"
    assert defs.resolve_sensor_def("new_source_files") is not None
    defs.resolve_job_def("daily_ingest")


def test_the_module_level_defs_load():
    import orchestration.definitions as module

    assert isinstance(module.defs, dg.Definitions)


def test_materialize_everything_then_rerun_is_identical(spark, small_config):
    from orchestration.cli import materialize_assets
    from pipelines.warehouse import Warehouse

    settings = load_settings(small_config)
    # The core and sequence tables (the label, look-alike and model families have their own tests,
    # and `recfeat demo` runs the whole graph in the slow tests).
    done = materialize_assets(settings, str(small_config), ",".join(sorted(CORE)), log=lambda *_: None)
    assert done[:4] == ["synthetic_source", "events", "rejected_events", "ingest_runs"]
    assert set(done) == CORE
    wh = Warehouse(settings.warehouse.root)
    # The synthetic source is clean: rejected_events is committed, empty.
    assert wh.tables() == ["events", "ingest_runs", "items", "rejected_events", "synthetic_truth", "user_sequences", "users"]
    from pipelines import api

    rote = api.read("rote_features", config=str(small_config), engine="arrow")  # the view, derived on read
    assert rote.num_rows == 3000 and rote.column("hist_len").to_pylist() == wh.read_arrow("user_sequences").column("hist_len").to_pylist()
    seqs = wh.read_arrow("user_sequences")
    assert seqs.num_rows == 3000
    assert max(seqs.column("hist_len").to_pylist()) <= 50
    assert wh.read_arrow("rejected_events").num_rows == 0
    runs = wh.read_arrow("ingest_runs").to_pylist()
    assert len(runs) == 1 and runs[0]["records_in"] == runs[0]["new_events"] == 3000
    events = wh.read_arrow("events")
    assert events.num_rows == 3000
    assert sorted(wh.manifest("events").partitions) == ["2022-04-08", "2022-04-09", "2022-04-10"]
    truth = wh.read_arrow("synthetic_truth")
    assert truth.num_rows == 3000
    assert set(truth.column("event_id").to_pylist()) == set(events.column("event_id").to_pylist())
    assert pc.min(truth.column("interest")).as_py() > 0 and pc.max(truth.column("interest")).as_py() < 1

    # The runs and their metadata are recorded by the instance.
    instance = dg.DagsterInstance.get()
    mat = instance.get_latest_materialization_event(dg.AssetKey("users")).asset_materialization
    assert mat.metadata["dagster/row_count"].value == wh.manifest("users").row_count
    assert mat.metadata["table_version"].value == 1
    assert "preview" in mat.metadata

    assert instance.get_latest_materialization_event(dg.AssetKey("rejected_events")).asset_materialization.metadata[
        "committed"].value is True  # the first run commits the empty table
    before = events.sort_by("event_id")
    materialize_assets(settings, str(small_config), "events", log=lambda *_: None)
    # Nothing new: no table gets a new version, and the materializations say so.
    assert wh.current_version("events") == 1 and wh.current_version("rejected_events") == 1
    for table in ("events", "rejected_events"):
        mat = instance.get_latest_materialization_event(dg.AssetKey(table)).asset_materialization
        assert mat.metadata["committed"].value is False, table
        assert mat.tags["dagster/data_version"] == "v1"
    assert wh.read_arrow("events").sort_by("event_id").equals(before)

    # One partition only: a late event of 2022-04-09 is committed, other days are carried over untouched.
    import csv
    import datetime as dt
    from pathlib import Path

    src = Path(settings.source.path)
    def rows():
        for log in sorted(src.glob("log_*.csv")):
            with open(log, newline="") as f:
                yield from csv.DictReader(f)

    row = next(r for r in rows() if dt.datetime.fromtimestamp(int(r["time_ms"]) / 1000, dt.timezone.utc).date()
               == dt.date(2022, 4, 9))
    header = list(row)
    with open(src / "log_late_20220409.csv", "w", newline="") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        w.writerow({**row, "time_ms": str(int(row["time_ms"]) + 1)})
    materialize_assets(settings, str(small_config), "events", "2022-04-09", "2022-04-09", log=lambda *_: None)
    m = wh.manifest("events")
    assert m.version == 2 and m.written_partitions == ("2022-04-09",)
    assert instance.get_latest_materialization_event(dg.AssetKey("events")).asset_materialization.metadata[
        "committed"].value is True
    after = wh.read_arrow("events")
    assert after.num_rows == 3001
    assert after.filter(pc.field("event_date") != dt.date(2022, 4, 9)).sort_by("event_id").equals(
        before.filter(pc.field("event_date") != dt.date(2022, 4, 9)).sort_by("event_id"))


def test_sensor_requests_a_run_for_new_files_then_skips(spark, small_config, tmp_path):
    from orchestration.definitions import build_definitions
    from pipelines.synthetic import generate

    settings = load_settings(small_config)
    defs = build_definitions(settings, str(small_config))
    sensor = defs.resolve_sensor_def("new_source_files")
    instance = dg.DagsterInstance.get()
    with dg.build_sensor_context(resources=defs.resources, instance=instance) as ctx:
        skipped = sensor(ctx)
        assert isinstance(skipped, dg.SkipReason)
    generate(settings.source.path, settings.synthetic)
    with dg.build_sensor_context(resources=defs.resources, instance=instance) as ctx:
        request = sensor(ctx)
        assert isinstance(request, dg.RunRequest)
        assert request.tags["dagster/asset_partition_range_start"] == "2022-04-08"
        assert request.tags["dagster/asset_partition_range_end"] == "2022-04-10"
        cursor = ctx.cursor
    with dg.build_sensor_context(resources=defs.resources, cursor=cursor, instance=instance) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)


def test_contract_check_fails_on_duplicate_keys(spark, warehouse):
    import pyarrow as pa

    from features.dimensions import USERS
    from pipelines.quality import check_contract

    warehouse.write_arrow(USERS, pa.table({"user_id": ["a", "a", None], "source": ["s", "s", "s"]}))
    outcome = check_contract(spark, warehouse, USERS)
    assert not outcome.passed
    assert "1 rows with null user_id" in outcome.description
    assert "duplicate keys" in outcome.description
    warehouse.write_arrow(USERS, pa.table({"user_id": ["a", "b"], "source": ["s", "s"]}))
    assert check_contract(spark, warehouse, USERS).passed


def test_incremental_sequences_are_daily_partitions_of_the_daily_job(spark, tmp_path):
    """With sequences.build: incremental, the sequence tables are daily assets built day by day."""
    from orchestration.cli import materialize_assets
    from orchestration.definitions import build_definitions
    from pipelines.warehouse import Warehouse

    path = tmp_path / "recfeat.yaml"
    path.write_text(
        SMALL.format(root=tmp_path)
        + "sequences: {build: incremental, split: temporal, valid_from: 2022-04-09T00:00:00Z, test_from: 2022-04-10T00:00:00Z}\n"
    )
    settings = load_settings(path)
    defs = build_definitions(settings, str(path))
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("user_sequences")).partitions_def is not None
    daily = defs.resolve_job_def("daily_ingest")
    daily_keys = {k.to_user_string() for k in daily.asset_layer.executable_asset_keys}
    assert {"events", "user_sequences"} <= daily_keys and "rote_features" not in daily_keys  # a view by default

    select = "synthetic_source,events,user_sequences"
    materialize_assets(settings, str(path), select, log=lambda *_: None)
    wh = Warehouse(settings.warehouse.root)
    first = wh.manifest("user_sequences")
    assert sorted(first.partitions) == ["2022-04-08", "2022-04-09", "2022-04-10"]
    instance = dg.DagsterInstance.get()

    def latest(table):
        return instance.get_latest_materialization_event(dg.AssetKey(table)).asset_materialization

    assert latest("user_sequences").metadata["committed"].value is True
    # Re-running an up-to-date day commits nothing: every partition keeps its files.
    materialize_assets(settings, str(path), "user_sequences", "2022-04-10", "2022-04-10", log=lambda *_: None)
    again = wh.manifest("user_sequences")
    assert again.version == first.version and again.partitions == first.partitions
    # ... and its materialization says so, with an unchanged data version (nothing downstream is stale).
    for table in ("user_sequences",):
        mat = latest(table)
        assert mat.metadata["committed"].value is False
        assert mat.metadata["commit"].value == f"nothing new: version {wh.current_version(table)} unchanged, nothing committed"
        assert mat.tags["dagster/data_version"] == f"v{wh.current_version(table)}"
    assert wh.read_arrow("user_sequences").num_rows == 3000
    from pipelines import api

    assert set(api.read("rote_features", config=str(path), engine="arrow").column("target_date").to_pylist()) == set(
        wh.read_arrow("user_sequences").column("target_date").to_pylist()
    )

    # A late file with an event for the first day: the sensor's run carries it downstream.
    import csv
    from pathlib import Path

    src = Path(settings.source.path)
    with open(sorted(src.glob("log_*.csv"))[0], newline="") as f:
        reader = csv.DictReader(f)
        header, row = reader.fieldnames, next(reader)
    row = {**row, "user_id": row["user_id"], "time_ms": str(int(row["time_ms"]) + 1)}
    with open(src / "log_late_20220408.csv", "w", newline="") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        w.writerow(row)
    sensor = defs.resolve_sensor_def("new_source_files")
    with dg.build_sensor_context(resources=defs.resources, instance=dg.DagsterInstance.get()) as ctx:
        request = sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    selected = {k.to_user_string() for k in request.asset_selection}
    assert {"events", "user_sequences"} <= selected
    tags = request.tags
    materialize_assets(settings, str(path), ",".join(sorted(selected)), tags["dagster/asset_partition_range_start"],
                       tags["dagster/asset_partition_range_end"], log=lambda *_: None)
    late = wh.manifest("user_sequences")
    assert late.producer["stale_days"].startswith("2022-04-08")
    assert wh.read_arrow("user_sequences").num_rows == wh.read_arrow("events").num_rows == 3001
    from pipelines.sequences import build_sequences_table, check_sequences
    assert not {k: v for k, v in check_sequences(spark, wh, settings.sequences).items() if k != "rows" and v}
    full = Warehouse(str(tmp_path / "full"))
    full.write_arrow(EVENTS, wh.read_arrow("events"))
    build_sequences_table(spark, full, settings.sequences.model_copy(update={"build": "full"}))
    got = {r["event_id"]: r for r in wh.read_arrow("user_sequences").to_pylist()}
    assert got == {r["event_id"]: r for r in full.read_arrow("user_sequences").to_pylist()}
