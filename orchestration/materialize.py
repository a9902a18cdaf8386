"""``recfeat materialize`` and ``recfeat demo``: one Dagster run for a selection, in process.

The selection (default: every asset) runs as **one** run of an asset job, checks included,
with the in-process executor and against ``$DAGSTER_HOME``'s instance, so its pools (one
writer per table) hold against ``dagster dev``'s runs too.

Partitions: the daily-partitioned assets (the ``ingest`` multi-asset, and ``sequences`` when
it is built incrementally) share one ``DailyPartitionsDefinition`` and a single-run backfill
policy, and the unpartitioned assets have none. Dagster 1.13 runs such a mixed selection in
one run when the run is tagged with a partition range
(``dagster/asset_partition_range_start``/``_end``): each partitioned step sees the whole range
(``context.partition_key_range``) and records one materialization per day; each unpartitioned
step runs once, unpartitioned. Only partitions definitions that differ from each other would
force more runs (a job has one partitions definition), and the graph has none.

Spark warm start: when the selection holds a step that needs Spark (a catalog step whose kinds
include ``spark``: :func:`selection_needs_spark`), :func:`warm_start_spark` starts the run's
session in a background thread as the command starts (``pipelines.spark.start_in_background``),
so the JVM starts while the Dagster definitions are built and the Beam and Python steps run;
the first Spark step's ``SparkResource`` then waits for it and gets that session (one session,
never two). A failed start fails that step with the error it would have raised itself. A
selection without Spark steps starts nothing here (its table checks still start Spark on
first use, as before). The session is stopped when the run ends, whoever used it.

GX preload: a run whose selection holds checked tables starts importing Great Expectations in a
background thread as its steps start (``pipelines.quality.preload``), so the first check step
does not pay GX's import (about 2.8 s) after the steps before it. Likewise a run that trains
models imports MLflow and opens its store in the background (``trainers.tracking.preload``).

Startup: this module imports Dagster only when a run is prepared, so the command starts the
JVM before it imports Dagster, and a selection of tables only is built without the model assets
(:func:`selection_definitions`: neither torch nor the trainers are imported).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from orchestration.cli_common import CliError

if TYPE_CHECKING:
    import dagster as dg

#: The name of the job a ``recfeat materialize`` run executes.
MATERIALIZE_JOB = "recfeat_materialize"


class RunInterrupted(CliError):
    """The run ended on Ctrl-C or SIGTERM (reported like any :class:`CliError`)."""


def resolve_selection(defs: dg.Definitions, select: str | None, settings=None) -> list[str]:
    """The selected asset names in dependency order, with every asset of a selected multi-asset
    step, in the order the step declares them (``events`` brings ``rejected_events``: one
    ingestion step writes both). ``settings`` only improve the error for a table that is a
    view under them (derived on read, no asset)."""
    import dagster as dg

    graph = defs.resolve_asset_graph()
    keys = [k.to_user_string() for k in graph.toposorted_asset_keys]
    wanted = set(keys)
    if select:
        asked = [s.strip() for s in select.split(",") if s.strip()]
        unknown = [w for w in asked if w not in keys]
        if unknown:
            hints = []
            if settings is not None:
                from pipelines.catalog import view

                for name in unknown:
                    found = view(name, settings)
                    if found is not None:
                        hints.append(f"{name!r} is a view of {found[1].source!r} under these settings (derived on read, "
                                     f"no asset of its own): select {found[1].source!r}, or configure the family to "
                                     "store it (docs/architecture.md, views)")
            raise CliError(f"unknown asset(s) {unknown}; known: {keys}" + ("; " + "; ".join(hints) if hints else ""))
        wanted = set(asked)
    order: list[str] = []
    for key in keys:
        if key not in wanted or key in order:
            continue
        node = graph.get(dg.AssetKey.from_user_string(key))
        if node.assets_def.can_subset:
            order.append(key)
        else:
            order += [s.key.to_user_string() for s in node.assets_def.specs if s.key.to_user_string() not in order]
    return order


def selection_needs_spark(settings, select: str | None) -> bool:
    """Whether the selection (``None``: every asset) holds a catalog step that needs Spark.

    Read from the catalog, without building the Dagster definitions, so that it can be asked
    as the command starts: a step needs Spark when its kinds include ``spark``. A name that is
    no catalog step or table (a model, a misspelling) needs none here.
    """
    from pipelines.catalog import families

    asked = None if select is None else {s.strip() for s in select.split(",") if s.strip()}
    for family in families():
        if not family.enabled(settings):
            continue
        for step in family.steps:
            if "spark" not in step.kinds:
                continue
            if asked is None or step.name in asked or asked & set(step.table_names):
                return True
    return False


def warm_start_spark(settings, select: str | None):
    """Start the run's Spark session in the background when the selection needs Spark
    (:func:`selection_needs_spark`); return the start (``pipelines.spark.WarmStart``) or ``None``.
    Asked again while a start is under way, it returns that start at once: the run is prepared
    while the JVM starts, and its steps that need no Spark run meanwhile."""
    if not selection_needs_spark(settings, select):
        return None
    from pipelines.spark import start_in_background, start_under_way

    return start_under_way() or start_in_background(settings.spark)


def selection_definitions(settings, config_file: str | None, select: str | None, overrides: dict | None = None):
    """The definitions a run of ``select`` is built from: the tables' only
    (``build_definitions(..., include_models=False)``) when every selected name is a table asset, else
    every asset. No table asset depends on a model, so the tables' steps, checks and order are
    the same either way; the model assets import torch and every trainer (about 1.5 s on two
    cores). A model, a misspelling or no selection gets every asset (the error for an unknown
    name lists them all)."""
    from orchestration.definitions import build_definitions

    asked = None if select is None else {s.strip() for s in select.split(",") if s.strip()}
    if asked:
        tables = build_definitions(settings, config_file, overrides, include_models=False)
        if asked <= {k.to_user_string() for k in tables.resolve_asset_graph().get_all_asset_keys()}:
            return tables
    return build_definitions(settings, config_file, overrides)


def execute_run(job_def: dg.JobDefinition, instance: dg.DagsterInstance, tags: dict[str, str], run_config: dict):
    """Run ``job_def`` in this process with **its own executor** and return the result.

    ``JobDefinition.execute_in_process`` is the same call except that it swaps the job's
    executor for Dagster's one-step-at-a-time in-process executor; this keeps the job's
    (:func:`orchestration.executor.threaded_executor`). Outputs are not captured: every step
    here returns only materializations and check results, which the result's events hold.
    """
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.execute_in_process import core_execute_in_process

    return core_execute_in_process(
        run_config=run_config,
        job=InMemoryJob(job_def=job_def),
        instance=instance,
        output_capturing_enabled=False,
        raise_on_error=False,
        run_tags={**job_def.run_tags, **tags},
        asset_selection=frozenset(),
    )


def step_assets(defs: dg.Definitions) -> dict[str, list[str]]:
    """Step key -> the assets (or checks) it materializes (or evaluates)."""
    import dagster as dg

    out: dict[str, list[str]] = {}
    for a in list(defs.assets or []) + list(defs.asset_checks or []):
        if not isinstance(a, dg.AssetsDefinition) or a.node_def is None:
            continue
        names = sorted(k.to_user_string() for k in a.keys) or sorted(c.name for c in a.check_keys)
        out[a.node_def.name] = names
    return out


def materialize_assets(
    settings,
    config_file: str | None,
    select: str | None,
    start: str | None = None,
    end: str | None = None,
    log: Callable[[str], None] = print,
    log_level: str = "WARNING",
    overrides: dict | None = None,
) -> list[str]:
    """Materialize the selected assets, and run their checks, in one in-process Dagster run.

    Daily-partitioned assets cover the range ``start..end`` (inclusive partition keys;
    default: every configured partition). ``log`` gets one line per step start and end (and
    the lines steps log). Returns the selected asset names in dependency order; a failed step
    or blocking check raises :class:`CliError` with one line, a failed warning check is logged
    as ``warning: <check>: <description>`` and the run goes on.
    """
    warm = warm_start_spark(settings, select)  # the one the command started, if it did
    try:
        return _materialize(settings, config_file, select, start, end, log, log_level, overrides)
    except (KeyboardInterrupt, RunInterrupted):
        if warm is not None and not warm.done:
            # Ctrl-C while the JVM starts: not waited for (the JVM exits with this process, when
            # its stdin closes), so that the command ends at once, as it does before the run.
            warm = None
        raise
    finally:
        if warm is not None:
            warm.stop_if_created()


def _materialize(settings, config_file, select, start, end, log, log_level, overrides) -> list[str]:
    import dagster as dg

    from orchestration.automation import SOURCE_TAG, partition_range_tags
    from orchestration.executor import INTERRUPTED, concurrent_steps, threaded_executor
    from orchestration.instance import cli_run_tags, pool_holders, release_dead_cli_runs
    from orchestration.progress import PROGRESS_LOGGER, RunProgress, progress_logger

    defs = selection_definitions(settings, config_file, select, overrides)
    order = resolve_selection(defs, select, settings)
    graph = defs.resolve_asset_graph()
    instance = dg.DagsterInstance.get()
    for run_id in release_dead_cli_runs(instance):
        log(f"note: run {run_id} was left running by a recfeat process that is gone: marked failed, its pool slots freed")

    keys = [dg.AssetKey.from_user_string(k) for k in order]
    nodes = [graph.get(k) for k in keys]
    partitioned = [n.partitions_def for n in nodes if n.partitions_def is not None]
    tags = cli_run_tags()
    label = ""
    if partitioned:
        ranged = partition_range_tags(partitioned[0], start, end)
        tags.update(ranged)
        label = f" [{ranged['dagster/asset_partition_range_start']} .. {ranged['dagster/asset_partition_range_end']}]"
    if "events" in order:  # the ingestion run: the sensor waits for it
        tags[SOURCE_TAG] = settings.active_source
    for pool in dict.fromkeys(getattr(n.assets_def.node_def, "pool", None) for n in nodes):
        holders = pool_holders(instance, pool) if pool else []
        if holders:
            log(f"waiting for pool {pool} (one writer per table): run {holders[0]} holds it")

    progress = RunProgress(log=log, step_assets=step_assets(defs))
    job = dg.define_asset_job(
        MATERIALIZE_JOB,
        selection=dg.AssetSelection.assets(*keys),
        executor_def=threaded_executor(concurrent_steps(settings)),
        description="A `recfeat materialize` selection: one run, checks included.",
    )
    run_defs = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        resources=defs.resources,
        jobs=[job],
        loggers={"console": dg.colored_console_logger, PROGRESS_LOGGER: progress_logger(progress)},
    )
    if set(keys) & {ck.asset_key for c in defs.asset_checks or [] for ck in c.check_keys}:
        # The run checks tables: GX is imported in the background while its first steps run.
        from pipelines.quality.preload import preload_gx

        preload_gx()
    from orchestration.models import MODELS_GROUP

    if any(n.group_name == MODELS_GROUP for n in nodes):
        # The run trains models: MLflow is imported and its store opened in the background.
        from trainers.tracking import preload

        preload(settings.training.tracking.model_dump(), settings.training.runs_root)
    t0 = time.perf_counter()
    log(f"run: {len(order)} asset(s){label}, up to {concurrent_steps(settings)} step(s) at a time")
    result = execute_run(run_defs.resolve_job_def(MATERIALIZE_JOB), instance, tags, run_config={
        "loggers": {"console": {"config": {"log_level": log_level}}, PROGRESS_LOGGER: {}},
    })
    evaluations = result.get_asset_check_evaluations() or progress.check_evaluations
    blocking = [e for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    if blocking:
        e = blocking[0]
        raise CliError(f"{e.asset_key.to_user_string()}: blocking check failed: {e.check_name}: {e.description}")
    if not result.success:
        if progress.failed_step is None and any(
                e.event_type_value == "ENGINE_EVENT" and (e.message or "").startswith(INTERRUPTED) for e in result.all_events):
            raise RunInterrupted("interrupted: the steps in flight were abandoned; what they had not committed is "
                                 "not committed (each table keeps its last good version)")
        failed = progress.failed_step
        names = progress.step_assets.get(failed or "", [failed or "the run"])
        first = next((n for n in order if n in names), names[0])
        ranged = label if failed and any(graph.get(dg.AssetKey.from_user_string(n)).partitions_def is not None
                                         for n in names if n in order) else ""
        raise CliError(f"materializing {first}{ranged} failed: {progress.failure or 'see the Dagster run log'}")
    for e in evaluations:
        if not e.passed and e.severity == dg.AssetCheckSeverity.WARN:
            log(f"warning: {e.check_name}: {e.description or 'failed (non-blocking)'}")
    log(f"materialized {len(order)} asset(s){label} in one run ({result.run_id}) in {time.perf_counter() - t0:.1f} s")
    return order
