"""What every ``recfeat`` command shares: the one-line error, settings from the flags, the warehouse."""
from __future__ import annotations

import os


class CliError(Exception):
    """A failure reported as one line."""


def overrides(args, **extra) -> dict:
    """Dotted settings overrides from the command's flags (they reach Dagster runs too)."""
    out = dict(extra)
    if getattr(args, "warehouse", None):
        out["warehouse.root"] = os.path.abspath(args.warehouse) if "://" not in args.warehouse else args.warehouse
    return out


def settings_for(args, **extra):
    """The project settings for the command's ``--config`` and flags."""
    from pipelines.settings import load_settings

    return load_settings(args.config, overrides=overrides(args, **extra))


def warehouse_for(settings):
    from pipelines.warehouse import Warehouse

    return Warehouse(settings.warehouse.root, retention_days=settings.warehouse.retention_days,
                     keep_versions=settings.warehouse.keep_versions, pinned=settings.training.pinned_versions())


def ensure_dagster_home() -> None:
    """Runs launched from the CLI are recorded in $DAGSTER_HOME (default var/dagster), with the
    project's instance configuration: telemetry off, one writer per table (orchestration/instance.py)."""
    from orchestration.instance import ensure_dagster_home as ensure

    ensure()


def log_level(args) -> str:
    """Dagster's console log: INFO with ``-v``; otherwise only critical lines, since the command
    prints one progress line per step and reports a failed step itself in one line (the whole
    log stays in the run, in $DAGSTER_HOME)."""
    return "INFO" if getattr(args, "verbose", False) else "CRITICAL"
