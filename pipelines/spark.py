"""The one place that builds the Spark session.

A session can also be started ahead of its first use, in a background thread
(:func:`start_in_background`), so that the JVM starts while the caller does other work; the
first :func:`get_spark` waits for it. Creation is serialised: never two sessions.

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
import threading
import time

from pipelines.sections import SparkSettings

_SESSION = None
#: Held while a session is being created, so two threads never create two sessions.
_CREATE_LOCK = threading.Lock()
_WARM: "WarmStart | None" = None


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


def _alive(session) -> bool:
    return session is not None and session._jsc is not None and not session._jsc.sc().isStopped()


def _same_session_settings(a: SparkSettings, b: SparkSettings) -> bool:
    """Whether ``a`` and ``b`` would build the same session (same master, same effective conf)."""
    return a.master == b.master and spark_conf(a) == spark_conf(b)


def session_of(spark):
    """``spark`` itself, or the session a zero-argument callable returns: jobs with a local engine
    take a callable, so that a build that needs no Spark never starts it."""
    return spark() if callable(spark) else spark


def get_spark(settings: SparkSettings | None = None):
    """Return the process's Spark session, creating it on first use.

    One session per process: later calls return the same session (its conf is fixed at
    creation). Raises :class:`SparkSetupError` when Java is missing, or, for a local master,
    when the workers' Python (``PYSPARK_PYTHON`` or ``spark.pyspark.python``) cannot import
    the project's packages.

    While a :func:`start_in_background` start is under way this waits for it and returns its
    session. If that start failed, the error it raised is raised here (the same exception, with
    the background thread's traceback), once, when ``settings`` would build the same session;
    with other settings (or on a later call) the start is tried again in this thread.
    """
    global _WARM
    warm = _WARM
    if warm is not None and threading.current_thread() is not warm.thread:
        warm.wait()
        if warm.error is not None:
            _WARM = None  # the failure is reported once; a later call tries again
            if settings is None or _same_session_settings(settings, warm.settings):
                raise warm.error
    return _create(settings)


def _create(settings: SparkSettings | None):
    global _SESSION
    with _CREATE_LOCK:
        if _alive(_SESSION):
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


class WarmStart:
    """A Spark session being created in a background thread (:func:`start_in_background`).

    ``created``: whether this start created the session (``False`` when the process already had
    one); the caller that asked for the start owns such a session and stops it when done
    (:meth:`stop_if_created`). ``error``: the exception the start raised, if any.
    ``seconds``: how long the start took (wall clock), once done. A session it created then runs
    one tiny warm-up query in the same thread, concurrently with any step that already uses it
    (``warmed`` once it has run).
    """

    def __init__(self, settings: SparkSettings):
        self.settings = settings
        self.created = False
        self.session = None
        self.error: BaseException | None = None
        self.seconds: float | None = None
        self.warmed = False  # the warm-up query has run (or failed)
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="recfeat-spark-start", daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            had = _alive(_SESSION)
            self.session = _create(self.settings)
            self.created = not had
        except BaseException as exc:  # handed to the thread that asks for the session
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - t0
            self._done.set()
        if self.error is None and self.created:
            self._warm_up()

    def _warm_up(self) -> None:
        """One tiny query (a shuffle and an aggregate), after :meth:`wait` returns: the JVM loads
        and compiles the query path in this thread, so the first step's first query does not pay
        all of it. Its own failure is never the step's: a step that needs the session gets it (and
        any error of its own) whatever happens here."""
        try:
            self.session.range(64, numPartitions=2).selectExpr("id % 4 AS k").groupBy("k").count().collect()
        except Exception:  # a session stopped meanwhile, or any other trouble: the steps report their own
            pass
        finally:
            self.warmed = True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self) -> "WarmStart":
        """Block until the start has finished (successfully or not)."""
        self._done.wait()
        return self

    def stop_if_created(self) -> None:
        """Wait for the start; stop the session if this start created it and it still runs.

        A session some other caller already stopped (the Dagster Spark resource stops one it
        started) is left alone, and so is one the process had before the start."""
        global _WARM
        self.wait()
        if _WARM is self:
            _WARM = None
        if self.created and self.session is not None and self.session is _SESSION and _alive(self.session):
            stop_spark()


def start_in_background(settings: SparkSettings | None = None) -> WarmStart:
    """Start creating the process's session in a daemon thread and return at once.

    The JVM then starts while this thread does other work; the first :func:`get_spark` waits
    for it (and raises its error, see there). The current start is returned as is while it is
    under way, while its failure is not yet reported, and while the session it made runs;
    with a session the process already had the returned start is done at once, ``created``
    false.
    """
    global _WARM
    with _CREATE_LOCK:
        current = _WARM
        if current is not None and (
            not current.done or current.error is not None or (current.session is _SESSION and _alive(_SESSION))
        ):
            return current  # under way, failed and not yet reported, or done and its session still runs
        warm = WarmStart(settings or SparkSettings())
        if _alive(_SESSION):
            warm.session = _SESSION
            warm.seconds = 0.0
            warm._done.set()
            return warm
        _WARM = warm
    warm.thread.start()
    return warm


def start_under_way() -> "WarmStart | None":
    """The background start still under way, if any; never waits (:func:`start_in_background`
    takes the creation lock, which that start's thread holds until its session is up)."""
    warm = _WARM
    return warm if warm is not None and not warm.done else None


class LazySession:
    """A Spark session made on first use: ``get`` (e.g. a Dagster ``SparkResource``'s
    ``get_session``, which waits for a warm start) is called the first time any session
    attribute is read, and only then.

    A step that can finish without Spark (a table check of a small table runs on Arrow and
    pandas: docs/quality.md) therefore never starts or waits for the JVM. ``time_zone`` is the
    session time zone the settings give (``spark.sql.session.timeZone`` of :func:`spark_conf`),
    known without a session; :attr:`started` says whether ``get`` was called.
    """

    def __init__(self, get, settings: SparkSettings | None = None):
        self._get = get
        self._session = None
        self.time_zone = spark_conf(settings or SparkSettings()).get("spark.sql.session.timeZone") or "UTC"

    @property
    def started(self) -> bool:
        return self._session is not None

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if self._session is None:
            self._session = self._get()
        return getattr(self._session, name)


def spark_path(path: str) -> str:
    """A path as Spark should read it: URIs unchanged, local paths as absolute file:// URIs."""
    if "://" in path:
        return path
    return "file://" + os.path.abspath(path)


def stop_spark() -> None:
    global _SESSION
    with _CREATE_LOCK:
        if _SESSION is not None:
            _SESSION.stop()
            _SESSION = None
