"""``recfeat`` commands that build data: generate, materialize, demo."""
from __future__ import annotations

import os
import time

from orchestration.cli_common import CliError, ensure_dagster_home, log_level, overrides, settings_for, warehouse_for
from orchestration.cli_tables import print_tables


def cmd_generate(args) -> int:
    from pipelines.settings import ConfigError
    from pipelines.synthetic import generate

    # The flags override the configured ``synthetic:`` section, validated like the config file.
    flags = {f"synthetic.{k}": getattr(args, k) for k in ("events", "seed", "days", "users", "items")
             if getattr(args, k) is not None}
    try:
        settings = settings_for(args, **flags)
    except ConfigError as exc:  # a bad flag: name the flag, not the config file
        bad = [k for k in flags if f"{k}: " in str(exc)]
        if not bad:
            raise
        raise CliError(f"--{bad[0].split('.', 1)[1]}: {str(exc).split(f'{bad[0]}: ', 1)[1].splitlines()[0]}") from None
    t0 = time.perf_counter()
    out = generate(args.out, settings.synthetic)
    print(f"generated {out.events:,} events in {time.perf_counter() - t0:.1f} s into {out.root}")
    print(f"  logs:  {len(out.log_files)} file(s), e.g. {out.log_files[0].name}")
    print(f"  users: {out.user_file}")
    print(f"  items: {out.item_file}")
    print(f"  truth: {out.truth_file}")
    return 0


def cmd_materialize(args) -> int:
    from orchestration.materialize import materialize_assets, warm_start_spark

    ensure_dagster_home()
    settings = settings_for(args)
    warm_start_spark(settings, args.select)  # the JVM starts while the run is prepared
    start, end = args.start, args.end
    if args.partition:
        start = end = args.partition
    materialize_assets(settings, args.config, args.select, start, end, log_level=log_level(args), overrides=overrides(args))
    print(f"warehouse: {settings.warehouse.root}")
    return 0


#: The most torch threads the demo gives a model by default (more rarely pays on small data).
DEMO_MAX_THREADS = 4


def demo_threads() -> int:
    """The demo's default torch threads per model: the cores this process may use, at most
    :data:`DEMO_MAX_THREADS`."""
    from orchestration.executor import usable_cores

    return min(usable_cores(), DEMO_MAX_THREADS)


def cmd_demo(args) -> int:
    from orchestration.materialize import materialize_assets, warm_start_spark

    # The demo trains every model on a small budget (``--train-epochs``) with the machine's cores
    # (``--train-threads``; a fixed thread count reruns to the same model) so it stays quick.
    threads = args.train_threads if args.train_threads is not None else demo_threads()
    if threads < 1:
        raise CliError(f"--train-threads: must be at least 1, not {threads}")
    ensure_dagster_home()
    # The JVM starts while the trainers are imported and the run is prepared (the training
    # budget below changes no Spark setting, so these settings are the run's).
    warm_start_spark(settings_for(args), None)
    from trainers.registry import model_names

    budget = {f"training.models.{m}.{k}": v for m in model_names()
              for k, v in (("epochs", args.train_epochs), ("patience", 1), ("threads", threads))}
    settings = settings_for(args, **budget)
    if settings.source.kind != "synthetic":
        print(f"note: the active source is {settings.active_source!r} ({settings.source.kind}), not the synthetic default")
    t0 = time.perf_counter()
    print(f"recfeat demo: {settings.synthetic.events:,} synthetic events, warehouse {settings.warehouse.root}")
    materialize_assets(settings, args.config, None, log_level=log_level(args), overrides=overrides(args, **budget))
    print(f"pipeline finished in {time.perf_counter() - t0:.1f} s\n")
    wh = warehouse_for(settings)
    print_tables(wh, settings)
    print("\nwhere everything is:")
    print(f"  source files:    {settings.source.path}")
    for name in wh.tables():
        print(f"  {name + ':':<16} {wh.table_path(name)}")
    from pipelines.quality import report, reports_root

    print(f"  dagster runs:    {os.environ['DAGSTER_HOME']}")
    print(f"  quality reports: {reports_root(wh, settings.quality)}")
    from pipelines.catalog import view_sources

    print("\n" + report(wh, settings.quality, views=view_sources(settings)))
    from pipelines.lookalike import lsh_recall_summary

    lookalike_line = lsh_recall_summary(wh, settings.lookalike)
    if lookalike_line:
        print("\n" + lookalike_line)
    print("\nnext: `recfeat show events`, `recfeat show rejected_events`, or `make dev` for the Dagster UI on http://127.0.0.1:3000")
    return 0
