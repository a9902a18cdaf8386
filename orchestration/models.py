"""Model assets: one Dagster asset per registered trainer, a retrain job, its schedule, and
declarative retraining.

Every model of ``trainers.registry`` becomes an asset (group ``models``, owner
:data:`MODELS_OWNER`, kind ``pytorch``) that depends on the tables the model reads;
materializing it trains the model with the project settings (``training:``) and records the
validation and test metrics, the run directory, the table versions read, the training curves
(``figure_curves``) and the MLflow run id (``mlflow_run_id``, trainers/tracking.py) in its metadata.
Its code version (:func:`model_code_version`) is a digest of the trainer's source and of the
model's configured fields, so the UI shows a model whose code or configuration changed since
its last training as stale. While it trains, the trainer's per-epoch lines (the Python logger
``recfeat.train``, INFO) go to the run's log (``context.log``): they show in the UI and in the
command line's progress lines.

Retraining: ``retrain_models_daily`` retrains every model every day at 05:00 UTC, and every
model asset carries :data:`RETRAIN_CONDITION`, evaluated by the automation condition sensor
``retrain_models_automation`` (:data:`AUTOMATION_SENSOR`): a model is requested when it was
never trained, when a table it reads got a new data version (a table's data version is its
committed warehouse version, so a run that committed nothing does not retrain anything), or
when its code version changed; never while one of its tables is missing or being written,
nor while it is already training.
"""
import contextlib
import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.executor import lane_tags, shares_process
from orchestration.extensions import Extension
from orchestration.resources import SettingsResource
from pipelines.settings import Settings

MODELS_GROUP = "models"
RETRAIN_JOB = "retrain_models"
#: Owner of every model asset (Dagster owners are an e-mail address or ``team:<name>``).
MODELS_OWNER = "team:models"
#: The automation condition sensor that evaluates :data:`RETRAIN_CONDITION`.
AUTOMATION_SENSOR = "retrain_models_automation"
#: The Python logger trainers write their per-epoch lines to.
TRAIN_LOGGER = "recfeat.train"

_dep_updated = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.data_version_changed() | dg.AutomationCondition.will_be_requested()
).with_label("a table it reads has a new data version")

#: When a model asset retrains: like ``AutomationCondition.eager()``, with "a dependency was
#: materialized" narrowed to "a dependency has a new data version" (table assets materialize
#: with ``committed: false`` and an unchanged data version when nothing changed), and with a
#: changed code version as a reason too.
RETRAIN_CONDITION = (
    (
        dg.AutomationCondition.newly_missing()
        | _dep_updated
        | dg.AutomationCondition.code_version_changed()
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("retrain on a new input table version or a code change")


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
        "tracking": t.tracking.model_dump(),
    }
    return build_config(spec.config_cls, base, t.models.get(name), *layers, origin=f"training.models.{name}")


def run_metadata(result) -> dict[str, Any]:
    """Materialization metadata of a training run: the metrics, the run directory, the table
    versions, the training curves (``figure_curves``, the run directory's ``curves.png``) and,
    when the run was tracked, its ``mlflow_run_id`` (``result.mlflow_run_id``, the id the
    trainer's ``save_run`` got from MLflow: MLflow is not asked again)."""
    meta: dict[str, Any] = {}
    for split in ("valid", "test"):
        for k, v in result.metrics.get(split, {}).items():
            meta[f"{split}/{k}"] = dg.MetadataValue.float(float(v))
    meta["best_epoch"] = int(result.metrics.get("best_epoch", -1))
    meta["select_metric"] = str(result.metrics.get("select_metric", ""))
    if result.run_dir is not None:
        meta["run_dir"] = dg.MetadataValue.path(str(result.run_dir))
        from trainers.curves import CURVES_FILE

        curves = (Path(result.run_dir) / CURVES_FILE).resolve()
        if curves.is_file():
            from orchestration.metadata import figure_metadata

            meta.update(figure_metadata({"curves": str(curves)}))
    mlflow_id = getattr(result, "mlflow_run_id", None)
    if mlflow_id:
        meta["mlflow_run_id"] = str(mlflow_id)
    meta["table_versions"] = dg.MetadataValue.json({t: r["version"] for t, r in result.tables.items()})
    tp = result.metrics.get("throughput", {})
    for k in ("loader_samples_per_s", "train_samples_per_s"):
        if k in tp:
            meta[k] = dg.MetadataValue.float(float(tp[k]))
    return meta


def model_code_version(spec, cfg) -> str:
    """A digest of the trainer's source (the modules of its entry point and of its config class)
    and of the model's validated configuration, without the fields that only say where to read
    and write (the warehouse, the runs folder, the MLflow tracking) or how to show progress."""
    h = hashlib.sha256()
    for obj in (spec.train, spec.config_cls):
        try:
            h.update(inspect.getsource(inspect.getmodule(obj)).encode())
        except (OSError, TypeError):  # no source (a frozen or generated module): the name only
            h.update(f"{obj.__module__}.{obj.__qualname__}".encode())
    fields = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(vars(cfg))
    for where in ("warehouse", "runs_root", "progress", "tracking"):
        fields.pop(where, None)
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class _ToRunLog(logging.Handler):
    """Forwards ``recfeat.train`` records to a Dagster run log (``context.log``)."""

    def __init__(self, log):
        super().__init__(level=logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log.log(record.levelno, record.getMessage())
        except Exception:  # noqa: BLE001 - a log line must never fail a training run
            self.handleError(record)


@contextlib.contextmanager
def training_log_to(log):
    """While the block runs, the trainer's ``recfeat.train`` INFO lines also go to ``log``."""
    logger = logging.getLogger(TRAIN_LOGGER)
    handler = _ToRunLog(log)
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _model_asset(name: str, spec, tables: list[str], code_version: str):
    @dg.asset(
        name=name,
        group_name=MODELS_GROUP,
        deps=[dg.AssetKey(t) for t in tables],
        description=spec.description,
        kinds={"pytorch"},
        op_tags=lane_tags("torch"),  # one training at a time in a run (orchestration/executor.py, lanes)
        owners=[MODELS_OWNER],
        code_version=code_version,
        automation_condition=RETRAIN_CONDITION,
    )
    def _model(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.MaterializeResult:
        from orchestration.training_process import train_in_child
        from trainers.registry import get_model

        cfg = model_config(settings.get(), name, {"progress": False})
        if shares_process():  # other steps run beside this one: train in a child process
            result = train_in_child(name, cfg, context.log.info)
        else:
            with training_log_to(context.log):
                result = get_model(name).train(cfg)
        context.log.info(f"{name}: run directory {result.run_dir}")
        return dg.MaterializeResult(metadata=run_metadata(result))

    return _model


def build(settings: Settings) -> Extension:
    from trainers.registry import get_model, model_names

    assets, deps = [], {}
    for name in model_names():
        spec = get_model(name)
        cfg = model_config(settings, name)  # a bad override fails here, naming the field
        deps[name] = list(spec.tables(cfg))
        assets.append(_model_asset(name, spec, deps[name], model_code_version(spec, cfg)))
    if not assets:
        return Extension()
    selection = dg.AssetSelection.assets(*[dg.AssetKey(n) for n in deps])
    job = dg.define_asset_job(RETRAIN_JOB, selection=selection, description="Retrain every registered model.")
    schedule = dg.ScheduleDefinition(
        name="retrain_models_daily", job=job, cron_schedule="0 5 * * *", execution_timezone="UTC",
        description="Retrain every model daily at 05:00 UTC, after the feature tables' nightly refresh.",
    )
    automation = dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=selection,
        minimum_interval_seconds=300,
        description="Evaluates the model assets' automation condition: retrain a model when a table it reads "
        "has a new committed version, or when its code version changed.",
    )
    return Extension(assets=assets, jobs=[job], schedules=[schedule], sensors=[automation])
