"""The Dagster UI in a real browser: ``dagster dev`` on 127.0.0.1 with a tiny synthetic config,
driven by Playwright on the system's chromium (no browser download).

Before anything is materialized, the UI shows the asset graph and, on the page of
``watch_time_labels``, its columns with their descriptions (the definition metadata
``dagster/column_schema``). Screenshots are kept under ``var/test-artifacts/ui/<test>/`` (the
path is printed). Slow: ``dagster dev`` takes ~30 s to load the code location.
"""
from __future__ import annotations

import json
import os
import re
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

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[2]", shuffle_partitions: 2}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-10}}
synthetic: {{events: 2000, days: 2, seed: 5}}
"""


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _wait_for_assets(proc: subprocess.Popen, port: int, timeout_s: float = 240) -> set[str]:
    """Wait until the webserver answers and its code location has loaded; the asset names."""
    deadline = time.time() + timeout_s
    while True:
        assert proc.poll() is None, "dagster dev exited early"
        assert time.time() < deadline, f"dagster dev did not serve the asset graph in {timeout_s:.0f} s"
        try:
            body = _graphql(port, "{ assetNodes { assetKey { path } } }")
            nodes = body.get("data", {}).get("assetNodes") or []
            if nodes:
                return {n["assetKey"]["path"][-1] for n in nodes}
        except OSError:
            pass
        time.sleep(2)


def _column_descriptions(port: int, asset: str) -> dict[str, str]:
    """Column -> description of ``asset``'s definition metadata ``dagster/column_schema`` ({} if none)."""
    query = """
    { assetNodes { assetKey { path }
        metadataEntries { label ... on TableSchemaMetadataEntry { schema { columns { name description } } } } } }
    """
    for node in _graphql(port, query)["data"]["assetNodes"]:
        if node["assetKey"]["path"][-1] != asset:
            continue
        for entry in node["metadataEntries"]:
            if entry["label"] == "dagster/column_schema" and entry.get("schema"):
                return {c["name"]: c["description"] or "" for c in entry["schema"]["columns"]}
    return {}


def _plain_description(documented: dict[str, str]) -> tuple[str, str]:
    """A (column, text) to look for: descriptions are rendered as markdown, so prefer one
    without markup, else its text with the markup characters left out (as the page shows it)."""
    plain = [(c, d) for c, d in documented.items() if not re.search(r"[`*_\[\]<>]", d)]
    column, text = plain[0] if plain else next(iter(documented.items()))
    text = re.sub(r"[`*]", "", text).strip().splitlines()[0]
    return column, text[:80]


def _skip_first_visit_modal(page) -> None:
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=8000)
    except Exception:  # noqa: BLE001 - no modal this time
        return
    skip.click()


@pytest.fixture
def dagster_ui(tmp_path):
    """(port, server process) of ``dagster dev`` on 127.0.0.1 with a temporary DAGSTER_HOME."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install -y chromium; or set RECFEAT_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(CONFIG.format(root=tmp_path))
    home = tmp_path / "dagster_home"
    from orchestration.instance import DAGSTER_YAML

    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = dict(os.environ, RECFEAT_CONFIG=str(cfg), DAGSTER_HOME=str(home), TMPDIR=str(tmp_path))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, with default signal handling
    )
    try:
        yield port, proc
    finally:
        stop_process_group(proc)


@pytest.fixture
def artifacts(request) -> Path:
    return screenshot_dir(request.node.name)


def _asset_node(port: int, asset: str) -> dict:
    query = "{ assetNodes { assetKey { path } description groupName repository { location { name } } } }"
    return next(n for n in _graphql(port, query)["data"]["assetNodes"] if n["assetKey"]["path"][-1] == asset)


@pytest.mark.slow
def test_the_asset_graph_and_column_descriptions_before_any_run(dagster_ui, artifacts):
    from playwright.sync_api import expect, sync_playwright

    port, proc = dagster_ui
    assets = _wait_for_assets(proc, port)
    assert {"events", "user_sequences", "watch_time_labels", "sasrec"} <= assets
    node = _asset_node(port, "watch_time_labels")
    location, group = node["repository"]["location"]["name"], node["groupName"]
    descriptions = _column_descriptions(port, "watch_time_labels")
    documented = {c: d for c, d in descriptions.items() if d}
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # The global asset lineage: one box per group, before any materialization.
            page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
            _skip_first_visit_modal(page)
            for name in ("sources", "core", "features", "labels", "lookalike", "models"):
                expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=90_000)
            page.wait_for_timeout(1500)  # let the layout settle for the picture
            page.screenshot(path=str(artifacts / "asset-graph.png"), full_page=True)
            # The group of watch_time_labels: its assets, their upstream and downstream neighbours.
            page.goto(f"{base}/locations/{location}/asset-groups/{group}/lineage", wait_until="domcontentloaded")
            _skip_first_visit_modal(page)
            for name in ("duration_stats", "watch_time_labels", "events", "watch_time_fm"):
                expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Never materialized").first).to_be_visible()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(artifacts / f"{group}-graph.png"), full_page=True)
            # The asset's page: its description and, from the definition metadata, its columns.
            page.goto(f"{base}/assets/watch_time_labels", wait_until="domcontentloaded")
            _skip_first_visit_modal(page)
            expect(page.get_by_text(node["description"].strip().splitlines()[0][:60]).first).to_be_visible(timeout=60_000)
            if documented:
                column, text = _plain_description(documented)
                expect(page.get_by_text(column, exact=True).first).to_be_visible(timeout=60_000)
                expect(page.get_by_text(text).first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(artifacts / "watch_time_labels.png"), full_page=True)
        finally:
            browser.close()
    for shot in ("asset-graph.png", f"{group}-graph.png", "watch_time_labels.png"):
        assert (artifacts / shot).stat().st_size > 10_000, shot
    if not documented:
        pytest.xfail(
            "watch_time_labels carries no documented dagster/column_schema in its definition metadata yet "
            f"(columns: {sorted(descriptions) or 'none'}); the table asset factory adds it from the contract"
        )
