"""The ingestion family: one run validates, normalises and de-duplicates a source into
``events``, routes every bad record to ``rejected_events`` with its reason, and appends the
run's counts to ``ingest_runs`` (docs/ingestion.md)."""
from __future__ import annotations

from features.events import EVENTS
from features.ingest_runs import INGEST_RUNS, balance_holds
from features.rejections import REJECTED_EVENTS
from pipelines.family import Family, JobContext, JobResult, Step

SYNTHETIC_SOURCE = "synthetic_source"


def source_settings(settings) -> dict:
    """What ingestion's output depends on: the active source, its rules and the ingestion engine."""
    return {"source": settings.source.model_dump(mode="json"), "rules": settings.rules.model_dump(mode="json"),
            "ingest": settings.ingest.model_dump(mode="json", include={"engine", "repeated_lines"})}


def run_ingest(ctx: JobContext) -> JobResult:
    """Ingest the active source for the context's window (every date present without one)."""
    from pipelines.ingest import ingest_with_settings
    from pipelines.sources import adapter_for

    s, wh = ctx.settings, ctx.warehouse
    result = ingest_with_settings(ctx.spark, wh, adapter_for(s.active_source, s.source), s, ctx.window, ctx.run_id)
    counts = {
        "records_in": result.records_in,
        "new_events": result.new_events,
        "already_present": result.already_present,
        "outside_window": result.outside_window,
        "rejected": result.rejected,
        "duplicates": result.duplicates,
        "source_files": len(result.files),
    }
    in_run = sum(result.manifest.partitions[p].row_count for p in result.partitions if p in result.manifest.partitions)
    manifests = {EVENTS.name: result.manifest}
    if result.rejected_manifest is not None:
        manifests[REJECTED_EVENTS.name] = result.rejected_manifest
    if wh.exists(INGEST_RUNS.name):
        manifests[INGEST_RUNS.name] = wh.manifest(INGEST_RUNS.name)
    return JobResult(
        manifests,
        stats={
            EVENTS.name: {**counts, "table_rows_total": result.manifest.row_count, "dagster/row_count": in_run},
            REJECTED_EVENTS.name: {**counts, "rejected_by_reason": result.by_reason},
            INGEST_RUNS.name: {"run_id": result.run_id},
        },
        partitions={EVENTS.name: result.partitions},
        summary=result.summary(),
    )


def _ingest_runs_invariants(ctx: JobContext) -> dict[str, int]:
    """Every run's counts account for every record it read."""
    rows = ctx.warehouse.read_arrow(INGEST_RUNS.name).to_pylist()
    return {"rows": len(rows), "runs_out_of_balance": sum(not balance_holds(r) for r in rows)}


FAMILY = Family(
    name="ingest",
    description="validated, normalised, de-duplicated events with their dead letters (docs/ingestion.md)",
    group="core",
    steps=(
        Step(
            name="ingest",
            tables=(EVENTS, REJECTED_EVENTS, INGEST_RUNS),
            run=run_ingest,
            deps=(SYNTHETIC_SOURCE,),
            kinds=frozenset({"beam", "spark", "delta"}),
            description="The ingestion run (docs/ingestion.md): events, their dead letters and the run's counts, one commit each.",
        ),
    ),
    invariants={INGEST_RUNS.name: _ingest_runs_invariants},
    partitioned=lambda settings: True,
    docs="docs/ingestion.md",
    code_modules=("pipelines.core.ingest", "pipelines.ingest", "pipelines.beam_ingest", "pipelines.spark_stage",
                  "pipelines.sources", "features.events", "features.rejections", "features.ingest_runs"),
    version_settings=source_settings,
)
