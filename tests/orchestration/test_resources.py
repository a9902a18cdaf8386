"""The Spark resource: dagster-pyspark's lazy resource, one session per run, built by get_spark."""
from __future__ import annotations

import dagster as dg
from dagster_pyspark import LazyPySparkResource

import pipelines.spark as spark_module
from orchestration.resources import SparkResource, build_resources
from pipelines.settings import load_settings


def test_it_is_a_lazy_pyspark_resource_with_the_settings_conf(tmp_path):
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text("spark: {master: 'local[2]', shuffle_partitions: 3, conf: {spark.sql.ansi.enabled: 'false'}}\n")
    resource = build_resources(load_settings(cfg))["spark"]
    assert isinstance(resource, SparkResource) and isinstance(resource, LazyPySparkResource)
    assert resource.master == "local[2]" and resource.shuffle_partitions == 3
    assert resource.spark_config == {"spark.sql.ansi.enabled": "false"}


class _Session:
    stopped = False

    class sparkContext:  # noqa: N801 - the attribute name pyspark uses
        pass


def test_one_session_per_run_created_on_use_and_stopped_after_it(monkeypatch):
    """Without a JVM: the session get_spark returns is shared by the run's steps, created only
    when a step asks for it, and stopped after the run when the run started it."""
    made, stopped = [], []

    def fake_get_spark(settings):
        made.append(settings)
        session = _Session()
        monkeypatch.setattr(spark_module, "_SESSION", session)
        return session

    monkeypatch.setattr(spark_module, "_SESSION", None)
    monkeypatch.setattr(spark_module, "get_spark", fake_get_spark)
    monkeypatch.setattr(spark_module, "stop_spark", lambda: stopped.append(1))
    seen = []

    @dg.asset
    def no_spark() -> None:
        assert not made  # a step that does not ask for Spark starts nothing

    @dg.asset(deps=[no_spark])
    def first(spark: SparkResource) -> None:
        seen.append(spark.get_session())

    @dg.asset(deps=[first])
    def second(spark: SparkResource) -> None:
        seen.append(spark.spark_session)

    resource = SparkResource(master="local[1]", shuffle_partitions=1, spark_config={"spark.x": "1"})
    assert dg.materialize([no_spark, first, second], resources={"spark": resource}).success
    assert len(made) == 1 and made[0].master == "local[1]" and made[0].conf == {"spark.x": "1"}
    assert seen[0] is seen[1]
    assert stopped == [1]


def test_a_session_the_process_already_had_is_left_running(spark):
    seen = []

    @dg.asset
    def uses(spark: SparkResource) -> None:
        seen.append(spark.get_session())

    assert dg.materialize([uses], resources={"spark": SparkResource(master="local[2]", shuffle_partitions=2)}).success
    assert seen == [spark]
    assert not spark._jsc.sc().isStopped()
