"""Dagster resources: settings, warehouse and Spark, each a ``ConfigurableResource`` (Spark's
is ``dagster_pyspark``'s ``LazyPySparkResource``).

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
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

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


class SparkResource(LazyPySparkResource):
    """The run's Spark session: ``dagster_pyspark``'s ``LazyPySparkResource`` (``spark_config``,
    ``spark_session``, ``spark_context``), built by ``pipelines.spark.get_spark``.

    It is a ``LazyPySparkResource`` and not an eager ``PySparkResource`` because a step that
    never touches Spark (``users``, ``items``, the models) should not pay the JVM start (8 s on
    two cores). It overrides how the session is made because ``get_spark`` is the one place
    that builds sessions in this project: the project's Spark conf (UTC, Arrow, quiet logs,
    loopback for a local master) under ``spark_config``, the Java check and the probe of the
    workers' Python, each failing in one line.

    Lifecycle: one session per run. It is created on first use (:attr:`spark_session`, or
    :meth:`get_session`), shared by every step of an in-process run, and stopped in
    ``teardown_after_execution`` when this resource started it (a session the process already
    had, such as a test's, is left running).

    ``s3_*``: S3 credentials for Spark's S3A filesystem; set them only to ``dg.EnvVar(...)``
    (``build_resources`` does, for the variables of :data:`SPARK_SECRET_ENV` that are set).
    They go into the session's Hadoop configuration, never into ``spark_config``.
    """

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    spark_config: dict[str, str] = {}  # Spark conf over the project's (settings ``spark.conf``)
    s3_access_key_id: Optional[str] = None
    s3_secret_access_key: Optional[str] = None
    s3_session_token: Optional[str] = None
    _started_here: bool = PrivateAttr(default=False)

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def _init_session(self) -> None:
        if self._spark_session is not None:
            return
        import pipelines.spark as spark

        existing = spark._SESSION
        had = existing is not None and existing._jsc is not None and not existing._jsc.sc().isStopped()
        session = spark.get_spark(
            SparkSettings(
                master=self.master,
                driver_memory=self.driver_memory,
                shuffle_partitions=self.shuffle_partitions,
                conf=dict(self.spark_config),
            )
        )
        secrets = {key: getattr(self, name) for name, (_, key) in SPARK_SECRET_ENV.items() if getattr(self, name)}
        if secrets:
            hadoop = session.sparkContext._jsc.hadoopConfiguration()
            for key, value in secrets.items():
                hadoop.set(key, value)
        self._spark_session = session
        self._started_here = not had

    def get_session(self):
        """The session (created on first use); what the table assets and checks call."""
        return self.spark_session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._spark_session is not None and self._started_here:
            from pipelines.spark import stop_spark

            stop_spark()
        self._spark_session = None


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
            spark_config=dict(settings.spark.conf),  # secret-looking keys are refused when the settings load
            **spark_secret_fields(),
        ),
    }
