"""Dagster: the dialogues family's assets (from the factory, via the catalog) materialize in a
real run with their blocking quality and invariant checks passing."""
from __future__ import annotations

import dagster as dg

from pipelines.settings import load_settings

SMALL = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources_root: {root}/sources
dialogues: {{generator: {{dialogues: 40}}, partitions: 2}}
"""
TABLES = {"dialogue_turns", "rejected_dialogue_turns", "dialogue_ingest_runs", "turn_scores", "preference_pairs"}


def test_dialogues_assets_and_checks_pass(spark, tmp_path):
    from orchestration.definitions import build_definitions
    from pipelines import catalog, dialogues
    from pipelines.warehouse import Warehouse

    assert dialogues.FAMILY in catalog.FAMILIES
    config = tmp_path / "recfeat.yaml"
    config.write_text(SMALL.format(root=tmp_path))
    settings = load_settings(config)
    assert settings.dialogues.generator.dialogues == 40
    defs = build_definitions(settings, str(config))
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("dialogue_turns") in graph.get(dg.AssetKey("turn_scores")).parent_keys
    selection = dg.AssetSelection.assets(*TABLES)
    result = dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        selection=selection | dg.AssetSelection.checks_for_assets(*TABLES),
        resources=defs.resources, instance=dg.DagsterInstance.get(),
    )
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == TABLES
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    with_counters = {"dialogue_turns", "dialogue_ingest_runs", "turn_scores", "preference_pairs"}
    assert set(checks) == {f"{t}_quality" for t in TABLES} | {f"{t}_invariants" for t in with_counters}
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items() if not c.passed}
    wh = Warehouse(settings.warehouse.root)
    assert wh.read_arrow("preference_pairs").num_rows > 0
    meta = result.asset_materializations_for_node("dialogue_ingest")
    assert any("planted_unsatisfying_turns" in m.metadata for m in meta)
