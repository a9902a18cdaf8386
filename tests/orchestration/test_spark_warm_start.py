"""The Spark warm start of ``recfeat materialize``/``demo``: the session starts in a background
thread as the command starts, and the first Spark step gets that session.

The runs that start a JVM go in a fresh interpreter each (``_fresh``), so that no session of
this test process (the shared ``spark`` fixture) can stand in for the one under test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pipelines.settings import load_settings

CONFIG = """
warehouse: {{root: {root}/warehouse}}
spark: {{master: "local[1]", shuffle_partitions: 1, driver_memory: 1g{conf}}}
sources: {{synthetic: {{kind: synthetic, path: {root}/sources/synthetic}}}}
partitions: {{start_date: 2022-04-08, end_date: 2022-04-10}}
synthetic: {{events: 2000, days: 2, seed: 3}}
"""

BAD_PYTHON = "/nonexistent/bin/python"


@pytest.fixture
def project(tmp_path):
    from orchestration.instance import ensure_dagster_home

    def make(conf: str = ""):
        path = tmp_path / "recfeat.yaml"
        path.write_text(CONFIG.format(root=tmp_path, conf=conf))
        ensure_dagster_home()
        return path, load_settings(path)

    return make


def _fresh(code: str, cwd) -> str:
    """Run ``code`` in a fresh interpreter (this environment); return its stdout, fail on error."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_which_selections_need_spark(project):
    from orchestration.materialize import selection_needs_spark, warm_start_spark

    _, settings = project()
    assert selection_needs_spark(settings, None)  # the whole graph has Spark steps
    assert selection_needs_spark(settings, "item_neighbors")
    assert selection_needs_spark(settings, "synthetic_source,rejected_events")  # a table of the ingest step
    assert not selection_needs_spark(settings, "synthetic_source,users,items")
    assert not selection_needs_spark(settings, "no_such_asset")
    assert warm_start_spark(settings, "synthetic_source,users,items") is None


def test_a_run_without_spark_steps_starts_no_spark(project):
    import pipelines.spark as spark_module
    from orchestration.materialize import materialize_assets

    path, settings = project()
    before = spark_module._SESSION
    assert materialize_assets(settings, str(path), "synthetic_source", log=lambda line: None) == ["synthetic_source"]
    assert spark_module._WARM is None and spark_module._SESSION is before


def test_the_first_spark_step_gets_the_session_started_in_the_background(tmp_path):
    out = _fresh("""
        import dagster as dg
        import pipelines.spark as spark
        from orchestration.resources import SparkResource
        from pipelines.settings import SparkSettings

        settings = SparkSettings(master="local[1]", shuffle_partitions=1, driver_memory="1g")
        warm = spark.start_in_background(settings)
        assert spark.start_in_background(settings) is warm  # asked again: the same start
        seen = []

        @dg.asset
        def no_spark() -> None:
            seen.append(("while", warm.done))

        @dg.asset(deps=[no_spark])
        def first(spark: SparkResource) -> None:
            seen.append(spark.get_session())

        @dg.asset(deps=[first])
        def second(spark: SparkResource) -> None:
            seen.append(spark.get_session())

        resource = SparkResource(master="local[1]", shuffle_partitions=1, driver_memory="1g")
        assert dg.materialize([no_spark, first, second], resources={"spark": resource}).success
        assert warm.error is None and warm.created and warm.seconds > 0
        assert seen[1] is warm.session and seen[2] is warm.session  # one session, the background one
        assert spark._SESSION is warm.session and not warm.session._jsc.sc().isStopped()
        assert warm.session.range(3).count() == 3
        warm.stop_if_created()
        assert spark._SESSION is None and spark._WARM is None
        print("ok", seen[0])
    """, tmp_path)
    assert out.startswith("ok")


def test_materialize_starts_spark_early_and_stops_it_after_the_run(project, tmp_path):
    path, _ = project()
    out = _fresh(f"""
        import pipelines.spark as spark
        from orchestration.materialize import materialize_assets, warm_start_spark
        from pipelines.settings import load_settings

        settings = load_settings({str(path)!r})
        warm = warm_start_spark(settings, "synthetic_source,events")  # as the command does at its start
        assert warm is not None and not warm.done
        lines = []
        done = materialize_assets(settings, {str(path)!r}, "synthetic_source,events", log=lines.append)
        assert "events" in done, lines
        assert warm.done and warm.error is None and warm.created, lines
        assert spark._SESSION is None and spark._WARM is None  # stopped after the run
        assert warm.session.sparkContext._jsc is None  # the session that was started is the one stopped
        print("ok")
    """, tmp_path)
    assert out.startswith("ok")


def test_a_failed_background_start_fails_the_first_spark_step_with_its_own_error(project, tmp_path):
    """An invalid Spark setting (a workers' interpreter that does not exist) fails the step that
    needs Spark with the error get_spark gives without a warm start, naming the setting; the
    traceback reaches into the background start. No JVM starts: the probe fails first. In a
    fresh interpreter: a session of this process would stand in for the start."""
    path, _ = project(conf=f', conf: {{spark.pyspark.python: "{BAD_PYTHON}"}}')
    out = _fresh(f"""
        import os
        import pipelines.spark as spark_module
        from orchestration.cli_common import CliError
        from orchestration.materialize import materialize_assets, warm_start_spark
        from pipelines.settings import SparkSettings, load_settings

        bad = SparkSettings(master="local[1]", conf={{"spark.pyspark.python": {BAD_PYTHON!r}}})
        saved = os.environ.get("PYSPARK_PYTHON")
        try:
            spark_module._create(bad)
            raise AssertionError("the bad setting started a session")
        except spark_module.SparkSetupError as exc:
            direct = exc
        os.environ["PYSPARK_PYTHON"] = saved  # get_spark copies the conf into the environment
        settings = load_settings({str(path)!r})
        warm = warm_start_spark(settings, "synthetic_source,events")
        try:
            materialize_assets(settings, {str(path)!r}, "synthetic_source,events", log=lambda line: None)
            raise AssertionError("the run passed")
        except CliError as exc:
            run = exc
        assert str(run).startswith("materializing events"), str(run)
        assert str(direct) in str(run) and "PYSPARK_PYTHON={BAD_PYTHON}" in str(run), str(run)
        assert warm.done and isinstance(warm.error, spark_module.SparkSetupError)
        assert str(warm.error) == str(direct)
        frames = []
        tb = warm.error.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        assert "_run" in frames and "check_worker_python" in frames, frames  # the background thread's traceback
        assert spark_module._WARM is None and spark_module._SESSION is None
        print("ok")
    """, tmp_path)
    assert out.startswith("ok")


def test_a_failed_background_start_is_reported_once_then_retried(tmp_path):
    """get_spark raises the background start's error once; a later call starts again itself
    (in a fresh interpreter, for the same reason as above)."""
    out = _fresh(f"""
        import pipelines.spark as spark_module
        from pipelines.settings import SparkSettings

        bad = SparkSettings(master="local[1]", conf={{"spark.pyspark.python": {BAD_PYTHON!r}}})
        warm = spark_module.start_in_background(bad)
        errors = []
        for _ in range(2):
            try:
                spark_module.get_spark(bad)
            except spark_module.SparkSetupError as exc:
                assert "PYSPARK_PYTHON=/nonexistent" in str(exc), str(exc)
                errors.append(exc)
        assert len(errors) == 2
        assert errors[0] is warm.error
        assert errors[1] is not warm.error  # tried again here, failed the same way
        print("ok")
    """, tmp_path)
    assert out.startswith("ok")
