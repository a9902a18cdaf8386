"""Dagster resources: settings, warehouse and Spark, each a ``ConfigurableResource``.

Their fields default to the loaded project settings (``recfeat.yaml`` + environment), and can
be overridden per run in the launchpad or in run config.

Secrets never go into these fields as values: resource fields are stored with every run (its
config and the job snapshot). The object-store credentials Spark needs are ``dg.EnvVar``
references (:data:`SPARK_SECRET_ENV`), so the run records name the variable, and the value is
read from the environment of the process that runs the step.
"""
from __future__ import annotations

import json
import os
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
    retention_days: float = 7.0
    keep_versions: int = 5
    pinned_json: Optional[str] = None  # table -> versions retention keeps (training.models.*.table_versions)

    def get(self) -> Warehouse:
        pinned = json.loads(self.pinned_json) if self.pinned_json else None
        return Warehouse(self.root, retention_days=self.retention_days, keep_versions=self.keep_versions, pinned=pinned)


#: SparkResource field -> (the environment variable it is read from, the Hadoop conf key it sets).
SPARK_SECRET_ENV: dict[str, tuple[str, str]] = {
    "s3_access_key_id": ("AWS_ACCESS_KEY_ID", "fs.s3a.access.key"),
    "s3_secret_access_key": ("AWS_SECRET_ACCESS_KEY", "fs.s3a.secret.key"),
    "s3_session_token": ("AWS_SESSION_TOKEN", "fs.s3a.session.token"),
}


class SparkResource(dg.ConfigurableResource):
    """The process's Spark session (built once by ``pipelines.spark.get_spark``).

    ``s3_*``: S3 credentials for Spark's S3A filesystem; set them only to ``dg.EnvVar(...)``
    (``build_resources`` does, for the variables of :data:`SPARK_SECRET_ENV` that are set).
    They go into the session's Hadoop configuration, never into the Spark conf.
    """

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    conf: dict[str, str] = {}
    s3_access_key_id: Optional[str] = None
    s3_secret_access_key: Optional[str] = None
    s3_session_token: Optional[str] = None

    def get_session(self):
        from pipelines.spark import get_spark

        session = get_spark(
            SparkSettings(
                master=self.master,
                driver_memory=self.driver_memory,
                shuffle_partitions=self.shuffle_partitions,
                conf=dict(self.conf),
            )
        )
        secrets = {key: getattr(self, name) for name, (_, key) in SPARK_SECRET_ENV.items() if getattr(self, name)}
        if secrets:
            hadoop = session.sparkContext._jsc.hadoopConfiguration()
            for key, value in secrets.items():
                hadoop.set(key, value)
        return session


def spark_secret_fields(environ=None) -> dict[str, dg.EnvVar]:
    """``SparkResource`` secret fields as ``dg.EnvVar`` references, for the variables that are set."""
    environ = os.environ if environ is None else environ
    return {name: dg.EnvVar(var) for name, (var, _) in SPARK_SECRET_ENV.items() if environ.get(var)}


def build_resources(
    settings: Settings, config_file: str | None = None, overrides: dict | None = None
) -> dict[str, dg.ConfigurableResource]:
    return {
        "settings": SettingsResource(
            config_file=config_file, overrides_json=json.dumps(overrides, default=str) if overrides else None
        ),
        "warehouse": WarehouseResource(
            root=settings.warehouse.root, retention_days=settings.warehouse.retention_days,
            keep_versions=settings.warehouse.keep_versions,
            pinned_json=json.dumps(settings.training.pinned_versions()) if settings.training.pinned_versions() else None,
        ),
        "spark": SparkResource(
            master=settings.spark.master,
            driver_memory=settings.spark.driver_memory,
            shuffle_partitions=settings.spark.shuffle_partitions,
            conf=dict(settings.spark.conf),  # secret-looking keys are refused when the settings load
            **spark_secret_fields(),
        ),
    }
