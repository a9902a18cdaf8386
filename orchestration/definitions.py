"""The Dagster code location: ``dagster dev`` (from the repository root) loads ``defs``.

Settings come from ``recfeat.yaml`` in the working directory, ``$RECFEAT_CONFIG`` or the
defaults (see ``pipelines.settings``). The table assets and their checks come from the family
catalog through :mod:`orchestration.factory`; the model assets from :mod:`orchestration.models`.

``defs`` is built on its first read (as Dagster's loader reads it), not when this module is
imported: ``recfeat materialize`` imports :func:`build_definitions` for its own settings and
never needs the working directory's.
"""
from __future__ import annotations

import dagster as dg

from orchestration import models
from orchestration.automation import build_jobs, build_schedule, build_sensor
from orchestration.factory import build_family_definitions, daily_partitions
from orchestration.resources import build_resources
from pipelines.settings import Settings, load_settings


def build_definitions(settings: Settings, config_file: str | None = None, overrides: dict | None = None,
                      include_models: bool = True) -> dg.Definitions:
    """The code location for ``settings`` (loaded from ``config_file`` with ``overrides``, which runs
    reuse): every family of the catalog (:data:`pipelines.catalog.FAMILIES`) and every model.

    ``include_models=False``: the tables only, without the model assets, their checks, jobs,
    schedules and sensors (nor torch and the trainers, which building them imports)."""
    assets, checks = build_family_definitions(settings)
    trainers = models.build(settings) if include_models else None
    if trainers is not None:
        assets += trainers.assets
        checks += trainers.asset_checks
    jobs = build_jobs(assets, settings.active_source)
    schedules = [build_schedule(jobs[0])]
    sensors = [build_sensor(daily_partitions(settings), [k for a in assets if a.partitions_def is not None for k in a.keys])]
    if trainers is not None:
        jobs += trainers.jobs
        schedules += trainers.schedules
        sensors += trainers.sensors
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings, config_file, overrides),
    )


def __getattr__(name: str):
    """``defs``: the code location for the loaded settings, built on its first read (then kept)."""
    if name == "defs":
        globals()["defs"] = value = build_definitions(load_settings())
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """This module's names, ``defs`` included before it is built (Dagster's loader lists them)."""
    return sorted(set(globals()) | {"defs"})
