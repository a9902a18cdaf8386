"""The Spark session's start-up checks that need no Spark: the workers' Python interpreter."""
from __future__ import annotations

import sys

import pytest

from pipelines.spark import SparkSetupError, check_worker_python


def test_the_drivers_own_interpreter_is_not_probed(monkeypatch):
    def no_probe(*args, **kwargs):  # pragma: no cover - must not run
        raise AssertionError("probed the driver's interpreter")

    monkeypatch.setattr("pipelines.spark.subprocess.run", no_probe)
    check_worker_python(sys.executable)


def test_a_missing_interpreter_fails_in_one_line(tmp_path):
    missing = tmp_path / "no-such-python"
    with pytest.raises(SparkSetupError) as info:
        check_worker_python(str(missing))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"Spark's Python workers would run PYSPARK_PYTHON={missing}, which is not an executable: ")
    assert f"point PYSPARK_PYTHON at the project's environment (for example {sys.executable})" in message


def test_another_interpreter_with_the_packages_passes_and_is_probed_once(tmp_path, monkeypatch):
    import pipelines.spark as spark_module

    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    calls = []
    real_run = spark_module.subprocess.run
    monkeypatch.setattr(spark_module.subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    check_worker_python(str(wrapper))
    check_worker_python(str(wrapper))
    assert len(calls) == 1
