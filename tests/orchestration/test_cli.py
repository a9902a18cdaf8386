"""The recfeat command line: stable forms, exit codes, one-line errors."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["demo", "generate", "ingest", "materialize", "tables", "show", "export", "history", "migrate", "report", "runs",
            "training-set"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    assert "usage: recfeat" in capsys.readouterr().out


def test_tables_show_export(tmp_path, capsys):
    from features.dimensions import USERS
    from pipelines.warehouse import Warehouse

    wh_dir = tmp_path / "wh"
    Warehouse(str(wh_dir)).write_arrow(USERS, pa.table({"user_id": ["u1", "u2"], "source": ["s", "s"], "age": [30, 40]}))
    assert main(["tables", "--warehouse", str(wh_dir)]) == 0
    out = capsys.readouterr().out
    assert "users" in out and " 2 " in out
    assert main(["show", "users", "--warehouse", str(wh_dir)]) == 0
    out = capsys.readouterr().out
    assert "version:      1" in out and "age" in out and "u1" in out
    target = tmp_path / "out" / "users.parquet"
    assert main(["export", "users", str(target), "--warehouse", str(wh_dir)]) == 0
    assert pq.read_table(target).num_rows == 2


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    proc = run_cli("show", "nope", "--warehouse", str(tmp_path / "wh"), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"recfeat: error: table 'nope' has no committed version in {tmp_path / 'wh'} (tables: none)"
    ]
    proc = run_cli("--config", str(tmp_path / "missing.yaml"), "tables", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"recfeat: error: config file not found: {tmp_path / 'missing.yaml'}"
    proc = run_cli("ingest", "--source", "kuairand", "--input", str(tmp_path / "absent"), "--warehouse", str(tmp_path / "wh"), cwd=tmp_path)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "absent" in proc.stderr
    proc = run_cli("materialize", "--select", "nothing", "--warehouse", str(tmp_path / "wh"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "unknown asset(s) ['nothing']" in proc.stderr
    proc = run_cli("frobnicate", cwd=tmp_path)
    assert proc.returncode == 2


def test_generate_is_deterministic(tmp_path):
    import hashlib

    def digest(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}

    for name in ("a", "b"):
        proc = run_cli("generate", "--events", "2000", "--seed", "3", "--days", "2", "--out", str(tmp_path / name), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "generated 2,000 events" in proc.stdout
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


@pytest.mark.slow
def test_ingest_kuairand_and_movielens_from_the_cli(tmp_path, kuairand_dir, ml100k_dir):
    # Default ingest.repeated_lines (duplicate): the slice's 5,460 exact repeats are dead letters.
    proc = run_cli("ingest", "--source", "kuairand", "--input", str(kuairand_dir), "--warehouse", str(tmp_path / "k"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "228,329 records read from 2 file(s): 222,869 new events" in proc.stdout
    assert "5,460 duplicates" in proc.stdout and "events v1 holds 222,869 rows" in proc.stdout
    # configs/kuairand.yaml keeps them as events (repeated_lines: distinct), as the official runs did.
    proc = run_cli(
        "--config", str(REPO / "configs" / "kuairand.yaml"), "ingest", "--source", "kuairand", "--input", str(kuairand_dir),
        "--warehouse", str(tmp_path / "kd"), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 duplicates" in proc.stdout and "events v1 holds 228,329 rows" in proc.stdout
    proc = run_cli("ingest", "--source", "movielens", "--input", str(ml100k_dir), "--warehouse", str(tmp_path / "m"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "events v1 holds 100,000 rows" in proc.stdout


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(
        f"warehouse: {{root: {tmp_path}/warehouse}}\nsources: {{synthetic: {{kind: synthetic, path: {tmp_path}/src}}}}\n"
        "synthetic: {events: 20000}\nspark: {master: 'local[2]', shuffle_partitions: 2}\n"
    )
    proc = run_cli("--config", str(cfg), "demo", "--train-epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for table in ("events", "users", "items", "synthetic_truth"):
        assert table in proc.stdout
    assert "20,000" in proc.stdout
    assert str(tmp_path / "warehouse") in proc.stdout
    # One Dagster run for the whole graph, checks included, and a line as each step starts and ends.
    import dagster as dg

    runs = dg.DagsterInstance.get().get_runs()  # the test's $DAGSTER_HOME, which the command used
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert "dagster/asset_partition_range_start" in runs[0].tags  # the daily assets over their whole range
    started = re.findall(r"^start   (\S+)", proc.stdout, re.M)
    finished = re.findall(r"^done    (\S+) .*in \d+\.\d s", proc.stdout, re.M)
    assert started and sorted(started) == sorted(finished)  # no step is silent, every one ended
    assert {"user_vectors", "watch_time_labels", "sasrec"} <= set(started)
    assert any(step.endswith("_checks") or step.endswith("_quality") for step in started)  # the checks ran too
    assert re.search(r"^start   \S+ \(.*\bevents\b.*\)$", proc.stdout, re.M)  # the ingestion step
    assert re.search(r"^done    user_vectors in [\d.]+ s: user_vectors [\d,]+ rows$", proc.stdout, re.M)
    # The report at the end lists every table of the catalog with its GX and invariant verdicts,
    # and the data docs hold a page per table.
    from pipelines.catalog import families
    from pipelines.quality import load_results, reports_root
    from pipelines.warehouse import Warehouse

    from pipelines.catalog import view_sources
    from pipelines.settings import load_settings

    views = view_sources(load_settings(str(cfg)))  # rote_features by default (sequences.rote_storage: view)
    assert views == {"rote_features": "user_sequences"}
    tables = [t.name for f in families() for t in f.tables]
    verdicts = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
                if line.split() and line.split()[0] in tables and len(line.split()) > 2}
    assert {t: verdicts.get(t) for t in tables} == {t: "view" if t in views else "passed" for t in tables}, proc.stdout[-4000:]
    results = load_results(reports_root(Warehouse(str(tmp_path / "warehouse"))))
    assert set(results) == set(tables) - set(views)
    for name, result in results.items():
        assert Path(result.validation_page).is_file(), name
        if result.invariants_checked:
            assert Path(result.invariants_page).is_file(), name
    # Every model the demo trained is tracked: `recfeat runs` lists it from MLflow with its
    # selection metric and the table versions it read; each run directory holds its curves,
    # which the model asset's materialization shows.
    import json

    from trainers.curves import CURVES_FILE
    from trainers.registry import model_names
    from trainers.runs import list_runs

    trained = sorted(set(started) & set(model_names()))
    assert trained == model_names()
    listed = run_cli("--config", str(cfg), "runs", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "cannot read MLflow" not in listed.stderr, listed.stderr[-3000:]
    assert f"tracking: sqlite:///{tmp_path / 'var' / 'mlflow' / 'mlflow.db'}" in listed.stdout
    instance = dg.DagsterInstance.get()
    for model in trained:
        (run_dir,) = list_runs(tmp_path / "var" / "runs", model)
        line = next((row for row in listed.stdout.splitlines() if row.startswith(f"{model} ") and run_dir.name in row), "")
        assert line.split()[2:3] == ["tracked"], (model, listed.stdout)
        saved = json.loads((run_dir / "metrics.json").read_text())
        select, versions = saved["select_metric"], json.loads((run_dir / "tables.json").read_text())
        assert f"{select} {saved['test'][select]:.4f}" in line, (model, line)
        for table, record in versions.items():
            assert f"{table} v{record['version']}" in line, (model, table, line)
        assert (run_dir / CURVES_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", model
        event = instance.get_latest_materialization_event(dg.AssetKey(model))
        meta = event.asset_materialization.metadata
        assert meta["figure_curves_path"].value == str((run_dir / CURVES_FILE).resolve()), model
        assert meta["figure_curves"].value.startswith(f"![{CURVES_FILE}](data:image/png;base64,"), model


def test_show_and_export_read_a_kept_version(tmp_path, capsys):
    from features.dimensions import USERS
    from pipelines.warehouse import Warehouse

    wh_dir = tmp_path / "wh"
    wh = Warehouse(str(wh_dir))
    wh.write_arrow(USERS, pa.table({"user_id": ["u1", "u2"], "source": ["s", "s"], "age": [30, 40]}))
    wh.write_arrow(USERS, pa.table({"user_id": ["v1", "v2", "v3"], "source": ["s"] * 3, "age": [1, 2, 3]}))
    assert main(["show", "users", "--version", "1", "--warehouse", str(wh_dir)]) == 0
    out = capsys.readouterr().out
    assert "version:      1 (kept: 1, 2, current: 2)" in out and "rows:         2" in out and "u1" in out and "v1" not in out
    assert main(["show", "users", "--warehouse", str(wh_dir)]) == 0
    assert "version:      2 (kept: 1, 2)\n" in capsys.readouterr().out
    target = tmp_path / "users_v1.parquet"
    assert main(["export", "users", str(target), "--version", "1", "--warehouse", str(wh_dir)]) == 0
    assert f"exported users v1: 2 rows to {target}" in capsys.readouterr().out
    assert pq.read_table(target).column("user_id").to_pylist() == ["u1", "u2"]


def test_a_version_that_does_not_exist_fails_in_one_line(tmp_path):
    from features.dimensions import USERS
    from pipelines.warehouse import Warehouse

    wh = Warehouse(str(tmp_path / "wh"))
    for _ in range(2):
        wh.write_arrow(USERS, pa.table({"user_id": ["u1"], "source": ["s"], "age": [30]}))
    for args in (["show", "users", "--version", "7"], ["export", "users", str(tmp_path / "x.parquet"), "--version", "7"]):
        proc = run_cli(*args, "--warehouse", str(tmp_path / "wh"), cwd=tmp_path)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == ["recfeat: error: table 'users' has no version 7; versions available: 1, 2"]
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("uri, package, extra", [("s3://bucket/wh", "s3fs", "s3"), ("gs://bucket/wh", "gcsfs", "gcs")])
def test_a_store_without_its_filesystem_package_fails_in_one_line(uri, package, extra, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed, whatever this machine has
    assert main(["tables", "--warehouse", uri]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"recfeat: error: {uri}: the {uri.split(':')[0]}:// filesystem needs the package {package}, which is not installed: "
        f"install the extra recfeat[{extra}] (in the project: pip install -e '.[{extra}]')"
    ]


def test_hdfs_without_a_hadoop_client_fails_in_one_line(tmp_path):
    # pyarrow's HDFS client needs libjvm and Hadoop's libhdfs; neither is set up here.
    env = {k: v for k, v in os.environ.items() if k not in ("HADOOP_HOME", "ARROW_LIBHDFS_DIR", "CLASSPATH")}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "tables", "--warehouse", "hdfs://127.0.0.1:1/wh"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recfeat: error: hdfs://127.0.0.1:1/wh: pyarrow's HDFS client cannot start (")
    assert "libhdfs" in lines[0]


def test_a_worker_python_without_the_packages_fails_in_one_line(tmp_path):
    # An interpreter that runs but sees none of the project's packages (no site-packages).
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text(
        "user_id,video_id,time_ms,play_time_ms,duration_ms\n1,10,1650812741436,1000,9000\n"
    )
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text("ingest: {engine: spark}\nspark: {master: 'local[1]', shuffle_partitions: 1}\n")
    env = dict(os.environ, PYSPARK_PYTHON=str(bare))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "--config", str(cfg), "ingest", "--source", "kuairand",
         "--input", str(src), "--warehouse", str(tmp_path / "wh")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"recfeat: error: Spark's Python workers would run PYSPARK_PYTHON={bare}, which cannot import the project's "
        f"packages (ModuleNotFoundError: No module named 'pyarrow'): point PYSPARK_PYTHON at the project's environment "
        f"(for example {sys.executable}), or unset it to use the driver's interpreter"
    ]


def test_demo_threads_flag_is_checked_before_anything_starts(tmp_path, capsys):
    """A bad ``--train-threads`` fails in one line naming the flag, before Spark or Dagster start;
    the default is this machine's cores, at most 4."""
    import pipelines.spark as spark_module
    from orchestration.cli_run import DEMO_MAX_THREADS, demo_threads

    before = spark_module._WARM
    assert main(["demo", "--warehouse", str(tmp_path / "w"), "--train-threads", "0"]) != 0
    assert "--train-threads: must be at least 1, not 0" in capsys.readouterr().err
    assert spark_module._WARM is before and not (tmp_path / "w").exists()
    assert 1 <= demo_threads() <= min(DEMO_MAX_THREADS, os.cpu_count() or 1)
    assert build_parser().parse_args(["demo"]).train_threads is None
