"""The synthetic family: the embedded generator's KuaiRand-format files and its ground truth
``synthetic_truth`` (docs/synthetic.md). In the graph only when the active source is synthetic."""
from __future__ import annotations

from features.events import EVENTS
from features.synthetic_truth import SYNTHETIC_TRUTH
from pipelines.core.ingest import SYNTHETIC_SOURCE
from pipelines.family import Family, JobContext, JobResult, Step


def run_generator(ctx: JobContext) -> JobResult:
    """Write the synthetic source's files (an asset without a table)."""
    from pipelines.synthetic import generate

    s = ctx.settings
    out = generate(s.source.path, s.synthetic)
    stats = {"events": out.events, "log_files": len(out.log_files), "path": str(out.root), "seed": s.synthetic.seed}
    return JobResult({}, {SYNTHETIC_SOURCE: stats})


def run_truth(ctx: JobContext) -> JobResult:
    from pipelines.synthetic import truth_path
    from pipelines.synthetic_truth import build_synthetic_truth

    s = ctx.settings
    manifest = build_synthetic_truth(ctx.spark, ctx.warehouse, str(truth_path(s.source.path)), s.active_source)
    return JobResult({SYNTHETIC_TRUTH.name: manifest})


FAMILY = Family(
    name="synthetic",
    description="the embedded synthetic source and the truth it planted (docs/synthetic.md)",
    group="sources",
    steps=(
        Step(
            name=SYNTHETIC_SOURCE,
            tables=(),
            run=run_generator,
            kinds=frozenset({"python"}),
            description="The embedded synthetic source: KuaiRand-format logs, user/video files and ground truth (docs/synthetic.md).",
        ),
        Step(
            name=SYNTHETIC_TRUTH.name,
            tables=(SYNTHETIC_TRUTH,),
            run=run_truth,
            deps=(SYNTHETIC_SOURCE, EVENTS.name),
            description=SYNTHETIC_TRUTH.description,
            group="core",  # a table beside events; the generator is the source
        ),
    ),
    enabled=lambda settings: settings.source.kind == "synthetic",
    docs="docs/synthetic.md",
    code_modules=("pipelines.core.synthetic", "pipelines.synthetic", "pipelines.synthetic_truth", "features.synthetic_truth"),
    version_settings=lambda settings: {"synthetic": settings.synthetic.model_dump(mode="json"), "path": settings.source.path},
)
