"""The ``recfeat`` command line.

Stable forms (scripts and schedulers call them)::

    recfeat [--config FILE] demo
    recfeat generate --events N --seed S --out DIR
    recfeat ingest --source {kuairand,movielens,csv,parquet} --input PATH [--warehouse DIR]
    recfeat materialize [--select ASSET,...] [--partition DAY | --from DAY --to DAY] [--warehouse DIR]
    recfeat tables [--warehouse DIR]
    recfeat show TABLE [--version N] [--warehouse DIR] [--rows N]
    recfeat export TABLE OUT.parquet [--version N] [--warehouse DIR]
    recfeat report [--warehouse DIR]
    recfeat train MODEL [--model-config FILE] [--set KEY=VALUE ...] [--from-run DIR] [--warehouse DIR]

Exit code 0 on success; on failure one line ``recfeat: error: <reason>`` and exit code 1
(2 for usage errors).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


class CliError(Exception):
    """A failure reported as one line."""


def _overrides(args, **extra) -> dict:
    """Dotted settings overrides from the command's flags (they reach Dagster runs too)."""
    overrides = dict(extra)
    if getattr(args, "warehouse", None):
        overrides["warehouse.root"] = os.path.abspath(args.warehouse) if "://" not in args.warehouse else args.warehouse
    return overrides


def _settings(args, **extra):
    from pipelines.settings import load_settings

    return load_settings(args.config, overrides=_overrides(args, **extra))


def _warehouse(settings):
    from pipelines.warehouse import Warehouse

    return Warehouse(settings.warehouse.root, retention_days=settings.warehouse.retention_days,
                     keep_versions=settings.warehouse.keep_versions, pinned=settings.training.pinned_versions())


def _ensure_dagster_home() -> None:
    """Runs launched from the CLI are recorded in $DAGSTER_HOME (default var/dagster), with the
    project's instance configuration: telemetry off, one writer per table (orchestration/instance.py)."""
    from orchestration.instance import ensure_dagster_home

    ensure_dagster_home()


#: Tables whose commits are appends: a commit conflict on one of them is retried.
RETRYABLE_APPENDS = ("rejected_events", "ingest_runs")
#: Retries of an ingestion whose append lost to another writer, and the first wait (doubled each time).
APPEND_RETRIES = 3
APPEND_RETRY_WAIT_S = 1.0


def _retry_appends(job, retries: int | None = None, wait_s: float | None = None):
    """Run ``job``; when its commit to an append table (:data:`RETRYABLE_APPENDS`) conflicts with
    another writer, run it again, at most ``retries`` (:data:`APPEND_RETRIES`) times. Any other
    conflict is raised at once (the command then fails in one line)."""
    from pipelines.warehouse import CommitConflict

    retries = APPEND_RETRIES if retries is None else retries
    wait_s = APPEND_RETRY_WAIT_S if wait_s is None else wait_s
    for attempt in range(retries + 1):
        try:
            return job()
        except CommitConflict as exc:
            if exc.table not in RETRYABLE_APPENDS or attempt == retries:
                raise
            line = str(exc).splitlines()[0]
            print(f"note: {line}; retrying ({attempt + 1} of {retries}; events committed before count as "
                  "already present)", file=sys.stderr)
            time.sleep(wait_s * 2**attempt)


# ---- commands ------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from pipelines.synthetic import GeneratorParams, generate

    settings = _settings(args)
    base = GeneratorParams.from_settings(settings.synthetic)
    params = GeneratorParams(
        **{
            **base.__dict__,
            "events": args.events if args.events is not None else base.events,
            "seed": args.seed if args.seed is not None else base.seed,
            "days": args.days if args.days is not None else base.days,
            "users": args.users if args.users is not None else base.users,
            "items": args.items if args.items is not None else base.items,
        }
    )
    t0 = time.perf_counter()
    out = generate(args.out, params)
    print(f"generated {out.events:,} events in {time.perf_counter() - t0:.1f} s into {out.root}")
    print(f"  logs:  {len(out.log_files)} file(s), e.g. {out.log_files[0].name}")
    print(f"  users: {out.user_file}")
    print(f"  items: {out.item_file}")
    print(f"  truth: {out.truth_file}")
    return 0


def cmd_ingest(args) -> int:
    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.settings import SourceConfig
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark

    settings = _settings(args)
    name = args.name or args.source
    configured = [(n, s) for n, s in settings.sources.items() if s.kind == args.source]
    if configured:
        name = args.name or configured[0][0]
        config = configured[0][1].model_copy(update={"path": os.path.abspath(args.input)})
    elif args.source in ("csv", "parquet"):
        raise CliError(
            f"a {args.source} source needs a column mapping: define one under 'sources:' in the config file "
            "(see docs/sources.md)"
        )
    else:
        config = SourceConfig(kind=args.source, path=os.path.abspath(args.input))
    adapter = adapter_for(name, config)
    adapter.event_files()  # fail on a missing or empty source before Spark starts
    wh = _warehouse(settings)
    spark = get_spark(settings.spark)
    result = _retry_appends(lambda: ingest_with_settings(spark, wh, adapter, settings))
    print(result.summary())
    for table in ("users", "items"):
        m = ingest_dimension(wh, adapter, table, follow_symlinks=settings.ingest.follow_symlinks)
        if m is not None:
            print(f"{table}: v{m.version}, {m.row_count:,} rows")
    print(f"warehouse: {wh.uri}")
    return 0


def _resolve_selection(defs, select: str | None) -> list[str]:
    graph = defs.resolve_asset_graph()
    keys = [k.to_user_string() for k in graph.toposorted_asset_keys]
    if not select:
        return keys
    wanted = [s.strip() for s in select.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in keys]
    if unknown:
        raise CliError(f"unknown asset(s) {unknown}; known: {keys}")
    return [k for k in keys if k in wanted]


def materialize_assets(
    settings,
    config_file: str | None,
    select: str | None,
    start: str | None = None,
    end: str | None = None,
    log=print,
    log_level: str = "WARNING",
    overrides: dict | None = None,
) -> list[str]:
    """Materialize the selected assets in process, in dependency order, checks included.

    Daily-partitioned assets run once over the whole range ``start..end`` (inclusive partition
    keys; default: every configured partition) as a single-run backfill.
    """
    import dagster as dg

    from orchestration.automation import SOURCE_TAG, partition_range_tags
    from orchestration.definitions import build_definitions
    from orchestration.instance import cli_run_tags, pool_holders, release_dead_cli_runs

    defs = build_definitions(settings, config_file, overrides)
    order = _resolve_selection(defs, select)
    graph = defs.resolve_asset_graph()
    assets = list(defs.assets) + list(defs.asset_checks or [])
    instance = dg.DagsterInstance.get()
    for run_id in release_dead_cli_runs(instance):
        log(f"note: run {run_id} was left running by a recfeat process that is gone: marked failed, its pool slots freed")
    done = []
    for key in order:
        if key in done:
            continue
        asset_key = dg.AssetKey.from_user_string(key)
        node = graph.get(asset_key)
        # A multi-asset (events + rejected_events) runs as one step: select all its keys.
        keys = sorted(k.to_user_string() for k in node.assets_def.keys)
        pdef = node.partitions_def
        ranged = partition_range_tags(pdef, start, end) if pdef is not None else {}
        label = f" [{ranged['dagster/asset_partition_range_start']} .. {ranged['dagster/asset_partition_range_end']}]" if ranged else ""
        tags = {**cli_run_tags(), **ranged}
        if "events" in keys:  # the ingestion run: the sensor waits for it
            tags[SOURCE_TAG] = settings.active_source
        pool = getattr(node.assets_def.node_def, "pool", None)
        holders = pool_holders(instance, pool) if pool else []
        if holders:
            log(f"waiting for pool {pool} (one writer per table): run {holders[0]} holds it")
        t0 = time.perf_counter()
        result = dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(k) for k in keys]),
            resources=defs.resources,
            instance=instance,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        if not result.success:
            raise CliError(f"materializing {key}{label} failed: {_first_failure(result)}")
        failed_checks = [
            f"{e.check_name}: {e.description}"
            for e in result.get_asset_check_evaluations()
            if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        ]
        if failed_checks:
            raise CliError(f"{key}: blocking check failed: {failed_checks[0]}")
        for e in result.get_asset_check_evaluations():
            if not e.passed and e.severity == dg.AssetCheckSeverity.WARN:
                log(f"warning: {e.check_name}: {e.description or 'failed (non-blocking)'}")
        key = ", ".join(keys)
        log(f"materialized {key}{label} in {time.perf_counter() - t0:.1f} s")
        done.extend(keys)
    return done


def _first_failure(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and "DagsterExecutionStepExecutionError" in err.cls_name:
                err = err.cause
            message = err.message.strip().splitlines()[0] if err.message.strip() else ""
            if err.cls_name == "Failure":  # raised on purpose with a one-line description (a commit conflict)
                return message.split(": ", 1)[-1]
            return f"{err.cls_name}: {message}"
    return "see the Dagster run log"


def _log_level(args) -> str:
    """Dagster's console log: INFO with ``-v``; otherwise only critical lines, since the command
    reports a failed step itself in one line (the whole log stays in the run, in $DAGSTER_HOME)."""
    return "INFO" if getattr(args, "verbose", False) else "CRITICAL"


def cmd_materialize(args) -> int:
    _ensure_dagster_home()
    settings = _settings(args)
    start, end = args.start, args.end
    if args.partition:
        start = end = args.partition
    materialize_assets(settings, args.config, args.select, start, end, log_level=_log_level(args), overrides=_overrides(args))
    print(f"warehouse: {settings.warehouse.root}")
    return 0


def _print_tables(wh) -> None:
    names = wh.tables()
    if not names:
        print(f"no tables in {wh.uri}")
        return
    print(f"{'table':<20} {'version':>7} {'rows':>12} {'partitions':>10}  committed_at")
    for name in names:
        m = wh.manifest(name)
        print(f"{name:<20} {m.version:>7} {m.row_count:>12,} {len(m.partitions):>10}  {m.committed_at}")
    print(f"warehouse: {wh.uri}")


def cmd_tables(args) -> int:
    _print_tables(_warehouse(_settings(args)))
    return 0


def _as_of(text: str | None):
    """``--as-of``: an ISO 8601 time (a time without a zone is UTC)."""
    if text is None:
        return None
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--as-of {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:30:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _manifest(wh, table: str, version: int | None, as_of: str | None = None):
    """The committed manifest of ``table``, or of its kept ``version``, or as of a time; one-line errors."""
    current = wh.manifest(table)  # fails first if the table has no committed version at all
    if as_of is not None:
        if version is not None:
            raise CliError("give --version or --as-of, not both")
        m = wh.manifest(table, _as_of(as_of))
        if m.version != current.version and m.version not in wh.versions(table):
            raise CliError(f"table {table!r} at {as_of} was version {m.version}, which is past retention "
                           f"(versions available: {', '.join(map(str, wh.versions(table)))})")
        return m
    if version is None or version == current.version:
        return current
    kept = wh.versions(table)
    if version not in kept:
        raise CliError(f"table {table!r} has no version {version}; versions available: {', '.join(map(str, kept))}")
    return wh.manifest(table, version)


def cmd_show(args) -> int:
    wh = _warehouse(_settings(args))
    m = _manifest(wh, args.table, args.version, args.as_of)
    current = wh.current_version(args.table)
    note = "" if m.version == current else f", current: {current}"
    print(f"table:        {m.table}")
    print(f"version:      {m.version} (kept: {', '.join(map(str, wh.versions(args.table)))}{note})")
    print(f"committed_at: {m.committed_at}")
    print(f"rows:         {m.row_count:,}")
    print(f"partitioned:  {m.partition_column or 'no'}" + (f" ({len(m.partitions)} partitions: {min(m.partitions)} .. {max(m.partitions)})" if m.partition_column and m.partitions else ""))
    print(f"path:         {wh.table_path(m.table)}")
    print("schema:")
    for name, typ in m.schema:
        print(f"  {name:<20} {typ}")
    files = m.file_paths(wh.root)
    if files and args.rows > 0:
        import pandas as pd
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(files[0], filesystem=wh.fs).iter_batches(batch_size=args.rows), None)
        if batch is not None:
            with pd.option_context("display.width", 200, "display.max_columns", 30):
                print("sample:")
                print(batch.to_pandas().head(args.rows).to_string(index=False))
    return 0


def cmd_export(args) -> int:
    wh = _warehouse(_settings(args))
    m = _manifest(wh, args.table, args.version, args.as_of)
    rows = wh.export(args.table, args.out, version=m.version)
    print(f"exported {args.table} v{m.version}: {rows:,} rows to {args.out}")
    return 0


def cmd_history(args) -> int:
    wh = _warehouse(_settings(args))
    kept = set(wh.versions(args.table))
    entries = wh.history(args.table, limit=args.limit)
    print(f"{'version':>7}  {'committed_at (UTC)':<25} {'operation':<12} {'rows written':>12}  {'readable':<8}  producer")
    for e in entries:
        if e["version"] == 0:
            continue
        rows = sum(json.loads(e.get("recfeat.row_counts", "{}")).values())
        producer = json.loads(e.get("recfeat.producer", "{}"))
        job = producer.get("job", "")
        print(f"{e['version']:>7}  {e['timestamp'].isoformat(timespec='seconds'):<25} {e['operation'] or '':<12} "
              f"{rows:>12,}  {'yes' if e['version'] in kept else 'no':<8}  {job}")
    print(f"table: {wh.table_path(args.table)} (Delta Lake; any Delta reader can open it)")
    return 0


def cmd_migrate(args) -> int:
    wh = _warehouse(_settings(args))
    done = wh.migrate(dry_run=args.dry_run)
    if not done:
        print(f"nothing to migrate: every table in {wh.uri} is a Delta table")
        return 0
    for table, what in done.items():
        print(f"{table:<20} {what}")
    return 0


def cmd_demo(args) -> int:
    _ensure_dagster_home()
    from trainers.registry import model_names

    # The demo trains every model on a small budget (``--train-epochs``) so it stays quick.
    budget = {f"training.models.{m}.{k}": v for m in model_names() for k, v in (("epochs", args.train_epochs), ("patience", 1))}
    settings = _settings(args, **budget)
    if settings.source.kind != "synthetic":
        print(f"note: the active source is {settings.active_source!r} ({settings.source.kind}), not the synthetic default")
    t0 = time.perf_counter()
    print(f"recfeat demo: {settings.synthetic.events:,} synthetic events, warehouse {settings.warehouse.root}")
    materialize_assets(settings, args.config, None, log_level=_log_level(args), overrides=_overrides(args, **budget))
    print(f"pipeline finished in {time.perf_counter() - t0:.1f} s\n")
    wh = _warehouse(settings)
    _print_tables(wh)
    print("\nwhere everything is:")
    print(f"  source files:    {settings.source.path}")
    for name in wh.tables():
        print(f"  {name + ':':<16} {wh.table_path(name)}")
    from pipelines.quality_suites import load_results, render_report, reports_root

    reports = reports_root(wh, settings.quality)
    print(f"  dagster runs:    {os.environ['DAGSTER_HOME']}")
    print(f"  quality reports: {reports}")
    print("\n" + render_report(load_results(reports), reports))
    from pipelines.lookalike import lsh_recall_summary

    lookalike_line = lsh_recall_summary(wh, settings.lookalike)
    if lookalike_line:
        print("\n" + lookalike_line)
    print("\nnext: `recfeat show events`, `recfeat show rejected_events`, or `make dev` for the Dagster UI on http://127.0.0.1:3000")
    return 0


def cmd_report(args) -> int:
    """The last quality validation per table (read from the reports folder; runs nothing)."""
    from pipelines.quality_suites import load_results, render_report, reports_root

    settings = _settings(args)
    reports = reports_root(_warehouse(settings), settings.quality)
    print(render_report(load_results(reports), reports))
    return 0


def cmd_train(args) -> int:
    """Train one registered model (trainers/registry.py) with the project settings."""
    import yaml

    from orchestration.models import model_config
    from trainers.config import parse_overrides
    from trainers.registry import get_model, model_names

    if args.model not in model_names():
        raise CliError(f"unknown model {args.model!r}; known: {model_names()}")
    settings = _settings(args)
    layers = []
    if args.from_run:
        from trainers.runs import RunRecordError, read_run_config

        try:
            saved = read_run_config(args.from_run)  # refuses a run that did not finish
        except RunRecordError as exc:
            raise CliError(str(exc)) from None
        if saved.get("model") != args.model:
            raise CliError(f"{args.from_run} is a run of {saved.get('model')!r}, not {args.model!r}")
        layers.append(saved["config"])
    if args.model_config:
        loaded = yaml.safe_load(Path(args.model_config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise CliError(f"{args.model_config}: must hold a mapping of config fields")
        layers.append(loaded)
    if args.from_run:  # the table versions the run read, not the current ones
        from trainers.runs import RunRecordError, recorded_versions

        try:
            layers.append({"table_versions": recorded_versions(args.from_run)})
        except RunRecordError as exc:
            raise CliError(str(exc)) from None
    layers.append(parse_overrides(args.set or []))
    if getattr(args, "warehouse", None):
        layers.append({"warehouse": settings.warehouse.root})
    cfg = model_config(settings, args.model, *layers)
    if args.from_run:
        from pipelines.warehouse import Warehouse

        wh = Warehouse(cfg.warehouse, retention_days=settings.warehouse.retention_days,
                       keep_versions=settings.warehouse.keep_versions, pinned=settings.training.pinned_versions())
        for table, version in sorted(cfg.table_versions.items()):
            kept = wh.versions(table) if wh.exists(table) else []
            if version not in kept:
                raise CliError(
                    f"{args.from_run} read {table} version {version}, which the warehouse {cfg.warehouse} no longer has "
                    f"(versions kept: {kept or 'none'}); it cannot be reproduced"
                )
    result = get_model(args.model).train(cfg)
    m = result.metrics
    print(f"{args.model}: best epoch {m.get('best_epoch')} by valid {m.get('select_metric')}")
    for split in ("valid", "test"):
        if split in m:
            print(f"  {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in m[split].items()))
    tp = m.get("throughput", {})
    if tp:
        print(
            f"  throughput: loader {tp.get('loader_samples_per_s', 0):,.0f} samples/s, "
            f"training {tp.get('train_samples_per_s', 0):,.0f} samples/s"
        )
    print("  tables: " + ", ".join(f"{t} v{r['version']}" for t, r in sorted(result.tables.items())))
    print(f"run directory: {result.run_dir}")
    return 0


# ---- parser --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recfeat", description="recfeat: a feature platform for recommender systems.")
    p.add_argument("--config", metavar="FILE", help="project config (default: $RECFEAT_CONFIG or ./recfeat.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Dagster's run log (INFO); without it a failed step is reported in one line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def warehouse_opt(sp):
        sp.add_argument("--warehouse", metavar="DIR", help="warehouse root (overrides config and $RECFEAT_WAREHOUSE)")

    def version_opt(sp):
        sp.add_argument(
            "--version", type=int, metavar="N",
            help="read committed version N (one of the versions kept, see `recfeat show`; default: the current one)",
        )
        sp.add_argument(
            "--as-of", metavar="TIME",
            help="read the version that was current at TIME (ISO 8601; UTC unless it names a zone)",
        )

    sp = sub.add_parser("demo", help="generate the synthetic default and run the whole pipeline")
    warehouse_opt(sp)
    sp.add_argument(
        "--train-epochs", type=int, default=2, metavar="N",
        help="epochs each model trains for in the demo (default 2; `recfeat train` uses the configured budget)",
    )
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("generate", help="write a synthetic source data set (KuaiRand format + ground truth)")
    sp.add_argument("--events", type=int, help="number of events (1,000 .. 100,000,000)")
    sp.add_argument("--seed", type=int, help="random seed (same seed, byte-identical files)")
    sp.add_argument("--days", type=int, help="number of UTC days covered")
    sp.add_argument("--users", type=int, help="number of users (default events // 50)")
    sp.add_argument("--items", type=int, help="number of videos (default events // 100)")
    sp.add_argument("--out", required=True, metavar="DIR", help="output directory")
    sp.set_defaults(func=cmd_generate)

    sp = sub.add_parser("ingest", help="ingest source files into events, users and items")
    sp.add_argument("--source", required=True, choices=["kuairand", "movielens", "csv", "parquet"], help="source format")
    sp.add_argument("--input", required=True, metavar="PATH", help="a source directory or file")
    sp.add_argument("--name", help="source name written to the events (default: the configured name or the format)")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_ingest)

    sp = sub.add_parser("materialize", help="materialize Dagster assets in process (checks included)")
    sp.add_argument("--select", metavar="ASSET,...", help="comma-separated asset names (default: all)")
    sp.add_argument("--partition", metavar="DAY", help="one daily partition (YYYY-MM-DD)")
    sp.add_argument("--from", dest="start", metavar="DAY", help="first daily partition of a range")
    sp.add_argument("--to", dest="end", metavar="DAY", help="last daily partition of a range (inclusive)")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_materialize)

    sp = sub.add_parser("tables", help="list the warehouse's tables")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_tables)

    sp = sub.add_parser("show", help="schema, version, row count and a sample of a table")
    sp.add_argument("table")
    sp.add_argument("--rows", type=int, default=5, help="sample rows (default 5)")
    version_opt(sp)
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_show)

    sp = sub.add_parser("export", help="write the committed (or a kept) version of a table as one Parquet file")
    sp.add_argument("table")
    sp.add_argument("out", metavar="OUT.parquet")
    version_opt(sp)
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("history", help="a table's commits: version, time, rows written, whether still readable")
    sp.add_argument("table")
    sp.add_argument("--limit", type=int, default=None, help="newest N commits only")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_history)

    sp = sub.add_parser("migrate", help="convert tables written before the Delta Lake layout, in place")
    sp.add_argument("--dry-run", action="store_true", help="list what would be converted")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_migrate)

    sp = sub.add_parser("report", help="the last data-quality validation per table and the data docs path")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_report)
    sp = sub.add_parser("train", help="train a registered model (docs/training.md); prints metrics and the run directory")
    sp.add_argument("model", metavar="MODEL", help="a registered model, e.g. watch_time_fm")
    sp.add_argument("--model-config", metavar="FILE", help="YAML of the model's config fields (over training.models.MODEL)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config field (repeatable; dotted for nested)")
    sp.add_argument("--from-run", metavar="DIR", help="start from the config of an earlier run directory (reproduce it)")
    warehouse_opt(sp)
    sp.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    from pipelines.settings import ConfigError
    from pipelines.spark import SparkSetupError
    from pipelines.warehouse import WarehouseError

    known = (CliError, ConfigError, WarehouseError, SparkSetupError, FileNotFoundError)
    try:
        from pipelines.sources import SourceError

        known = known + (SourceError,)
    except ImportError:  # pragma: no cover - sources are part of the package
        pass
    try:
        return args.func(args)
    except known as exc:
        print(f"recfeat: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"recfeat: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("recfeat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
