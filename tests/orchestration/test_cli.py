"""The recfeat command line: stable forms, exit codes, one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["demo", "generate", "ingest", "materialize", "tables", "show", "export", "report"]


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
    proc = run_cli("ingest", "--source", "kuairand", "--input", str(kuairand_dir), "--warehouse", str(tmp_path / "k"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "events v1 holds 228,329 rows" in proc.stdout
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
    proc = run_cli("--config", str(cfg), "demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for table in ("events", "users", "items", "synthetic_truth"):
        assert table in proc.stdout
    assert "20,000" in proc.stdout
    assert str(tmp_path / "warehouse") in proc.stdout
