"""Dagster: the look-alike assets materialize with their blocking checks in a real run."""
from __future__ import annotations

import dagster as dg
import pytest

from pipelines.settings import load_settings

SMALL = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
lookalike: {{cutoff_ts: "2022-04-13T00:00:00Z", k: 5, candidates: {candidates}, lsh: {{window: 4, bands: 4}}, als_rank: 4, als_iterations: 3}}
recall: {{min_co_users: 1}}  # cutoff_ts and min_rating: the lookalike ones (the default)
"""


@pytest.mark.parametrize("candidates", ["hnsw", "simhash"])
def test_lookalike_assets_and_checks_pass(spark, tmp_path, candidates):
    from orchestration.factory import build_family_definitions
    from orchestration.resources import build_resources
    from pipelines import lookalike, recall
    from pipelines.warehouse import Warehouse
    from tests.pipelines.test_lookalike import events_table

    config = tmp_path / "recfeat.yaml"
    config.write_text(SMALL.format(root=tmp_path, candidates=candidates))
    settings = load_settings(config)
    assert settings.lookalike.candidates == candidates
    Warehouse(settings.warehouse.root).write_arrow(__import__("features.events", fromlist=["EVENTS"]).EVENTS, events_table(500, 3, 0, 200))
    assets, checks_defs = build_family_definitions(settings, [lookalike.FAMILY, recall.FAMILY])
    result = dg.materialize(assets + checks_defs, resources=build_resources(settings, str(config)))
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == {"user_vectors", "lookalike_users", "item_neighbors", "recall_items"}
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    recall = checks.pop("lookalike_users_recall")  # non-blocking: warns, never stops the run
    assert set(checks) == {f"{t}_{c}" for t in done for c in ("quality", "invariants")}
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items() if not c.passed}
    import datetime as dt

    wh = Warehouse(settings.warehouse.root)
    cutoff = dt.datetime(2022, 4, 13, tzinfo=dt.timezone.utc)
    for table in ("item_neighbors", "recall_items"):  # the recall cutoff defaults to the look-alike one
        assert set(wh.read_arrow(table, columns=["cutoff_ts"]).column(0).to_pylist()) == {cutoff}, table
    estimate = recall.metadata["recall_estimate"].value
    assert 0 < estimate <= 1 and recall.passed == (estimate >= 0.95)
    assert recall.severity == dg.AssetCheckSeverity.WARN
    assert recall.metadata["sample"].value.startswith("held-out")
    assert recall.metadata["candidates"].value == candidates
    mat = result.asset_materializations_for_node("lookalike_users")[0]
    assert mat.metadata["cutoff_ts"].value == "2022-04-13T00:00:00+00:00"
    assert mat.metadata["candidates"].value == candidates
    prefix = "hnsw" if candidates == "hnsw" else "lsh"
    assert mat.metadata["pairs_evaluated"].value == mat.metadata[f"{prefix}_pairs_evaluated"].value > 0
    assert mat.metadata[f"{prefix}_recall_estimate"].value == estimate  # the held-out figure, as the check reads it
    assert mat.metadata["recall_estimate"].value == estimate
    from pipelines.lookalike import lsh_recall_summary

    line = lsh_recall_summary(Warehouse(settings.warehouse.root), settings.lookalike)  # the demo's last screen
    assert line.startswith(f"look-alike users: held-out recall@5 {estimate:.3f} on ")
    assert ("HNSW candidates (m 32, ef_construction 40, ef_search 128 chosen by hnsw.auto_ef_search (128:" in line
            if candidates == "hnsw" else "lsh.auto_bands" in line)


def test_cli_reports_a_failed_recall_warning_and_goes_on(spark, tmp_path):
    """A failed non-blocking check is printed as a warning; the run and later assets go on."""
    from orchestration.cli import materialize_assets
    from pipelines.warehouse import Warehouse
    from tests.pipelines.test_lookalike import events_table

    config = tmp_path / "recfeat.yaml"
    # SimHash (pinned: the case is about its bands) with one band and the narrowest window
    # allowed for k: the candidates miss most true neighbours.
    config.write_text(SMALL.format(root=tmp_path, candidates="simhash").replace(
        "lsh: {window: 4, bands: 4}", "lsh: {window: 3, bands: 1, auto_bands: false}"))
    settings = load_settings(config)
    Warehouse(settings.warehouse.root).write_arrow(__import__("features.events", fromlist=["EVENTS"]).EVENTS, events_table(500, 3, 0, 200))
    lines: list[str] = []
    done = materialize_assets(settings, str(config), "user_vectors,lookalike_users", log=lines.append)
    assert done == ["user_vectors", "lookalike_users"]
    estimate = float(Warehouse(settings.warehouse.root).manifest("lookalike_users").producer["recall_estimate"])
    assert estimate < 0.95
    warnings = [line for line in lines if line.startswith("warning: lookalike_users_recall")]
    assert len(warnings) == 1 and f"held-out recall@5 {estimate:.3f}" in warnings[0]


def test_an_input_of_another_cutoff_stops_the_asset_with_one_line(spark, tmp_path):
    """After a cutoff change, materializing lookalike_users alone on the old user_vectors fails
    with one line naming the table, its cutoff and the configured one; nothing is committed."""
    import datetime as dt

    import pytest

    from features.events import EVENTS
    from features.lookalike import USER_VECTORS
    from orchestration.cli import CliError, materialize_assets
    from pipelines.warehouse import Warehouse
    from tests.pipelines.test_lookalike import events_table, vectors_table

    config = tmp_path / "recfeat.yaml"
    config.write_text(SMALL.format(root=tmp_path, candidates="hnsw"))
    settings = load_settings(config)
    wh = Warehouse(settings.warehouse.root)
    wh.write_arrow(EVENTS, events_table(500, 3, 0, 200))
    old = dt.datetime(2022, 4, 11, tzinfo=dt.timezone.utc)
    wh.write_arrow(USER_VECTORS, vectors_table(20, old), producer={"cutoff_ts": old.isoformat()})
    with pytest.raises(CliError) as err:
        materialize_assets(settings, str(config), "lookalike_users", log=lambda line: None)
    message = str(err.value)
    assert "\n" not in message
    assert "user_vectors was built with cutoff_ts 2022-04-11T00:00:00+00:00" in message
    assert "configured cutoff_ts is 2022-04-13T00:00:00+00:00" in message
    assert not wh.exists("lookalike_users")
