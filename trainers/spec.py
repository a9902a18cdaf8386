"""What a model module exposes to the registry: its :class:`ModelSpec` (``SPEC``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainers.config import TrainerConfig


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
