"""The dimension family: ``users`` and ``items`` from the source's user and item files (docs/sources.md)."""
from __future__ import annotations

from features.contracts import TableContract
from features.dimensions import ITEMS, USERS
from pipelines.core.ingest import SYNTHETIC_SOURCE
from pipelines.family import Family, JobContext, JobResult, Step


def _dimension_step(contract: TableContract) -> Step:
    def run(ctx: JobContext) -> JobResult:
        from pipelines.ingest import ingest_dimension
        from pipelines.sources import adapter_for

        s = ctx.settings
        manifest = ingest_dimension(ctx.warehouse, adapter_for(s.active_source, s.source), contract.name,
                                    follow_symlinks=s.ingest.follow_symlinks)
        if manifest is None:
            return JobResult({}, {contract.name: {"note": "the source has no such file"}})
        return JobResult({contract.name: manifest})

    return Step(name=contract.name, tables=(contract,), run=run, deps=(SYNTHETIC_SOURCE,),
                kinds=frozenset({"delta"}), description=contract.description)


FAMILY = Family(
    name="dimensions",
    description="users and items with their source attributes (docs/sources.md)",
    group="core",
    steps=(_dimension_step(USERS), _dimension_step(ITEMS)),
    docs="docs/sources.md",
    code_modules=("pipelines.core.dimensions", "pipelines.ingest", "pipelines.sources", "features.dimensions"),
    version_settings=lambda settings: settings.source.model_dump(mode="json"),
)
