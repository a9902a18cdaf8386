"""The warehouse's Delta tables from the command line: any Delta reader sees what `recfeat export`
writes; history, time travel by time, and the migration of a pre-Delta warehouse."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_polars_reads_events_as_recfeat_exports_them(tmp_path):
    polars = pytest.importorskip("polars")
    source, wh = tmp_path / "src", tmp_path / "wh"
    proc = run_cli("generate", "--events", "3000", "--seed", "5", "--days", "3", "--out", str(source), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("ingest", "--source", "kuairand", "--input", str(source), "--warehouse", str(wh), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "events.parquet"
    proc = run_cli("export", "events", str(out), "--warehouse", str(wh), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    exported = polars.read_parquet(out).sort("event_id")
    delta = polars.read_delta(str(wh / "events")).select(exported.columns).sort("event_id")
    assert exported.height > 2000 and delta.height == exported.height
    assert delta.equals(exported)


def test_history_and_as_of_from_the_cli(tmp_path, capsys):
    from features.dimensions import USERS
    from pipelines.warehouse import Warehouse

    wh_dir = tmp_path / "wh"
    wh = Warehouse(str(wh_dir))
    wh.write_arrow(USERS, pa.table({"user_id": ["u1"], "source": ["s"]}), producer={"job": "first"})
    time.sleep(1.1)
    between = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=0)
    time.sleep(1.1)
    wh.write_arrow(USERS, pa.table({"user_id": ["u1", "u2", "u3"], "source": ["s"] * 3}))
    assert main(["history", "users", "--warehouse", str(wh_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == "2" and out[2].split()[0] == "1" and out[2].split()[-1] == "first"
    target = tmp_path / "then.parquet"
    stamp = between.strftime("%Y-%m-%dT%H:%M:%S")  # no zone: UTC
    assert main(["export", "users", str(target), "--as-of", stamp, "--warehouse", str(wh_dir)]) == 0
    assert "exported users v1: 1 rows" in capsys.readouterr().out
    assert pq.read_table(target).num_rows == 1
    assert main(["show", "users", "--as-of", "yesterday", "--warehouse", str(wh_dir)]) == 1
    assert "is not an ISO 8601 time" in capsys.readouterr().err


def test_migrate_from_the_cli(tmp_path, capsys):
    from tests.pipelines.test_delta_warehouse import _legacy_table

    root = tmp_path / "wh"
    _legacy_table(str(root))
    assert main(["show", "daily", "--warehouse", str(root)]) == 1
    assert "run `recfeat migrate` once" in capsys.readouterr().err
    assert main(["migrate", "--dry-run", "--warehouse", str(root)]) == 0
    assert "daily" in capsys.readouterr().out and (root / "daily" / "_current").exists()
    assert main(["migrate", "--warehouse", str(root)]) == 0
    assert "migrated versions [3, 5]" in capsys.readouterr().out
    assert main(["migrate", "--warehouse", str(root)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
