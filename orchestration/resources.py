"""Dagster resources: settings, warehouse and Spark, each a ``ConfigurableResource``.

Their fields default to the loaded project settings (``recfeat.yaml`` + environment), and can
be overridden per run in the launchpad or in run config.
"""
from __future__ import annotations

import json
from typing import Optional

import dagster as dg

from pipelines.settings import Settings, SparkSettings, load_settings
from pipelines.warehouse import Warehouse


class SettingsResource(dg.ConfigurableResource):
    """The project settings; ``config_file`` picks another ``recfeat.yaml``; ``overrides_json``
    (a JSON object of dotted field -> value, as the CLI's flags set them) wins over both."""

    config_file: Optional[str] = None
    overrides_json: Optional[str] = None

    def get(self) -> Settings:
        overrides = json.loads(self.overrides_json) if self.overrides_json else None
        return load_settings(self.config_file, overrides=overrides)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse at ``root`` (local path or fsspec URI)."""

    root: str
    keep_versions: int = 5
    pinned_json: Optional[str] = None  # table -> versions retention keeps (training.models.*.table_versions)

    def get(self) -> Warehouse:
        pinned = json.loads(self.pinned_json) if self.pinned_json else None
        return Warehouse(self.root, keep_versions=self.keep_versions, pinned=pinned)


class SparkResource(dg.ConfigurableResource):
    """The process's Spark session (built once by ``pipelines.spark.get_spark``)."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    conf: dict[str, str] = {}

    def get_session(self):
        from pipelines.spark import get_spark

        return get_spark(
            SparkSettings(
                master=self.master,
                driver_memory=self.driver_memory,
                shuffle_partitions=self.shuffle_partitions,
                conf=dict(self.conf),
            )
        )


def build_resources(
    settings: Settings, config_file: str | None = None, overrides: dict | None = None
) -> dict[str, dg.ConfigurableResource]:
    return {
        "settings": SettingsResource(
            config_file=config_file, overrides_json=json.dumps(overrides, default=str) if overrides else None
        ),
        "warehouse": WarehouseResource(
            root=settings.warehouse.root, keep_versions=settings.warehouse.keep_versions,
            pinned_json=json.dumps(settings.training.pinned_versions()) if settings.training.pinned_versions() else None,
        ),
        "spark": SparkResource(
            master=settings.spark.master,
            driver_memory=settings.spark.driver_memory,
            shuffle_partitions=settings.spark.shuffle_partitions,
            conf=dict(settings.spark.conf),
        ),
    }
