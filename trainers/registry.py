"""The model registry: model name -> trainer entry point, its config class and the tables it reads.

An explicit list: each model module exposes its :class:`~trainers.spec.ModelSpec` (``SPEC``, or
one per variant) and :data:`MODELS` names them, imported here. A model module that is missing
or broken is an ``ImportError`` when this module is imported, never a model that silently
disappears. ``recfeat train MODEL`` and the Dagster model assets (``orchestration/models.py``)
are generic over this registry.

Importing it imports every trainer, so torch; the Dagster definitions build one asset per model
from it, which needs each config class anyway (a bad ``training.models`` override fails at load).
"""
from __future__ import annotations

from trainers import din, fair, sasrec
from trainers.rar import trainer as rar
from trainers.multitask import trainer as multitask
from trainers.spec import ModelSpec
from trainers.watch_time import trainer as watch_time

__all__ = ["MODELS", "ModelSpec", "get_model", "index", "model_names"]

#: Every trainable model.
MODELS: tuple[ModelSpec, ...] = (*watch_time.SPECS, sasrec.SPEC, din.SPEC, multitask.SPEC, fair.SPEC, rar.SPEC)


def index(models: tuple[ModelSpec, ...]) -> dict[str, ModelSpec]:
    """Name -> spec; ``ValueError`` when two specs share a name."""
    out: dict[str, ModelSpec] = {}
    for spec in models:
        if spec.name in out:
            raise ValueError(f"two models are named {spec.name!r}")
        out[spec.name] = spec
    return out


_BY_NAME = index(MODELS)


def get_model(name: str) -> ModelSpec:
    """The spec of model ``name``; ``KeyError`` naming the known models if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no model named {name!r}; known: {sorted(_BY_NAME)}") from None


def model_names() -> list[str]:
    return sorted(_BY_NAME)
