"""The MLflow UI in a real browser: a tiny real training run tracked in the local store, then
``mlflow ui`` bound to 127.0.0.1 on that store, driven by Playwright on the system's chromium
(no browser download), shows the run on the experiment's page and its metrics on the run's page.

Screenshots are kept under ``var/test-artifacts/ui/<test>/`` (the path is printed). The server
runs in its own process group and is stopped by its process id. Slow: training, creating the
store and starting the server take tens of seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port, screenshot_dir, stop_process_group

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("RECFEAT_CHROMIUM", "/usr/bin/chromium")

sys.path.insert(0, str(REPO / "tests" / "trainers"))
from _watch_time_tables import write_tables  # noqa: E402


def _wait_for_server(proc: subprocess.Popen, port: int, log: Path, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while True:
        assert proc.poll() is None, f"mlflow ui exited early: {log.read_text()[-2000:]}"
        assert time.time() < deadline, f"mlflow ui did not answer in {timeout_s:.0f} s: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)


def _search_runs(port: int, experiment_id: str) -> list[dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id]}).encode(), headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r).get("runs", [])


@pytest.fixture
def tracked_run(tmp_path, warehouse):
    """A tiny real watch_time_fm run tracked in the local store: (store folder, run directory)."""
    from trainers.config import build_config
    from trainers.registry import get_model

    write_tables(warehouse, users=20, items=30)
    spec = get_model("watch_time_fm")
    cfg = build_config(spec.config_cls, {
        "warehouse": warehouse.uri, "runs_root": str(tmp_path / "runs"), "epochs": 2, "patience": 5,
        "progress": False, "tracking": {"enabled": True},
    })
    result = spec.train(cfg)
    return tmp_path / "mlflow", result.run_dir


@pytest.fixture
def mlflow_ui(tracked_run, tmp_path):
    """(port, process) of ``mlflow ui`` on 127.0.0.1 against the tracked run's store."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install -y chromium; or set RECFEAT_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    store, _ = tracked_run
    port = free_port()
    log = tmp_path / "mlflow-ui.log"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", TMPDIR=str(tmp_path))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
             "--default-artifact-root", (store / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped below by its id, workers included
        )
    try:
        _wait_for_server(proc, port, log)
        yield port, proc
    finally:
        stop_process_group(proc)


@pytest.fixture
def artifacts(request) -> Path:
    return screenshot_dir(request.node.name)


@pytest.mark.slow
def test_the_mlflow_ui_shows_a_tracked_run(tracked_run, mlflow_ui, artifacts):
    from playwright.sync_api import expect, sync_playwright

    import mlflow

    store, run_dir = tracked_run
    port, proc = mlflow_ui
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("recfeat").experiment_id
    runs = _search_runs(port, experiment_id)  # the server serves the store the run went to
    assert [r["info"]["run_name"] for r in runs] == [f"watch_time_fm/{run_dir.name}"]
    mlflow_run_id = runs[0]["info"]["run_id"]
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # The experiment's runs: the run is listed under its name (model/run id).
            page.goto(f"{base}/#/experiments/{experiment_id}/runs", wait_until="domcontentloaded")
            expect(page.get_by_text(f"watch_time_fm/{run_dir.name}").first).to_be_visible(timeout=90_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(artifacts / "experiment-runs.png"), full_page=True)
            # The run's page: the run directory tag and a per-epoch metric.
            page.goto(f"{base}/#/experiments/{experiment_id}/runs/{mlflow_run_id}", wait_until="domcontentloaded")
            expect(page.get_by_text(f"watch_time_fm/{run_dir.name}").first).to_be_visible(timeout=90_000)
            expect(page.get_by_text("test/gauc").first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(artifacts / "run.png"), full_page=True)
        finally:
            browser.close()
    assert proc.poll() is None  # the server was up the whole time
    for shot in ("experiment-runs.png", "run.png"):
        assert (artifacts / shot).stat().st_size > 10_000, shot
