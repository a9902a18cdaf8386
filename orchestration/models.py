"""Model assets: one Dagster asset per registered trainer, a retrain job, schedule and sensor.

Every model of ``trainers.registry`` becomes an asset (group ``models``) that depends on the
tables the model reads; materializing it trains the model with the project settings
(``training:``) and records the validation and test metrics, the run directory and the table
versions read in its metadata. ``retrain_models_daily`` retrains every day at 05:00 UTC, and the
sensor ``retrain_after_feature_refresh`` retrains a model as soon as a table it reads has a new
committed version.
"""
import json
from typing import Any

import dagster as dg

from orchestration.extensions import Extension
from orchestration.resources import SettingsResource
from pipelines.settings import Settings

MODELS_GROUP = "models"
RETRAIN_JOB = "retrain_models"


def model_config(settings: Settings, name: str, *layers: dict[str, Any] | None):
    """The validated config of model ``name``: project settings, then ``training.models[name]``, then ``layers``."""
    from trainers.config import build_config
    from trainers.registry import get_model

    spec = get_model(name)
    t = settings.training
    base = {
        "warehouse": settings.warehouse.root,
        "runs_root": t.runs_root,
        "seed": t.seed,
        "split": t.split.model_dump(),
    }
    return build_config(spec.config_cls, base, t.models.get(name), *layers, origin=f"training.models.{name}")


def run_metadata(result) -> dict[str, Any]:
    """Materialization metadata of a training run."""
    meta: dict[str, Any] = {}
    for split in ("valid", "test"):
        for k, v in result.metrics.get(split, {}).items():
            meta[f"{split}/{k}"] = dg.MetadataValue.float(float(v))
    meta["best_epoch"] = int(result.metrics.get("best_epoch", -1))
    meta["select_metric"] = str(result.metrics.get("select_metric", ""))
    if result.run_dir is not None:
        meta["run_dir"] = dg.MetadataValue.path(str(result.run_dir))
    meta["table_versions"] = dg.MetadataValue.json({t: r["version"] for t, r in result.tables.items()})
    tp = result.metrics.get("throughput", {})
    for k in ("loader_samples_per_s", "train_samples_per_s"):
        if k in tp:
            meta[k] = dg.MetadataValue.float(float(tp[k]))
    return meta


def _model_asset(name: str, spec, tables: list[str]):
    @dg.asset(
        name=name,
        group_name=MODELS_GROUP,
        deps=[dg.AssetKey(t) for t in tables],
        description=spec.description,
        kinds={"pytorch"},
    )
    def _model(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.MaterializeResult:
        from trainers.registry import get_model

        cfg = model_config(settings.get(), name, {"progress": False})
        result = get_model(name).train(cfg)
        context.log.info(f"{name}: run directory {result.run_dir}")
        return dg.MaterializeResult(metadata=run_metadata(result))

    return _model


def table_versions(settings: Settings, tables: list[str]) -> dict[str, int | None]:
    """The committed version of each table (None if absent), read from the warehouse pointers."""
    from trainers.tables import snapshot

    out: dict[str, int | None] = {}
    for t in tables:
        try:
            out[t] = snapshot(settings.warehouse.root, t).version
        except FileNotFoundError:
            out[t] = None
    return out


def build(settings: Settings) -> Extension:
    from trainers.registry import get_model, model_names

    assets, deps = [], {}
    for name in model_names():
        spec = get_model(name)
        cfg = model_config(settings, name)  # a bad override fails here, naming the field
        deps[name] = list(spec.tables(cfg))
        assets.append(_model_asset(name, spec, deps[name]))
    if not assets:
        return Extension()
    selection = dg.AssetSelection.assets(*[dg.AssetKey(n) for n in deps])
    job = dg.define_asset_job(RETRAIN_JOB, selection=selection, description="Retrain every registered model.")
    schedule = dg.ScheduleDefinition(
        name="retrain_models_daily", job=job, cron_schedule="0 5 * * *", execution_timezone="UTC",
        description="Retrain every model daily at 05:00 UTC, after the feature tables' nightly refresh.",
    )

    @dg.sensor(
        name="retrain_after_feature_refresh",
        asset_selection=selection,
        minimum_interval_seconds=300,
        description="Retrain a model when a table it reads has a new committed version.",
    )
    def retrain_after_feature_refresh(context: dg.SensorEvaluationContext, settings: SettingsResource):
        s = settings.get()
        previous = json.loads(context.cursor) if context.cursor else {}
        state, stale = {}, []
        for name, tables in deps.items():
            versions = table_versions(s, tables)
            state[name] = versions
            if any(v is None for v in versions.values()):
                continue
            if previous.get(name) != versions:
                stale.append(name)
        context.update_cursor(json.dumps(state, sort_keys=True))
        if not stale:
            return dg.SkipReason("no model input table has a new version")
        key = json.dumps({n: state[n] for n in stale}, sort_keys=True)
        return dg.RunRequest(run_key=key, asset_selection=[dg.AssetKey(n) for n in stale])

    return Extension(assets=assets, jobs=[job], schedules=[schedule], sensors=[retrain_after_feature_refresh])
