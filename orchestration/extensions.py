"""Feature families beyond the core graph register their Dagster definitions here.

Each family (labels, look-alikes, trainers, ...) lives in its own ``orchestration`` module with a
``build(settings) -> Extension`` function; ``FAMILY_MODULES`` lists them in load order.
``orchestration.definitions`` merges every extension into the code location, and the CLI's
``recfeat materialize`` sees their assets like any other.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from pipelines.settings import Settings

# Module names under ``orchestration`` whose ``build(settings)`` returns an Extension.
FAMILY_MODULES: tuple[str, ...] = ("models", "labels", "lookalike")


@dataclass
class Extension:
    """The Dagster definitions one feature family adds to the code location."""

    assets: list = field(default_factory=list)
    asset_checks: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    schedules: list = field(default_factory=list)
    sensors: list = field(default_factory=list)


def load_extensions(settings: Settings) -> list[Extension]:
    """Build every registered family's definitions for ``settings``."""
    out = []
    for name in FAMILY_MODULES:
        module = importlib.import_module(f"orchestration.{name}")
        out.append(module.build(settings))
    return out
