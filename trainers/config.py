"""Typed trainer configuration (pydantic), shared by every model family.

A model family subclasses :class:`TrainerConfig` with its own fields. The project settings
(``training:`` in ``recfeat.yaml``, see ``pipelines.settings.TrainingSettings``) supply the run
root, the seed, the date split and per-model overrides; :func:`build_config` merges them into one
validated config, and a bad value fails naming the field (``training.models.watch_time_fm.lr``).
The config a run used is saved in its run directory, so ``recfeat train`` can reproduce it.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.uris import check_not_blank, check_tracking_uri


class StrictConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DateSplit(StrictConfig):
    """Train / validation / test by whole UTC days of ``event_date``.

    The windows are consecutive and end at ``last_date`` (default: the last date present in the
    data): test = the last ``test_days`` days, validation the ``valid_days`` before, train the
    ``train_days`` before those. Earlier days are not read.
    """

    train_days: Annotated[int, Field(ge=1)] = 9
    valid_days: Annotated[int, Field(ge=1)] = 2
    test_days: Annotated[int, Field(ge=1)] = 3
    last_date: dt.date | None = Field(None, description="last test day (inclusive); null: the last date in the data")

    def windows(self, last: dt.date) -> dict[str, tuple[dt.date, dt.date]]:
        """``{split: (first, end_exclusive)}`` for ``last`` = the last test day."""
        end = (self.last_date or last) + dt.timedelta(days=1)
        test0 = end - dt.timedelta(days=self.test_days)
        valid0 = test0 - dt.timedelta(days=self.valid_days)
        train0 = valid0 - dt.timedelta(days=self.train_days)
        return {"train": (train0, valid0), "valid": (valid0, test0), "test": (test0, end)}


class TrackingConfig(StrictConfig):
    """Where a run is indexed in MLflow (``trainers/tracking.py``; project setting
    ``training.tracking``). ``uri`` null: the local store ``sqlite:///<dir>/mlflow.db``, artifacts
    under ``<dir>/artifacts``; ``dir`` null: ``mlflow`` beside ``runs_root``. Tracking is best
    effort: a store that fails never fails the run. ``uri`` must not hold a password and no
    field may be blank (``features/uris.py``; the same rule as the project setting).

    ``enabled`` defaults to false here and to true in the project settings: ``recfeat train``
    and the model assets (which build the config from ``training:``) track every run, while a
    config built directly (``build_config`` in a script or a test) tracks only when asked.
    """

    enabled: bool = Field(False, description="log the complete run to MLflow")
    uri: str | None = Field(None, description="MLflow tracking URI; null: the local store under dir")
    dir: str | None = Field(None, description="the local store's folder when uri is null; null: mlflow beside runs_root")
    experiment: str = Field("recfeat", description="MLflow experiment")

    # The same checks as the project setting training.tracking (pipelines/sections.py), here
    # too because a config is also built from training.models.<m>.tracking, --set,
    # --model-config and --from-run: a password never reaches config.json, MLflow or a log.
    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        return check_tracking_uri(v)

    @field_validator("dir", "experiment")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        return check_not_blank(v)


class TrainerConfig(StrictConfig):
    """Fields every trainer has. Subclasses add the model's own."""

    warehouse: str = Field("var/warehouse", description="warehouse root the tables are read from")
    runs_root: str = Field("var/runs", description="where run directories are written")
    seed: int = Field(61, description="seeds torch, numpy and the data order")
    epochs: Annotated[int, Field(ge=1)] = 50
    patience: Annotated[int, Field(ge=1)] = Field(5, description="epochs without a validation gain before stopping")
    batch_size: Annotated[int, Field(ge=1)] = 512
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    threads: Annotated[int, Field(ge=1)] = Field(1, description="torch intra-op threads (1: bit-for-bit reruns)")
    progress: bool = Field(True, description="tqdm progress bars and the per-epoch line on stderr (the line is always logged)")
    split: DateSplit = DateSplit()
    table_versions: dict[str, int] = Field(
        default_factory=dict, description="pin tables to committed versions (table -> version); default: current"
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="MLflow index of the run (where only: no effect on the model)"
    )

    @model_validator(mode="after")
    def _paths(self) -> "TrainerConfig":
        if not self.warehouse.strip():
            raise ValueError("warehouse must not be empty")
        return self


class ConfigError(ValueError):
    """A bad trainer configuration; the message names the field."""


def build_config(cls: type[TrainerConfig], *layers: dict[str, Any] | None, origin: str = "config") -> TrainerConfig:
    """Merge ``layers`` (later wins, nested dicts merged) and validate them as ``cls``."""
    data: dict[str, Any] = {}
    for layer in layers:
        if layer:
            data = _merge(data, layer)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"bad configuration in {origin}: {loc}: {msg}") from None


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "split.train_days=5"]`` -> a nested dict; values parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out
