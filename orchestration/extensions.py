"""What a non-table part of the code location (the model trainers) adds to the definitions.

Table families need no such module: :mod:`orchestration.factory` builds theirs from the catalog.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Extension:
    """Dagster definitions beyond the table families' (model assets, their jobs and sensors)."""

    assets: list = field(default_factory=list)
    asset_checks: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    schedules: list = field(default_factory=list)
    sensors: list = field(default_factory=list)
