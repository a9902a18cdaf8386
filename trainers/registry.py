"""The model registry: model name -> trainer entry point, its config class and the tables it reads.

A model family registers itself when its module is imported (``register(ModelSpec(...))`` at
module level); :data:`MODEL_MODULES` lists the modules to import. ``recfeat train MODEL`` and the
Dagster model assets (``orchestration/models.py``) are generic over this registry.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainers.config import TrainerConfig

#: Modules that register models on import (a module that does not exist yet is skipped).
MODEL_MODULES: tuple[str, ...] = ("trainers.watch_time.trainer", "trainers.sasrec", "trainers.din",
                                 "trainers.multitask.trainer")


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model.

    ``train(config) -> RunResult`` trains, evaluates and writes a run directory.
    ``tables(config) -> list[str]`` names the warehouse tables it reads (the Dagster asset's deps).
    ``select_metric`` is the validation metric early stopping and model selection use.
    """

    name: str
    config_cls: type[TrainerConfig]
    train: Callable[[Any], Any]
    tables: Callable[[Any], list[str]]
    description: str
    select_metric: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        existing = _REGISTRY[spec.name]
        if (existing.config_cls, existing.train) != (spec.config_cls, spec.train):
            raise ValueError(f"a different model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_all() -> None:
    for module in MODEL_MODULES:
        parent = module.rsplit(".", 1)[0]
        if importlib.util.find_spec(parent) is None or importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module)


def get_model(name: str) -> ModelSpec:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no model named {name!r}; known: {sorted(_REGISTRY)}") from None


def model_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)
