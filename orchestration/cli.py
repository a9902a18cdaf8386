"""The ``recfeat`` command line: the parser, the entry point and ``recfeat ingest``.

Stable forms (scripts and schedulers call them)::

    recfeat [--config FILE] demo
    recfeat generate --events N --seed S --out DIR
    recfeat ingest --source {kuairand,movielens,csv,parquet} --input PATH [--warehouse DIR]
    recfeat materialize [--select ASSET,...] [--partition DAY | --from DAY --to DAY] [--warehouse DIR]
    recfeat tables [--warehouse DIR]
    recfeat show TABLE [--version N] [--warehouse DIR] [--rows N]
    recfeat export TABLE OUT.parquet [--version N] [--warehouse DIR]
    recfeat report [--warehouse DIR]
    recfeat training-set SPINE --features NAME,... --out DIR [--ts-column COL] [--ttl TABLE=AGE] [--versions TABLE=N,...|DIR] [--warehouse DIR]
    recfeat train MODEL [--model-config FILE] [--set KEY=VALUE ...] [--from-run DIR] [--warehouse DIR]
    recfeat runs [MODEL] [--limit N] [--track-untracked]

Exit code 0 on success; on failure one line ``recfeat: error: <reason>`` and exit code 1
(2 for usage errors).

The commands live in modules of one concern each: ``cli_run`` (generate, materialize, demo;
the run itself is ``orchestration.materialize``), ``cli_tables`` (the warehouse readers),
``cli_train`` (train), ``cli_runs`` (runs); ``cli_common`` holds what they share. A new subcommand is a
``cmd_<name>(args) -> int`` in one of them (or a new module) plus its parser below.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from features.source_kinds import FILE_FORMAT_KINDS, GENERIC_KINDS
from orchestration.cli_common import CliError, settings_for, warehouse_for
from orchestration.cli_run import cmd_demo, cmd_generate, cmd_materialize
from orchestration.cli_runs import add_parser as add_runs_parser
from orchestration.cli_tables import cmd_export, cmd_history, cmd_migrate, cmd_report, cmd_show, cmd_tables
from orchestration.cli_train import cmd_train
from orchestration.cli_training_set import add_parser as add_training_set_parser

__all__ = ["CliError", "build_parser", "main"]  # and materialize_assets, loaded on first use (below)


def __getattr__(name: str):
    """``materialize_assets`` (``orchestration.materialize``), imported on first use: it loads
    Dagster, which commands such as ``recfeat tables`` never need."""
    if name == "materialize_assets":
        from orchestration.materialize import materialize_assets

        return materialize_assets
    raise AttributeError(name)


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


def cmd_ingest(args) -> int:
    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.settings import SourceConfig
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark

    settings = settings_for(args)
    name = args.name or args.source
    configured = [(n, s) for n, s in settings.sources.items() if s.kind == args.source]
    if configured:
        name = args.name or configured[0][0]
        config = configured[0][1].model_copy(update={"path": os.path.abspath(args.input)})
    elif args.source in GENERIC_KINDS:
        raise CliError(
            f"a {args.source} source needs a column mapping: define one under 'sources:' in the config file "
            "(see docs/sources.md)"
        )
    else:
        config = SourceConfig(kind=args.source, path=os.path.abspath(args.input))
    adapter = adapter_for(name, config)
    adapter.event_files()  # fail on a missing or empty source before Spark starts
    wh = warehouse_for(settings)
    spark = get_spark(settings.spark)
    result = _retry_appends(lambda: ingest_with_settings(spark, wh, adapter, settings))
    print(result.summary())
    for table in ("users", "items"):
        m = ingest_dimension(wh, adapter, table, follow_symlinks=settings.ingest.follow_symlinks)
        if m is not None:
            print(f"{table}: v{m.version}, {m.row_count:,} rows")
    print(f"warehouse: {wh.uri}")
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
    sp.add_argument(
        "--train-threads", type=int, default=None, metavar="N",
        help="torch intra-op threads of each model in the demo (default: this machine's cores, at most 4; "
        "the same count reruns to the same model; `recfeat train` uses the configured `threads`, 1)",
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
    sp.add_argument("--source", required=True, choices=list(FILE_FORMAT_KINDS), help="source format")
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
    add_runs_parser(sub)
    add_training_set_parser(sub, warehouse_opt)
    return p


def main(argv: list[str] | None = None) -> int:
    import atexit
    import gc

    # At exit the interpreter's last garbage collections walk every object the command's
    # libraries left (Dagster, Great Expectations, torch: 1 to 2.5 s on two cores); objects
    # frozen by then are skipped. Every atexit handler still runs, those registered later first.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
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
