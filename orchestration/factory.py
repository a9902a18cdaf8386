"""One factory for every family's Dagster definitions: assets from steps, checks from contracts.

For each family of :data:`pipelines.catalog.FAMILIES` enabled for the settings:

* each :class:`~pipelines.family.Step` becomes one asset (a multi-asset when it builds several
  tables in one pass), in the family's group, with the step's kinds, the family's owners, a code
  version (a digest of the family's pipeline modules and of its settings section), the column
  schema of every table from its contract (with descriptions, known before any run), one pool
  per table writer, and daily partitions when the family is partitioned;
* a table that the settings make a view (``family.views``: derived on read) gets neither an
  asset nor checks; the family checks it through its source table;
* every stored table gets one multi-asset check computed in one step: ``<table>_quality`` (blocking,
  ERROR: the contract and the Great Expectations suite built from it), ``<table>_invariants``
  (blocking, ERROR: the family's invariant counter) when the family has one, and a non-blocking
  WARN check for the suite's warning-level expectations when it has any;
* the family's extra checks (for example the look-alike recall estimate).

Asset and check bodies only wire: they build a :class:`~pipelines.family.JobContext`, call the
step or the quality entry point, and turn the result into metadata.
"""

import dataclasses
import datetime as dt
import hashlib
import importlib.util
import inspect
import json
import os
import pathlib

import dagster as dg

from features.contracts import TableContract
from orchestration.columns import column_schema
from orchestration.commits import commit_conflicts, materialize_result, table_pool
from orchestration.executor import lane_tags
from orchestration.metadata import figure_metadata, table_metadata
from orchestration.resources import SettingsResource, SparkResource, WarehouseResource
from features.timeutil import DateWindow, as_utc_or_none
from pipelines.family import Family, Step
from pipelines.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """The project's daily (UTC) partitions (``partitions.start_date`` .. ``end_date``)."""
    p = settings.partitions
    return dg.DailyPartitionsDefinition(
        start_date=p.start_date.isoformat(),
        end_date=p.end_date.isoformat() if p.end_date else None,
        timezone="UTC",
    )


def enabled_families(settings: Settings, families=None) -> list[Family]:
    from pipelines import catalog

    return [f for f in (families if families is not None else catalog.families()) if f.enabled(settings)]


def _source_files(module: str) -> list[str]:
    """The ``.py`` files of a module, or of every module of a package (sorted)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return []
    if spec.submodule_search_locations:
        return sorted(str(p) for d in spec.submodule_search_locations for p in pathlib.Path(d).rglob("*.py"))
    return [spec.origin]


def code_version(family: Family, step: Step, settings: Settings) -> str:
    """A digest of the code and the settings that build the step's tables.

    The code: the family's ``code_modules`` (default ``pipelines.<family>`` and
    ``features.<family>`` where they exist) and the step's own module; the settings:
    ``family.versioned_settings`` (default its section). Either changing marks the tables stale.
    """
    modules = family.code_modules or tuple(m for m in (f"pipelines.{family.name}", f"features.{family.name}")
                                           if importlib.util.find_spec(m) is not None)
    files = sorted({f for m in modules for f in _source_files(m)} | {inspect.getsourcefile(step.run) or ""} - {""})
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            h.update(os.path.basename(path).encode() + b"\0" + fh.read())
    h.update(json.dumps(family.versioned_settings(settings), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _window(context) -> DateWindow | None:
    """The UTC days of a partitioned step's run (``None`` for an unpartitioned step)."""
    if context.assets_def.partitions_def is None or not (context.has_partition_key_range or context.has_partition_key):
        return None
    tw = context.partition_time_window
    return DateWindow(tw.start.date(), tw.end.date())


def _metadata_value(key: str, value):
    if isinstance(value, dict):
        return dg.MetadataValue.json(value)
    if key == "path" and isinstance(value, str):
        return dg.MetadataValue.path(value)
    return value


def _spec(family: Family, step: Step, table: TableContract, deps: list[str], settings: Settings, partitions) -> dg.AssetSpec:
    return dg.AssetSpec(
        table.name,
        group_name=step.group or family.group,
        deps=deps,
        description=table.description,
        kinds=set(step.kinds),
        owners=list(family.owners),
        code_version=code_version(family, step, settings),
        partitions_def=partitions,
        metadata={
            "dagster/column_schema": column_schema(table),
            "family": family.name,
            "key": ", ".join(table.key),
            "partition_column": table.partition_column or "(none)",
            "docs": family.docs or "docs/tables.md",
        },
        tags={"recfeat/family": family.name},
    )


def step_asset(family: Family, step: Step, settings: Settings, known: set[str]) -> dg.AssetsDefinition:
    """The asset (or multi-asset) of one step."""
    partitions = daily_partitions(settings) if family.partitioned(settings) else None
    deps = [d for d in step.deps if d in known]
    stored = {t.name for t in family.stored_tables(settings)}
    tables = [t for t in step.tables if t.name in stored]  # a view (family.views) has no asset
    names = tuple(t.name for t in tables) or (step.name,)
    if tables:
        specs = [_spec(family, step, t, deps, settings, partitions) for t in tables]
    else:
        specs = [dg.AssetSpec(step.name, group_name=step.group or family.group, deps=deps, description=step.description,
                              kinds=set(step.kinds), owners=list(family.owners),
                              code_version=code_version(family, step, settings), tags={"recfeat/family": family.name})]

    @dg.multi_asset(
        specs=specs,
        name=step.name,
        description=step.description or None,
        can_subset=False,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions is not None else None,
        pool=table_pool(names[0]),  # one writer per table: the step writes all its tables
        op_tags=lane_tags("beam") if "beam" in step.kinds else None,  # one Beam pipeline at a time
    )
    def _step(context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource,
              spark: SparkResource):
        s, wh = settings.get(), warehouse.get()
        before = {t.name: wh.current_version(t.name) for t in tables}
        ctx = family.context(wh, s, spark_session=spark.get_session, window=_window(context),
                             run_id=context.run.run_id, tables=tuple(t.name for t in tables), log=context.log.info)
        with commit_conflicts(context):
            result = step.run(ctx)
        if result.summary:
            context.log.info(result.summary)
        for name in names:
            stats = {k: _metadata_value(k, v) for k, v in result.stats.get(name, {}).items()}
            stats.update(figure_metadata(result.figures.get(name, {})))
            manifest = result.manifests.get(name)
            if manifest is None:
                yield dg.MaterializeResult(asset_key=name, metadata={"dagster/row_count": 0, "committed": False, **stats})
                continue
            meta = table_metadata(wh, manifest, result.partitions.get(name))
            meta.update(stats)
            yield materialize_result(name, manifest, before[name], meta)

    return _step


def event_window(settings: Settings, now: dt.datetime | None = None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The allowed event-time window, inclusive, from the ingestion rules (``settings.rules``).

    ``rules.min_event_ts`` (a UTC date) is the lower bound; ``rules.max_event_ts`` (a UTC date,
    exclusive) the upper one, else now + ``rules.future_tolerance_s``.
    """
    rules = settings.rules
    lo = as_utc_or_none(rules.min_event_ts)
    hi = as_utc_or_none(rules.max_event_ts)
    if hi is not None:
        hi -= dt.timedelta(microseconds=1)
    elif rules.future_tolerance_s is not None:
        hi = (now or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(seconds=rules.future_tolerance_s)
    return lo, hi


def run_partitions(tags: dict[str, str]) -> list[str] | None:
    """The daily partition keys a run covers (single partition or range tags), else ``None``.

    ``None`` makes the suite validate the partitions the table's last commit wrote (a check
    launched on its own). From the tags, a day of the range that the commit left empty is
    validated too: it counts 0 rows in the row-count band.
    """
    single = tags.get("dagster/partition")
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if single:
        return [single]
    if not (start and end):
        return None
    return DateWindow.inclusive(dt.date.fromisoformat(start), dt.date.fromisoformat(end)).dates()


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {i}" for i in items) or "(none)"


def _short_list(values: list[str], limit: int = 10) -> str:
    return ", ".join(values[:limit]) + (f" ... ({len(values)} in all)" if len(values) > limit else "")


def table_checks(family: Family, table: TableContract) -> dg.AssetChecksDefinition:
    """The quality, invariant and warning checks of one table, computed in one step."""
    from pipelines.quality import warning_check_name

    quality_name, invariants_name = f"{table.name}_quality", f"{table.name}_invariants"
    warn_name = warning_check_name(table.name)
    counter = family.invariants.get(table.name)
    specs = [dg.AssetCheckSpec(
        quality_name, asset=table.name, blocking=True,
        description=f"{table.name}: contract (schema, key) and data-quality suite (docs/quality.md); blocks downstream assets.",
    )]
    if counter is not None:
        specs.append(dg.AssetCheckSpec(
            invariants_name, asset=table.name, blocking=True,
            description=f"{table.name}: the family's invariants ({', '.join(table.invariants) or 'docs/tables.md'}); blocks downstream assets.",
        ))
    if warn_name:
        specs.append(dg.AssetCheckSpec(
            warn_name, asset=table.name, blocking=False,
            description=f"{table.name}: warning-level expectations of the quality suite (never blocks).",
        ))

    @dg.multi_asset_check(specs=specs, name=f"{table.name}_checks", compute_kind="great_expectations",
                          op_tags=lane_tags("checks"))  # one GX validation at a time
    def _check(context: dg.AssetCheckExecutionContext, settings: SettingsResource, warehouse: WarehouseResource,
               spark: SparkResource):
        from pipelines.quality import ERROR, check_table

        wh, s = warehouse.get(), settings.get()
        if not wh.exists(table.name):
            for spec in specs:
                yield dg.AssetCheckResult(
                    check_name=spec.name, asset_key=table.name, passed=not spec.blocking,
                    severity=dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN,
                    description=f"table {table.name!r} has no committed version",
                )
            return
        ctx = family.context(wh, s, spark_session=spark.get_session, run_id=context.run.run_id, log=context.log.info)
        lo, hi = event_window(s)
        from pipelines.spark import LazySession

        result = check_table(
            # Spark only if the check needs it: a small table is checked on Arrow (docs/quality.md).
            LazySession(spark.get_session, s.spark), wh, table.name, s.quality,
            params=family.expectation_params(s),
            # A partitioned family's run covers its days; an unpartitioned one rebuilt the whole table.
            partitions=run_partitions(context.run.tags) if table.partition_column and family.partitioned(s) else None,
            # The counter reads the checked table through the check's one read (docs/quality.md).
            invariants=(lambda shared: counter(dataclasses.replace(ctx, warehouse=shared))) if counter is not None else None,
            min_event_ts=lo, max_event_ts=hi, run_name=context.run.run_id,
        )
        context.log.info(result.summary())
        docs = {
            "data_docs": dg.MetadataValue.path(result.validation_page),
            "data_docs_url": dg.MetadataValue.url("file://" + result.validation_page),
            "data_docs_index": dg.MetadataValue.path(result.data_docs_index),
        }
        errors = [e for e in result.expectations if e.severity == ERROR]
        meta = {
            **docs,
            "rows_validated": result.rows,
            "table_version": result.table_version,
            "engine": result.engine,
            "expectations": len(errors),
            "expectations_failed": len(result.failures),
            "failed_expectations": dg.MetadataValue.md(_bullets([e.label() for e in result.failures])),
            "contract": result.contract_description,
            **{f"contract_{k}": v for k, v in result.contract_details.items()},
        }
        if result.partitions:
            meta["partitions"] = _short_list(result.partitions)
        if result.notes:
            meta["notes"] = dg.MetadataValue.md(_bullets(result.notes))
        if result.warnings and not warn_name:
            meta["warnings"] = dg.MetadataValue.md(_bullets([e.label() for e in result.warnings]))
        gx_passed = not result.failures and result.contract_passed
        yield dg.AssetCheckResult(
            check_name=quality_name, asset_key=table.name, passed=gx_passed,
            severity=dg.AssetCheckSeverity.ERROR, description=result.summary()[:1000], metadata=meta,
        )
        if counter is not None:
            bad = dict(result.violations)
            yield dg.AssetCheckResult(
                check_name=invariants_name, asset_key=table.name, passed=not bad,
                severity=dg.AssetCheckSeverity.ERROR,
                description=", ".join(f"{k}: {v}" for k, v in bad.items())
                or f"{result.invariants.get('rows', result.rows):,} rows satisfy every invariant",
                metadata={**docs, **{k: int(v) for k, v in result.invariants.items()}},
            )
        if warn_name:
            warned = [e for e in result.expectations if e.severity != ERROR]
            failed = [e for e in warned if not e.success]
            yield dg.AssetCheckResult(
                check_name=warn_name, asset_key=table.name, passed=not failed,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(e.label() for e in failed)[:1000] or f"{len(warned)} warning-level expectations passed",
                metadata={
                    **docs,
                    "expectations": len(warned),
                    "expectations_failed": len(failed),
                    "unexpected_rows": sum(e.unexpected_count or 0 for e in failed),
                    "failed_expectations": dg.MetadataValue.md(_bullets([e.label() for e in failed])),
                },
            )

    return _check


def extra_check(family: Family, check) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=check.table, name=check.name, blocking=check.blocking, description=check.description)
    def _extra(context: dg.AssetCheckExecutionContext, settings: SettingsResource, warehouse: WarehouseResource,
               spark: SparkResource) -> dg.AssetCheckResult:
        ctx = family.context(warehouse.get(), settings.get(), spark_session=spark.get_session, run_id=context.run.run_id)
        outcome = check.run(ctx)
        return dg.AssetCheckResult(
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN,
            description=outcome.description, metadata=outcome.metadata,
        )

    return _extra


def build_family_definitions(settings: Settings, families=None) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """Every enabled family's assets and checks (``families``: default the catalog; a subset of
    the catalog, for a test that materializes one family: runs re-load the settings through it)."""
    from pipelines import catalog

    unknown = [f.name for f in families or () if f not in catalog.families()]
    if unknown:
        raise ValueError(f"families not in the catalog: {unknown} (add them to pipelines.catalog.FAMILIES)")
    enabled = enabled_families(settings, families)
    known = {t.name for f in enabled for t in f.stored_tables(settings)} | {s.name for f in enabled for s in f.steps if not s.tables}
    assets, checks = [], []
    for family in enabled:
        for step in family.steps:
            assets.append(step_asset(family, step, settings, known))
        checks += [table_checks(family, table) for table in family.stored_tables(settings)]
        checks += [extra_check(family, c) for c in family.extra_checks]
    return assets, checks
