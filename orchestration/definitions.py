"""The Dagster code location: ``dagster dev`` (from the repository root) loads ``defs``.

Settings come from ``recfeat.yaml`` in the working directory, ``$RECFEAT_CONFIG`` or the
defaults (see ``pipelines.settings``); the asset graph depends on the active source.
"""
from __future__ import annotations

import dagster as dg

from orchestration.assets import build_assets, daily_partitions
from orchestration.automation import build_jobs, build_schedule, build_sensor
from orchestration.checks import build_checks
from orchestration.extensions import load_extensions
from orchestration.resources import build_resources
from pipelines.settings import Settings, load_settings


def build_definitions(settings: Settings, config_file: str | None = None, overrides: dict | None = None) -> dg.Definitions:
    """The code location for ``settings`` (loaded from ``config_file`` with ``overrides``, which runs reuse)."""
    partitions = daily_partitions(settings)
    assets = build_assets(settings)
    checks = build_checks(settings)
    extensions = load_extensions(settings)
    for ext in extensions:
        assets += ext.assets
        checks += ext.asset_checks
    jobs = build_jobs(assets, settings.active_source)
    schedules = [build_schedule(jobs[0])]
    sensors = [build_sensor(partitions, [k for a in assets if a.partitions_def is not None for k in a.keys])]
    for ext in extensions:
        jobs += ext.jobs
        schedules += ext.schedules
        sensors += ext.sensors
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings, config_file, overrides),
    )


defs = build_definitions(load_settings())
