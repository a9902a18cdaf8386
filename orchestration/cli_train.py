"""``recfeat train``: train one registered model (trainers/registry.py) outside Dagster."""
from __future__ import annotations

from pathlib import Path

from orchestration.cli_common import CliError, settings_for


def cmd_train(args) -> int:
    """Train one registered model (trainers/registry.py) with the project settings."""
    import yaml

    from orchestration.models import model_config
    from trainers.config import parse_overrides
    from trainers.registry import get_model, model_names

    if args.model not in model_names():
        raise CliError(f"unknown model {args.model!r}; known: {model_names()}")
    settings = settings_for(args)
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
