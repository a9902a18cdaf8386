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
    from orchestration.materialize import materialize_assets

    ensure_dagster_home()
    settings = settings_for(args)
    start, end = args.start, args.end
    if args.partition:
        start = end = args.partition
    materialize_assets(settings, args.config, args.select, start, end, log_level=log_level(args), overrides=overrides(args))
    print(f"warehouse: {settings.warehouse.root}")
    return 0


def cmd_demo(args) -> int:
    from orchestration.materialize import materialize_assets

    ensure_dagster_home()
    from trainers.registry import model_names

    # The demo trains every model on a small budget (``--train-epochs``) so it stays quick.
    budget = {f"training.models.{m}.{k}": v for m in model_names() for k, v in (("epochs", args.train_epochs), ("patience", 1))}
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
