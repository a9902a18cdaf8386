"""Dagster: the labels extension loads into the code location; both assets materialize with
their blocking checks passing, figures in the metadata; a broken stats table fails its check."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from pipelines.settings import load_settings

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-13}}
labels: {{fit_start: 2022-04-08, fit_end: 2022-04-11, duration_max_s: 120, d2q_bins: 5}}
"""


def _helpers():
    """The events writer of tests/pipelines/test_labels.py (tests are not a package)."""
    path = Path(__file__).resolve().parents[1] / "pipelines" / "test_labels.py"
    spec = importlib.util.spec_from_file_location("_label_job_tests", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "recfeat.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    return path


def test_extension_is_in_the_code_location(config):
    from orchestration.definitions import build_definitions

    defs = build_definitions(load_settings(config), str(config))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"duration_stats", "watch_time_labels"} <= keys
    assert dg.AssetKey("duration_stats") in graph.get(dg.AssetKey("watch_time_labels")).parent_keys
    checks = {c.name: c for c in graph.asset_check_keys}
    assert {"duration_stats_invariants", "watch_time_labels_invariants"} <= set(checks)
    assets, checks_defs = _labels(load_settings(config))
    assert all(c.blocking for spec_set in checks_defs for c in spec_set.check_specs)


def _labels(settings):
    """The labels family's assets and checks, from the same factory as the code location."""
    from orchestration.factory import build_family_definitions
    from pipelines import labels

    return build_family_definitions(settings, [labels.FAMILY])


def _materialize(settings, config, raise_on_error=True):
    from orchestration.resources import build_resources

    assets, checks = _labels(settings)
    return dg.materialize(
        assets + checks,
        resources=build_resources(settings, str(config)),
        instance=dg.DagsterInstance.get(),
        raise_on_error=raise_on_error,
    )


@pytest.mark.slow
def test_assets_materialize_with_checks_and_figures_and_a_broken_table_fails(spark, config):
    from pipelines.warehouse import Warehouse

    h = _helpers()
    settings = load_settings(config)
    wh = Warehouse(settings.warehouse.root)
    h.write_events(wh, h.random_events(n=800))
    result = _materialize(settings, config)
    assert result.success
    done = {m.event_specific_data.materialization.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert done == {"duration_stats", "watch_time_labels"}
    checks = {e.event_specific_data.check_name: e.event_specific_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert {k: v.passed for k, v in checks.items()} == {
        f"{t}_{c}": True for t in ("duration_stats", "watch_time_labels") for c in ("quality", "invariants")
    }
    meta = result.asset_materializations_for_node("duration_stats")[0].metadata
    assert meta["figure_gmm_fits"].value.startswith("![gmm_fits.png](data:image/png;base64,")
    assert Path(meta["figure_gmm_fits_path"].value).is_file()
    lmeta = result.asset_materializations_for_node("watch_time_labels")[0].metadata
    assert lmeta["label_rows"].value == wh.read_arrow("watch_time_labels").num_rows
    assert "figure_label_distributions" in lmeta and "rows_wtg_gain_zero_fallback" in lmeta

    # A stats table that breaks an invariant (a NaN smoothed value) fails the check.
    from features.labels import DURATION_STATS

    stats = wh.read_arrow("duration_stats")
    i = stats.schema.get_field_index("noise_wt_smoothed_s")
    col = stats.column(i).to_pylist()
    col[0] = float("nan")
    wh.write_arrow(DURATION_STATS, stats.set_column(i, "noise_wt_smoothed_s", pa.array(col)))
    from orchestration.resources import build_resources

    assets, checks_defs = _labels(settings)
    # Run only the check of duration_stats together with watch_time_labels.
    run = dg.materialize(
        assets + checks_defs,
        selection=dg.AssetSelection.assets("watch_time_labels") | dg.AssetSelection.checks_for_assets("duration_stats"),
        resources=build_resources(settings, str(config)),
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )
    evals = {e.event_specific_data.check_name: e.event_specific_data.passed
             for e in run.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert evals.get("duration_stats_invariants") is False
