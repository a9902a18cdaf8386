"""Shared fixtures: one Spark session per test run, the shared data folder, temp warehouses."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# Hypothesis profiles: "dev" (default) draws fresh examples each run, to keep finding new cases;
# "ci" is derandomized, so a CI verdict depends on the commit and not on the draw. Choose with
# HYPOTHESIS_PROFILE=ci (set by .ci/run). A failure found in dev is pinned with @example.
hypothesis_settings.register_profile("dev")
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data set {name!r} not found at {path} (real-data tests need ../shared/data)")
    return path


@pytest.fixture(scope="session")
def spark():
    from pipelines.settings import SparkSettings
    from pipelines.spark import get_spark, stop_spark

    session = get_spark(SparkSettings(master="local[2]", shuffle_partitions=2, driver_memory="2g"))
    yield session
    stop_spark()


@pytest.fixture
def warehouse(tmp_path):
    from pipelines.warehouse import Warehouse

    return Warehouse(str(tmp_path / "warehouse"))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Tests never read the developer's recfeat.yaml or RECFEAT_* variables by accident."""
    for var in list(os.environ):
        if var.startswith("RECFEAT_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


@pytest.fixture(scope="session")
def spark_session_for_hypothesis(spark):
    """The shared session under a name that reads well in hypothesis tests (session-scoped)."""
    return spark


@pytest.fixture
def kuairand_dir() -> Path:
    return shared_data("kuairand-pure-slice")


@pytest.fixture
def ml100k_dir() -> Path:
    return shared_data("ml-100k")
