"""The one place that builds the Spark session.

Local by default (``local[*]``), bound to 127.0.0.1, UTC session time zone, quiet logs; the
master URL and any Spark conf come from :class:`pipelines.settings.SparkSettings`, so the same
jobs run on a cluster by changing ``spark.master`` (and, for an object-store warehouse, the
``spark.hadoop.*`` conf of its filesystem).
"""
from __future__ import annotations

import os
import shutil
import sys

from pipelines.settings import SparkSettings

_SESSION = None


class SparkSetupError(RuntimeError):
    """Spark cannot start here; the message names the fix."""


def _check_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.path.exists(os.path.join(java_home, "bin", "java")):
        return
    if shutil.which("java"):
        return
    raise SparkSetupError(
        "Java was not found: Spark needs a Java 17 runtime. Install it (Debian/Ubuntu: "
        "`apt-get install -y openjdk-17-jre-headless`) or set JAVA_HOME to a JDK 17."
    )


LOG4J_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")


def spark_conf(settings: SparkSettings) -> dict[str, str]:
    """The Spark conf recfeat uses, with the user's ``spark.conf`` applied last."""
    java_opts = f"-Duser.timezone=UTC -Dlog4j2.configurationFile=file:{LOG4J_CONFIG}"
    conf = {
        "spark.app.name": settings.app_name,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.sources.partitionOverwriteMode": "static",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": settings.driver_memory,
        "spark.driver.extraJavaOptions": java_opts,
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.parquet.summary.metadata.level": "NONE",
    }
    if settings.master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    conf.update(settings.conf)
    return conf


def get_spark(settings: SparkSettings | None = None):
    """Return the process's Spark session, creating it on first use.

    One session per process: later calls return the same session (its conf is fixed at
    creation). Raises :class:`SparkSetupError` when Java is missing.
    """
    global _SESSION
    if _SESSION is not None and _SESSION._jsc is not None and not _SESSION._jsc.sc().isStopped():
        return _SESSION
    settings = settings or SparkSettings()
    _check_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(settings.master)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j/JVM start failures come in many types
        raise SparkSetupError(f"Spark failed to start with master {settings.master!r}: {exc}".splitlines()[0]) from exc
    session.sparkContext.setLogLevel("ERROR")
    _SESSION = session
    return session


def spark_path(path: str) -> str:
    """A path as Spark should read it: URIs unchanged, local paths as absolute file:// URIs."""
    if "://" in path:
        return path
    return "file://" + os.path.abspath(path)


def stop_spark() -> None:
    global _SESSION
    if _SESSION is not None:
        _SESSION.stop()
        _SESSION = None
