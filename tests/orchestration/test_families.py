"""The family shape: a toy family added in one place (this module) plus one catalog line.

The toy family ``item_counts`` has everything a real family has: a contract with column
descriptions and a declared range, a pure kernel, validated parameters (a ``toy`` section in
``recfeat.yaml``), one job returning a :class:`~pipelines.family.JobResult`, and an invariant
counter. Extending :data:`pipelines.catalog.FAMILIES` with it is the only other change; the
test then finds it in the settings, as a Dagster asset with its quality and invariant checks
(materialized in a real run), in ``recfeat tables``, in ``recfeat report`` and in the generated
table docs.

The second half breaks a real derived table in a real run: a watch-time label outside
[0, 1] fails the table's Great Expectations check, which blocks the model asset downstream.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated

import dagster as dg
import pyarrow as pa
import pytest
from pydantic import Field

from features.contracts import TableContract
from features.events import EVENTS
from pipelines import catalog
from pipelines.config import StrictModel
from pipelines.family import Family, JobContext, JobResult, Step

# --------------------------------------------------------------------------- the toy family

ITEM_COUNTS = TableContract(
    name="item_counts",
    schema=pa.schema([pa.field("item_id", pa.string(), nullable=False), pa.field("events", pa.int64(), nullable=False)]),
    key=("item_id",),
    description="Events per item (a toy family of the tests).",
    invariants=("events >= toy.min_events",),
    column_docs={"item_id": "the item", "events": "events of the item (count)"},
)


def count_items(events: pa.Table, min_events: int) -> pa.Table:
    """The pure kernel: events per item, items with at least ``min_events``."""
    counts = events.group_by("item_id").aggregate([("event_id", "count")]).rename_columns(["item_id", "events"])
    return counts.filter(pa.compute.greater_equal(counts.column("events"), min_events))


class ToySettings(StrictModel):
    min_events: Annotated[int, Field(ge=1)] = Field(1, description="items with fewer events are left out")


def run_item_counts(ctx: JobContext) -> JobResult:
    table = count_items(ctx.warehouse.read_arrow(EVENTS.name, columns=["event_id", "item_id"]), ctx.params.min_events)
    manifest = ctx.warehouse.write_arrow(ITEM_COUNTS, table)
    return JobResult({ITEM_COUNTS.name: manifest}, {ITEM_COUNTS.name: {"items": table.num_rows}})


def _invariants(ctx: JobContext) -> dict[str, int]:
    rows = ctx.warehouse.read_arrow(ITEM_COUNTS.name).to_pylist()
    return {"rows": len(rows), "items_below_min_events": sum(r["events"] < ctx.params.min_events for r in rows)}


TOY = Family(
    name="toy",
    description="a toy family: events per item",
    params=ToySettings,
    steps=(Step(name=ITEM_COUNTS.name, tables=(ITEM_COUNTS,), run=run_item_counts, deps=(EVENTS.name,),
                kinds=frozenset({"python", "delta"})),),
    invariants={ITEM_COUNTS.name: _invariants},
)


@pytest.fixture
def with_toy(monkeypatch):
    monkeypatch.setattr(catalog, "FAMILIES", catalog.FAMILIES + (TOY,))  # the one catalog line


CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
toy: {{min_events: 2}}
"""


def _events(n_items: int = 6) -> pa.Table:
    """``i`` + 1 events for item ``i``: item 0 has one event, below ``min_events``."""
    import datetime as dt

    rows = [(f"e{i}_{j}", f"u{j}", f"i{i}") for i in range(n_items) for j in range(i + 1)]
    ts = dt.datetime(2022, 4, 8, 12, tzinfo=dt.timezone.utc)
    cols = {"event_id": [r[0] for r in rows], "user_id": [r[1] for r in rows], "item_id": [r[2] for r in rows],
            "source": ["synthetic"] * len(rows), "event_ts": [ts] * len(rows), "event_date": [ts.date()] * len(rows),
            "source_file": ["log.csv"] * len(rows), "source_line": list(range(1, len(rows) + 1))}
    return pa.table({f.name: pa.array(cols.get(f.name, [None] * len(rows)), type=f.type) for f in EVENTS.schema})


def test_a_family_is_one_module_and_one_catalog_line(with_toy, spark, tmp_path, capsys):
    from orchestration.cli import main
    from orchestration.definitions import build_definitions
    from pipelines.config import ConfigError
    from pipelines.quality.docs import render
    from pipelines.settings import load_settings
    from pipelines.warehouse import Warehouse

    config = tmp_path / "recfeat.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    settings = load_settings(config)
    assert settings.toy.min_events == 2  # the family's settings section, validated at load
    bad = tmp_path / "bad.yaml"
    bad.write_text("toy: {min_event: 2}\n")
    with pytest.raises(ConfigError, match="toy.min_event: unknown key"):
        load_settings(bad)

    defs = build_definitions(settings, str(config))
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("item_counts"))
    assert dg.AssetKey("events") in node.parent_keys and node.owners and node.code_version
    columns = {c.name: c.description for c in node.metadata["dagster/column_schema"].columns}
    assert columns == {"item_id": "the item", "events": "events of the item (count)"}  # before any run
    specs = {s.name: s for c in defs.asset_checks for s in c.check_specs if s.asset_key == dg.AssetKey("item_counts")}
    assert set(specs) == {"item_counts_quality", "item_counts_invariants"} and all(s.blocking for s in specs.values())

    wh = Warehouse(settings.warehouse.root)
    wh.write_arrow(EVENTS, _events())
    result = dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        selection=dg.AssetSelection.assets("item_counts") | dg.AssetSelection.checks_for_assets("item_counts"),
        resources=defs.resources, instance=dg.DagsterInstance.get(),
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"item_counts_quality": True, "item_counts_invariants": True}
    assert sorted(wh.read_arrow("item_counts").column("item_id").to_pylist()) == ["i1", "i2", "i3", "i4", "i5"]
    assert result.asset_materializations_for_node("item_counts")[0].metadata["items"].value == 5

    capsys.readouterr()
    assert main(["--config", str(config), "tables"]) == 0
    assert any(line.startswith("item_counts ") for line in capsys.readouterr().out.splitlines())
    assert main(["--config", str(config), "report"]) == 0
    report = capsys.readouterr().out
    assert any(line.startswith("item_counts") and "passed" in line for line in report.splitlines()), report
    # The docs test sees the family: docs/tables.md must get a section for its table, whose
    # column block is generated from the contract.
    from pipelines.quality.docs import DOC_PATH, END

    text = DOC_PATH.read_text()
    with pytest.raises(ValueError, match="no section ## `item_counts`"):
        render(text)
    section = "\n## `item_counts`\n\nA toy table.\n\n<!-- columns: item_counts -->\n" + END + "\n"
    docs = render(text + section)
    assert "| `events` | int64 | events of the item (count) |" in docs


# --------------------------------------------------------------------------- a broken derived table

LABELS_CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-13}}
labels: {{fit_start: 2022-04-08, fit_end: 2022-04-11, duration_max_s: 120, d2q_bins: 5}}
training: {{runs_root: {root}/runs, split: {{train_days: 2, valid_days: 1, test_days: 1}}}}
"""


def _broken_labels(monkeypatch):
    """The labels family with its watch_time_labels step replaced by one that commits a pcr of 1.5."""
    from features.labels import WATCH_TIME_LABELS
    from pipelines import labels

    real = labels.FAMILY.steps[1]

    def broken(ctx: JobContext) -> JobResult:
        real.run(ctx)
        table = ctx.warehouse.read_arrow(WATCH_TIME_LABELS.name)
        i = table.schema.get_field_index("pcr")
        pcr = table.column(i).to_pylist()
        pcr[0] = 1.5
        manifest = ctx.warehouse.write_arrow(WATCH_TIME_LABELS, table.set_column(i, "pcr", pa.array(pcr, pa.float64())))
        return JobResult({WATCH_TIME_LABELS.name: manifest})

    family = dataclasses.replace(labels.FAMILY, steps=(labels.FAMILY.steps[0], dataclasses.replace(real, run=broken)))
    monkeypatch.setattr(catalog, "FAMILIES", tuple(family if f is labels.FAMILY else f for f in catalog.FAMILIES))


@pytest.mark.slow
def test_a_label_outside_0_1_fails_its_quality_check_and_blocks_the_model(monkeypatch, spark, tmp_path):
    import importlib.util
    from pathlib import Path

    from orchestration.definitions import build_definitions
    from pipelines.settings import load_settings
    from pipelines.warehouse import Warehouse

    path = Path(__file__).resolve().parents[1] / "pipelines" / "test_labels.py"
    spec = importlib.util.spec_from_file_location("_label_job_tests", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)

    _broken_labels(monkeypatch)
    config = tmp_path / "recfeat.yaml"
    config.write_text(LABELS_CONFIG.format(root=tmp_path))
    settings = load_settings(config)
    helpers.write_events(Warehouse(settings.warehouse.root), helpers.random_events(n=800))
    defs = build_definitions(settings, str(config))
    instance = dg.DagsterInstance.get()
    run = dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        selection=dg.AssetSelection.assets("duration_stats", "watch_time_labels", "watch_time_fm")
        | dg.AssetSelection.checks_for_assets("duration_stats", "watch_time_labels"),
        resources=defs.resources, instance=instance, raise_on_error=False,
    )
    assert not run.success
    checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
    failed = checks["watch_time_labels_quality"]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert "pcr" in failed.description and "1 unexpected" in failed.description
    assert checks["duration_stats_quality"].passed
    done = {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}
    assert done == {"duration_stats", "watch_time_labels"}  # the model never trained
    messages = [r.user_message for r in instance.all_logs(run.run_id)]
    assert any(m.startswith("Dependencies for step watch_time_fm failed") for m in messages), messages
