"""The jobs on a real Spark standalone cluster (a master and two workers, started from the
pyspark wheel) write the same tables as the same jobs in ``local[2]``.

The cluster tests (and two checks of what they rely on: the table comparison, and that
``spark.pyspark.python`` names the executors' interpreter):

* ``test_spark_jobs_on_a_standalone_cluster_equal_local`` (``slow``): a small synthetic source
  ingested with the Spark engine (``ingest.engine: spark``: each source file is read by an
  executor task, which writes the stage), ``user_sequences``/``rote_features`` built from it
  (each executor task writes its Parquet files into the warehouse) and ``user_vectors`` with
  Spark ML's ALS (the engine of a cluster-sized run), once on the cluster and once in
  ``local[2]``; every table equal.
* ``test_whole_pipeline_on_a_standalone_cluster_equals_local`` (``cluster``, run by hand with
  ``make test-cluster``): ``recfeat demo`` (every asset and check, every model on a one-epoch
  budget) with ``spark.master: spark://127.0.0.1:<port>``, and again with ``local[2]``; every
  table of both warehouses equal.

The warehouse is a local temporary folder: the driver and the workers run on this machine, so
both reach it at the same path (on a real cluster it is an object store or a shared mount,
docs/cluster.md). Each run is a separate ``recfeat`` process, so each has its own Spark session.

Tables are compared order-independently (rows sorted), with floats equal within
:data:`FLOAT_REL_TOL` (relative) or :data:`FLOAT_ABS_TOL`, and with the columns of :data:`RUN_DEPENDENT` left
out: those record when, or as which run, a table was written, and differ between any two runs.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from tests.cluster_util import StandaloneCluster

REPO = Path(__file__).resolve().parents[2]

#: Relative tolerance floats are compared to. Spark combines the partial results of an aggregate
#: in the order tasks finish, so a floating-point aggregate may differ in its last bits between
#: two runs (measured: ``duration_stats.wt_std_s``, and the ``wtg``/``wtg_gain`` labels derived
#: from it, differ by at most 1.2e-15 relative between the cluster and the local run). A
#: tolerance, not rounding: two values a few ulps apart can round to different digits.
FLOAT_REL_TOL = 1e-9
#: Absolute tolerance for floats near zero (the same last-bit differences on values ~0).
FLOAT_ABS_TOL = 1e-12

#: Columns that legitimately differ between two runs of the same pipeline on the same data,
#: with why. Any other difference is a defect.
RUN_DEPENDENT: dict[str, dict[str, str]] = {
    "ingest_runs": {
        "run_id": "a new id for every ingestion run",
        "started_at": "wall-clock time the run started",
        "finished_at": "wall-clock time the run ended",
    },
    "rejected_events": {
        "run_id": "the ingestion run that rejected the record",
        "rejected_at": "wall-clock time of the rejection",
        "rejected_date": "UTC day of rejected_at",
    },
    "dialogue_ingest_runs": {
        "run_id": "a new id for every ingestion run",
        "started_at": "wall-clock time the run started",
        "finished_at": "wall-clock time the run ended",
    },
    "dialogue_turns": {"run_id": "the ingestion run that wrote the turn"},
    "rejected_dialogue_turns": {
        "run_id": "the ingestion run that rejected the record",
        "rejected_at": "wall-clock time of the rejection",
        "rejected_date": "UTC day of rejected_at",
    },
}


def _split(value, floats: list[float]):
    """``value`` without its floats (each replaced by a marker and appended to ``floats``), in a
    form that compares and sorts the same for equal contents."""
    if isinstance(value, float):
        floats.append(value)
        return "<float>"
    if isinstance(value, (list, tuple)):
        return tuple(_split(v, floats) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _split(v, floats)) for k, v in value.items()))
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def _cell(value) -> tuple:
    """A cell as (its exact part, its floats)."""
    floats: list[float] = []
    exact = _split(value, floats)
    return exact, tuple(floats)


def _floats_close(xs: tuple, ys: tuple) -> bool:
    return len(xs) == len(ys) and all(
        (math.isnan(x) and math.isnan(y)) or x == y or math.isclose(x, y, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
        for x, y in zip(xs, ys))


def cells_equal(a: tuple, b: tuple) -> bool:
    """Two cells of :func:`table_rows` are equal: the same exact part, floats within tolerance."""
    return a[0] == b[0] and _floats_close(a[1], b[1])


def rows_equal(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(cells_equal(x, y) for x, y in zip(a, b))


def _sort_key(row: tuple):
    # the exact parts first (identical in two equal tables), then the floats by value: rows of
    # equal exact parts are ordered by floats that agree to the tolerance, so both tables sort
    # alike unless two such rows lie within the tolerance of each other (then they are equal anyway)
    return repr(tuple(c[0] for c in row)), tuple((math.isnan(f), 0.0 if math.isnan(f) else f) for c in row for f in c[1])


def table_rows(table: pa.Table, drop: set[str]) -> tuple[list[str], list[tuple]]:
    """The column names (sorted, without ``drop``) and the rows (each cell as :func:`_cell`), sorted."""
    names = sorted(n for n in table.column_names if n not in drop)
    rows = [tuple(_cell(r[n]) for n in names) for r in table.select(names).to_pylist()]
    return names, sorted(rows, key=_sort_key)


def same_rows(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(rows_equal(x, y) for x, y in zip(a, b))


def warehouse_differences(a_root: str, b_root: str) -> list[str]:
    """What differs between the tables of two warehouses, one line each (empty: equal)."""
    from pipelines.warehouse import Warehouse

    a, b = Warehouse(a_root), Warehouse(b_root)
    if a.tables() != b.tables():
        return [f"tables differ: {a.tables()} vs {b.tables()}"]
    out = []
    for name in a.tables():
        drop = set(RUN_DEPENDENT.get(name, {}))
        cols_a, rows_a = table_rows(a.read_arrow(name), drop)
        cols_b, rows_b = table_rows(b.read_arrow(name), drop)
        if cols_a != cols_b:
            out.append(f"{name}: columns differ: {cols_a} vs {cols_b}")
        elif len(rows_a) != len(rows_b):
            out.append(f"{name}: {len(rows_a)} rows vs {len(rows_b)}")
        elif not same_rows(rows_a, rows_b):
            bad = sorted({c for ra, rb in zip(rows_a, rows_b) for c, x, y in zip(cols_a, ra, rb) if not cells_equal(x, y)})
            out.append(f"{name}: values differ in columns {bad}")
    return out


def test_warehouse_differences_sees_values_rows_and_tables_but_not_order_or_run_columns(tmp_path):
    from features.dimensions import USERS
    from pipelines.warehouse import Warehouse

    users = pa.table({"user_id": ["u1", "u2", "u3"], "source": ["s", "s", "s"], "age": [1.0, 2.0, 3.0]})
    roots = {name: str(tmp_path / name) for name in ("a", "b", "c", "d", "e")}
    whs = {name: Warehouse(root) for name, root in roots.items()}
    whs["a"].write_arrow(USERS, users)
    whs["b"].write_arrow(USERS, users.take([2, 0, 1]))  # the same rows in another order
    whs["c"].write_arrow(USERS, users.set_column(2, "age", pa.array([1.0, 2.0, 3.5])))
    whs["d"].write_arrow(USERS, users.slice(0, 2))
    assert warehouse_differences(roots["a"], roots["b"]) == []
    assert warehouse_differences(roots["a"], roots["c"]) == ["users: values differ in columns ['age']"]
    assert warehouse_differences(roots["a"], roots["d"]) == ["users: 3 rows vs 2"]
    assert warehouse_differences(roots["a"], roots["e"]) == ["tables differ: ['users'] vs []"]
    # A column left out (as the run-dependent ones are) is not compared.
    changed = users.set_column(2, "age", pa.array([9.0, 8.0, 7.0]))
    assert same_rows(table_rows(users, {"age"})[1], table_rows(changed, {"age"})[1])
    assert not same_rows(table_rows(users, set())[1], table_rows(changed, set())[1])

    def same(a: dict, b: dict) -> bool:
        return same_rows(table_rows(pa.table(a), set())[1], table_rows(pa.table(b), set())[1])

    # Floats within the tolerance compare equal, also a few ulps apart across a rounding boundary
    # (0.1 + 0.2 vs 0.3; 1.234567890125 and the next float up round to different 12-digit values);
    # nested lists compare by value and in order; NaN equals NaN.
    assert same({"x": [0.1 + 0.2], "l": [[1, 2]]}, {"x": [0.3], "l": [[1, 2]]})
    edge = 1.234567890125
    assert f"{edge:.12g}" != f"{math.nextafter(edge, 2.0):.12g}"
    assert same({"x": [edge, 5.0]}, {"x": [5.0, math.nextafter(edge, 2.0)]})
    assert same({"l": [[float("nan"), 1.5]]}, {"l": [[float("nan"), 1.5]]})
    assert not same({"x": [1.0]}, {"x": [1.0 + 1e-6]})
    assert not same({"l": [[1, 2]]}, {"l": [[2, 1]]})
    assert not same({"l": [[1.0, 2.0]]}, {"l": [[1.0, 2.0, 3.0]]})


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


SMALL_PIPELINE = """
import sys
from pipelines.ingest import ingest_events
from pipelines.lookalike import LookalikeSettings, build_user_vectors_table
from pipelines.sequences import SequenceSettings, build_sequences_table
from pipelines.settings import SourceConfig, SparkSettings, SyntheticSettings
from pipelines.sources import adapter_for
from pipelines.spark import get_spark, stop_spark
from pipelines.synthetic import generate
from pipelines.warehouse import Warehouse

master, src, root = sys.argv[1:4]
spark = get_spark(SparkSettings(master=master, shuffle_partitions=2, driver_memory="1g",
                                conf={"spark.executor.memory": "1g"}))
print("master", spark.sparkContext.master)
generate(src, SyntheticSettings(events=3000, days=3, users=60, items=80, seed=5))
wh = Warehouse(root)
result = ingest_events(spark, wh, adapter_for("synthetic", SourceConfig(kind="synthetic", path=src)), engine="spark")
build_sequences_table(spark, wh, SequenceSettings(max_len=20, rote_storage="table"))  # both tables' writes
# The behaviour block with Spark ML's ALS: the engine a cluster-sized run uses (als_engine auto
# switches to it above als_local_max_entries pairs).
build_user_vectors_table(spark, wh, LookalikeSettings(als_engine="spark", als_iterations=3))
print("events", result.new_events, "sequences", wh.manifest("user_sequences").row_count,
      "als", wh.manifest("user_vectors").producer.get("als_engine"))
stop_spark()
"""


def _small_run(master: str, folder: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", SMALL_PIPELINE, master, str(folder / "src"), str(folder / "warehouse")],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"master {master}" in proc.stdout
    return proc.stdout


@pytest.mark.slow
def test_spark_jobs_on_a_standalone_cluster_equal_local(tmp_path):
    with StandaloneCluster(tmp_path / "cluster", workers=2, cores=1, memory="1g") as cluster:
        out = _small_run(cluster.master_url, tmp_path / "on-cluster")
        apps = cluster.status()["completedapps"]
    assert len(apps) == 1, apps  # one application (the run's session) ...
    assert _workers_with_executors(tmp_path / "cluster") == {"worker-0", "worker-1"}  # ... on both workers
    _small_run("local[2]", tmp_path / "local")
    assert re.search(r"^events [1-9]\d* sequences [1-9]\d* als spark$", out, re.M), out
    from pipelines.warehouse import Warehouse

    tables = Warehouse(str(tmp_path / "local" / "warehouse")).tables()
    assert {"events", "ingest_runs", "user_sequences", "rote_features", "user_vectors"} <= set(tables)
    assert warehouse_differences(str(tmp_path / "local" / "warehouse"), str(tmp_path / "on-cluster" / "warehouse")) == []


def _workers_with_executors(cluster_root: Path) -> set[str]:
    """The workers that ran an executor (each executor leaves ``<worker dir>/<app id>/<n>/stderr``)."""
    return {p.parts[-4] for p in cluster_root.glob("worker-*/app-*/*/stderr")}


def _demo_config(folder: Path, master: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster").mkdir(exist_ok=True)
    (folder / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    cfg = folder / "recfeat.yaml"
    cfg.write_text(
        f"warehouse: {{root: {folder}/warehouse}}\nsources: {{synthetic: {{kind: synthetic, path: {folder}/src}}}}\n"
        f"synthetic: {{events: 20000}}\nspark: {{master: '{master}', shuffle_partitions: 2, driver_memory: 2g,"
        " conf: {spark.executor.memory: 1g}}\n"
    )
    return cfg


def _demo(folder: Path, master: str) -> str:
    cfg = _demo_config(folder, master)
    env = _env() | {"DAGSTER_HOME": str(folder / "dagster")}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "--config", str(cfg), "demo", "--train-epochs", "1"],
        capture_output=True, text=True, cwd=folder, env=env, timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.cluster
def test_whole_pipeline_on_a_standalone_cluster_equals_local(tmp_path):
    with StandaloneCluster(tmp_path / "cluster", workers=2, cores=1, memory="1g") as cluster:
        out = _demo(tmp_path / "on-cluster", cluster.master_url)
        apps = cluster.status()["completedapps"]
    assert apps, "no Spark application ran on the cluster"
    assert _workers_with_executors(tmp_path / "cluster") == {"worker-0", "worker-1"}
    assert "pipeline finished" in out
    _demo(tmp_path / "local", "local[2]")
    from pipelines.catalog import families

    catalog = {t.name for f in families() for t in f.tables}
    from pipelines.warehouse import Warehouse

    written = set(Warehouse(str(tmp_path / "local" / "warehouse")).tables())
    assert catalog <= written, catalog - written
    assert warehouse_differences(str(tmp_path / "local" / "warehouse"), str(tmp_path / "on-cluster" / "warehouse")) == []


WORKER_PYTHON = """
import sys
from pipelines.settings import SparkSettings
from pipelines.spark import get_spark, stop_spark

spark = get_spark(SparkSettings(master=sys.argv[1], shuffle_partitions=1, driver_memory="1g",
                                conf={"spark.pyspark.python": sys.executable}))
print("worker", spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect()[0])
stop_spark()
"""


@pytest.mark.slow
def test_conf_spark_pyspark_python_is_the_executors_interpreter(tmp_path):
    # A session built from Python reads only PYSPARK_PYTHON for its workers' interpreter; the conf
    # (how a cluster's settings name the workers' Python) must win over it, as under spark-submit.
    env = _env() | {"PYSPARK_PYTHON": str(tmp_path / "no-such-python")}
    proc = subprocess.run([sys.executable, "-c", WORKER_PYTHON, "local[1]"], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"worker {sys.executable}" in proc.stdout
