"""Configuration of the quality suites: :class:`QualitySettings` (``quality:`` in ``recfeat.yaml``).

Defined here, next to the code that uses it; ``pipelines.settings`` imports it into the project
settings. This module imports nothing from ``pipelines.settings`` (which imports it).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config import StrictModel

#: Default ``max_rejection_rate`` (also used for a settings object that predates the field).
DEFAULT_MAX_REJECTION_RATE = 0.05


class QualitySettings(StrictModel):
    """Configuration of the quality suites (``quality:`` in ``recfeat.yaml``; docs/quality.md)."""

    row_count_min_ratio: float = Field(
        0.2, ge=0, description="lowest allowed rows / rows of the previous partition (or version); 0 disables the lower bound"
    )
    row_count_max_ratio: float = Field(
        5.0, gt=0, description="highest allowed rows / rows of the previous partition (or version)"
    )
    rating_min: float = Field(0.0, description="lowest allowed events.rating (where present), inclusive")
    rating_max: float = Field(5.0, description="highest allowed events.rating (where present), inclusive")
    referential_integrity: Literal["warning", "error"] = Field(
        "warning",
        description="severity of events.user_id in users / events.item_id in items (warning: sources may log unknown ids)",
    )
    max_rejection_rate: float = Field(
        DEFAULT_MAX_REJECTION_RATE,
        ge=0,
        le=1,
        description="highest rejected / records_in of the latest ingestion run before ingest_runs warns (never blocks)",
    )
    engine: Literal["auto", "spark", "pandas"] = Field(
        "auto",
        description="where checks run: auto = in the process (GX on pandas, invariant counters on Arrow) for tables "
        "up to pandas_max_rows rows, else on Spark; spark = always Spark; pandas = always in the process",
    )
    pandas_max_rows: int = Field(
        2_000_000, ge=0, description="engine auto: largest table checked in the process, without Spark"
    )
    keep_validations: int = Field(20, ge=1, description="validation results (and data docs pages) kept per suite")
    reports_dir: str | None = Field(
        None,
        description="local folder for reports; default <warehouse root>/reports (a remote warehouse: ./var/reports)",
    )

    def in_process(self, rows: int) -> bool:
        """Whether a table of ``rows`` rows is checked in this process (GX on pandas, the family's
        invariant counter on Arrow) rather than on Spark: ``engine`` pandas, or auto and at most
        ``pandas_max_rows`` rows. The driver then holds the table (docs/quality.md)."""
        return self.engine == "pandas" or (self.engine == "auto" and rows <= self.pandas_max_rows)

    @model_validator(mode="after")
    def _ordered(self) -> "QualitySettings":
        if self.row_count_min_ratio > self.row_count_max_ratio:
            raise ValueError("row_count_min_ratio must not exceed row_count_max_ratio")
        if self.rating_min > self.rating_max:
            raise ValueError("rating_min must not exceed rating_max")
        return self


def settings_params(settings) -> dict:
    """The expectation parameters that come from the quality settings."""
    return {
        "rating_min": settings.rating_min,
        "rating_max": settings.rating_max,
        "max_rejection_rate": getattr(settings, "max_rejection_rate", DEFAULT_MAX_REJECTION_RATE),
    }
