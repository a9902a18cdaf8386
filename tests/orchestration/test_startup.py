"""What ``recfeat materialize`` does before its first step: the JVM starts before Dagster is
imported, the run is prepared while it starts, and a selection of tables imports no trainer.

The checks that depend on what a process has imported run in a fresh interpreter each
(``_fresh``): this test process has imported everything already.
"""
from __future__ import annotations

import os

import dagster as dg
import pytest

from pipelines.settings import load_settings
from tests.orchestration.test_spark_warm_start import _fresh

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[1]", shuffle_partitions: 1}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-10}}
synthetic: {{events: 2000, days: 2, seed: 3}}
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "recfeat.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    return path


def test_the_command_reaches_the_spark_start_without_importing_dagster(config, tmp_path):
    """What ``cmd_materialize`` imports and loads before it starts the JVM holds no Dagster (about
    1 s on two cores, which the JVM start then overlaps)."""
    out = _fresh(f"""
        import os, sys
        import orchestration.cli
        from orchestration.cli_common import ensure_dagster_home
        from orchestration.materialize import materialize_assets, selection_needs_spark, warm_start_spark
        from pipelines.settings import load_settings

        os.environ["DAGSTER_HOME"] = {str(tmp_path / "dagster")!r}
        ensure_dagster_home()
        settings = load_settings({str(config)!r})
        assert selection_needs_spark(settings, "user_sequences")
        assert "dagster" not in sys.modules, sorted(m for m in sys.modules if m.startswith("dagster"))[:5]
        print("ok")
    """, tmp_path)
    assert out.startswith("ok")


def test_asking_again_while_a_start_is_under_way_returns_at_once(tmp_path):
    """``materialize_assets`` asks for the start the command began: while that start holds the
    creation lock it gets it at once, not when the JVM is up. The start here is slow and fails
    without a JVM: its workers' interpreter is a script that takes 3 s to fail the probe."""
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 3\nexit 1\n")
    slow.chmod(0o755)
    path = tmp_path / "recfeat.yaml"
    path.write_text(CONFIG.format(root=tmp_path).replace(
        'shuffle_partitions: 1}', f'shuffle_partitions: 1, conf: {{spark.pyspark.python: "{slow}"}}}}'))
    out = _fresh(f"""
        import time
        import pipelines.spark as spark
        from orchestration.materialize import warm_start_spark
        from pipelines.settings import load_settings

        settings = load_settings({str(path)!r})
        warm = warm_start_spark(settings, "user_sequences")  # as the command does at its start
        time.sleep(0.5)  # the start's thread holds the creation lock, probing the interpreter
        t0 = time.perf_counter()
        again = warm_start_spark(settings, "user_sequences")  # as materialize_assets does
        waited = time.perf_counter() - t0
        assert again is warm and waited < 1.0 and not warm.done, (waited, warm.done)
        warm.wait()
        assert isinstance(warm.error, spark.SparkSetupError), warm.error
        print("ok")
    """, tmp_path)
    assert out.startswith("ok")


def test_a_table_selection_is_built_from_the_tables_alone_with_the_same_job(config):
    from orchestration.definitions import build_definitions
    from orchestration.materialize import MATERIALIZE_JOB, resolve_selection, selection_definitions

    settings = load_settings(config)
    full = build_definitions(settings, str(config))
    tables = selection_definitions(settings, str(config), "duration_stats, watch_time_labels")
    keys = {k.to_user_string() for k in tables.resolve_asset_graph().get_all_asset_keys()}
    models = {k.to_user_string() for k in full.resolve_asset_graph().get_all_asset_keys()} - keys
    assert "sasrec" in models and "user_sequences" in keys

    def job(defs, select):
        order = resolve_selection(defs, select)
        selected = dg.define_asset_job(MATERIALIZE_JOB, selection=dg.AssetSelection.assets(*order))
        run_defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=defs.resources,
                                  jobs=[selected])
        return order, run_defs.resolve_job_def(MATERIALIZE_JOB).get_job_snapshot().snapshot_id

    # The same steps in the same order, and the same job snapshot (what the run records).
    assert job(tables, "duration_stats,watch_time_labels") == job(full, "duration_stats,watch_time_labels")
    assert job(tables, "user_sequences") == job(full, "user_sequences")
    # A model, a misspelling or no selection: every asset.
    for select in ("sasrec", "user_sequences,nope", None):
        built = selection_definitions(settings, str(config), select)
        assert models <= {k.to_user_string() for k in built.resolve_asset_graph().get_all_asset_keys()}, select


def test_the_code_location_is_built_when_read_not_when_imported(tmp_path):
    """Importing ``orchestration.definitions`` builds nothing; Dagster's loader (which lists the
    module's members) still finds ``defs``."""
    out = _fresh("""
        import orchestration.definitions as module
        assert "defs" not in vars(module)
        from dagster._core.workspace.autodiscovery import loadable_targets_from_loaded_module  # what `dagster dev` calls

        (target,) = loadable_targets_from_loaded_module(module)
        assert target.attribute == "defs" and target.target_definition is module.defs
        print("ok")
    """, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.startswith("ok")
