"""The ``dg`` command line on our project (``[tool.dg]`` in pyproject.toml): ``dg list defs``
and ``dg check defs`` from the repository root. Slow: each loads the code location (~15 s)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"

CONFIG = """
warehouse: {{root: {root}/warehouse}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-10}}
"""


def _dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if not DG.exists():
        pytest.skip(f"dg is not installed beside {sys.executable} (the dagster-dg-cli package)")
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(CONFIG.format(root=tmp_path))
    env = dict(os.environ, RECFEAT_CONFIG=str(cfg), TMPDIR=str(tmp_path))
    env["PATH"] = f"{DG.parent}{os.pathsep}{env['PATH']}"
    env["COLUMNS"] = "240"  # the table output: keys not cut
    return subprocess.run([str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_dg_list_defs_names_the_real_assets(tmp_path):
    proc = _dg(tmp_path, "list", "defs", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    defs = json.loads(proc.stdout)
    assets = {a["asset_key"]: a for a in defs["assets"]}
    assert {"synthetic_source", "events", "rejected_events", "users", "items", "user_sequences",
            "watch_time_labels", "lookalike_users", "sasrec"} <= set(assets)
    assert "rote_features" not in assets  # a view by default (sequences.rote_storage): only stored tables are assets
    assert set(assets["events"]["dependency_keys"]) == {"synthetic_source"}
    assert assets["sasrec"]["owners"] == [{"team": "models"}] and "pytorch" in assets["sasrec"]["kinds"]
    checks = {c["key"] if "key" in c else json.dumps(c) for c in defs["asset_checks"]}
    assert any("events_quality" in c for c in checks)
    assert {"daily_ingest_schedule", "retrain_models_daily"} <= {s["name"] for s in defs["schedules"]}
    assert {"new_source_files", "retrain_models_automation"} <= {s["name"] for s in defs["sensors"]}
    proc = _dg(tmp_path, "list", "defs")  # the table a person reads
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "watch_time_labels" in proc.stdout and "new_source_files" in proc.stdout


@pytest.mark.slow
def test_dg_check_defs_passes(tmp_path):
    proc = _dg(tmp_path, "check", "defs")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr
