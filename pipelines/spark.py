"""The one place that builds the Spark session.

Local by default (``local[*]``), bound to 127.0.0.1, UTC session time zone, quiet logs; the
master URL and any Spark conf come from :class:`pipelines.settings.SparkSettings`, so the same
jobs run on a cluster by changing ``spark.master`` (and, for an object-store warehouse, the
``spark.hadoop.*`` conf of its filesystem; docs/cluster.md).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from pipelines.sections import SparkSettings

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


#: What Spark's Python workers import: the Arrow and pandas bridges and the project's packages.
WORKER_MODULES = ("pyarrow", "pandas", "numpy", "features", "pipelines")
_PROBED: set[str] = set()


def _worker_python(conf: dict[str, str]) -> str:
    """The interpreter Spark starts its Python workers with (conf wins over the environment).

    A session built from Python (not through ``spark-submit``) takes its workers' interpreter
    from ``PYSPARK_PYTHON`` in the driver's environment only and ignores the conf
    ``spark.pyspark.python``; :func:`get_spark` therefore copies that conf into
    ``PYSPARK_PYTHON`` before the session starts, so the conf wins as it does under
    ``spark-submit``. On a cluster this path is what every executor runs: it must exist there.
    """
    return conf.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable


def check_worker_python(python: str) -> None:
    """Fail with one line unless ``python`` runs and imports :data:`WORKER_MODULES`.

    Without this a worker interpreter that lacks them shows up only later, as a
    ``PythonException`` in the first Python task. Cheap: nothing runs when ``python`` is this
    process's interpreter, and each other interpreter is probed once per process.
    """
    path = shutil.which(python) or python
    if os.path.abspath(path) == os.path.abspath(sys.executable) or path in _PROBED:
        return
    fix = (
        f"point PYSPARK_PYTHON at the project's environment (for example {sys.executable}), "
        "or unset it to use the driver's interpreter"
    )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise SparkSetupError(f"Spark's Python workers would run PYSPARK_PYTHON={python}, which is not an executable: {fix}")
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)"
    try:
        proc = subprocess.run(
            [path, "-c", probe, *WORKER_MODULES], capture_output=True, text=True, timeout=120, cwd=os.getcwd()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SparkSetupError(f"Spark's Python workers would run PYSPARK_PYTHON={python}, which fails to start ({exc}): {fix}") from None
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise SparkSetupError(
            f"Spark's Python workers would run PYSPARK_PYTHON={python}, which cannot import the project's packages "
            f"({why}): {fix}"
        )
    _PROBED.add(path)


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
    creation). Raises :class:`SparkSetupError` when Java is missing, or, for a local master,
    when the workers' Python (``PYSPARK_PYTHON`` or ``spark.pyspark.python``) cannot import
    the project's packages.
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
    conf = spark_conf(settings)
    if conf.get("spark.pyspark.python"):
        os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]  # else ignored (see _worker_python)
    if settings.master.startswith("local"):
        # On a cluster the workers' interpreter lives on other machines; here it is probed.
        check_worker_python(_worker_python(conf))
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(settings.master)
    for key, value in conf.items():
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
