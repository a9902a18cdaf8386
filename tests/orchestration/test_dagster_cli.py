"""The real Dagster tools on our code location: `dagster dev` serves the asset graph on
127.0.0.1, and `dagster asset materialize` runs a selection. Slow: each starts Dagster processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port, stop_process_group

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-10}}
synthetic: {{events: 2000, days: 2, seed: 5}}
"""


def dagster_env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(CONFIG.format(root=tmp_path))
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ, RECFEAT_CONFIG=str(cfg), DAGSTER_HOME=str(home), TMPDIR=str(tmp_path))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.slow
def test_dagster_dev_serves_the_asset_graph_on_loopback(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=dagster_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, "dagster dev exited early"
            assert time.time() < deadline, "dagster dev did not come up in 180 s"
            time.sleep(2)
        query = json.dumps({"query": "{ assetNodes { assetKey { path } dependencyKeys { path } } }"}).encode()
        body = None
        while body is None or "assetNodes" not in body.get("data", {}) or not body["data"]["assetNodes"]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                body = json.load(r)
            assert time.time() < deadline, f"no asset graph: {body}"
            time.sleep(1)
        nodes = {n["assetKey"]["path"][0]: {d["path"][0] for d in n["dependencyKeys"]} for n in body["data"]["assetNodes"]}
        assert {"synthetic_source", "events", "rejected_events", "users", "items", "synthetic_truth", "user_sequences",
                "duration_stats", "watch_time_labels", "lookalike_users", "sasrec"} <= set(nodes)
        assert "rote_features" not in nodes  # a view by default (sequences.rote_storage): not stored, no asset
        assert nodes["user_sequences"] == {"events"}
        assert nodes["events"] == nodes["rejected_events"] == {"synthetic_source"}
        assert nodes["synthetic_truth"] == {"synthetic_source", "events"}
    finally:
        stop_process_group(proc)


@pytest.mark.slow
def test_dagster_asset_materialize_runs_a_selection(tmp_path):
    env = dagster_env(tmp_path)
    base = [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions"]
    first = subprocess.run(base + ["--select", "synthetic_source,users,items"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(base + ["--select", "events,rejected_events,ingest_runs", "--partition", "2022-04-09"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    from pipelines.warehouse import Warehouse

    wh = Warehouse(str(tmp_path / "warehouse"))
    assert wh.tables() == ["events", "ingest_runs", "items", "rejected_events", "users"]
    assert list(wh.manifest("events").partitions) == ["2022-04-09"]
