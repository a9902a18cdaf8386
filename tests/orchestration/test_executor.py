"""The run executor of ``recfeat materialize``/``demo``: ready steps run at once in threads,
lanes never overlap, and Dagster's dependency rules (failures skip, blocking checks block)
hold as with its in-process executor. Real Dagster runs against a temporary instance."""
from __future__ import annotations

import threading
import time

import dagster as dg
import pytest

from orchestration.executor import LANE_LIMITS, lane_tags, shares_process, threaded_executor
from orchestration.materialize import execute_run


def _run(assets, concurrent: int, checks=()):
    job = dg.define_asset_job("j", selection=dg.AssetSelection.all(), executor_def=threaded_executor(concurrent))
    defs = dg.Definitions(assets=list(assets), asset_checks=list(checks), jobs=[job])
    with dg.instance_for_test() as instance:
        return execute_run(defs.resolve_job_def("j"), instance, {}, run_config={})


def test_independent_steps_run_at_the_same_time_only_when_allowed():
    for concurrent, expect_success in ((2, True), (1, False)):
        barrier = threading.Barrier(2, timeout=1.5)  # passes only if both steps are in flight together

        @dg.asset(name="a")
        def a():
            barrier.wait()

        @dg.asset(name="b")
        def b():
            barrier.wait()

        result = _run([a, b], concurrent)
        assert result.success is expect_success, concurrent


def _recording(names, lane=None, seconds=0.3):
    spans: dict[str, tuple[float, float]] = {}

    def make(name):
        @dg.asset(name=name, op_tags=lane_tags(lane) if lane else None)
        def _asset():
            start = time.perf_counter()
            time.sleep(seconds)
            spans[name] = (start, time.perf_counter())

        return _asset

    return [make(n) for n in names], spans


def _overlap(spans) -> bool:
    ordered = sorted(spans.values())
    return any(nxt[0] < cur[1] for cur, nxt in zip(ordered, ordered[1:]))


def test_steps_of_one_lane_never_overlap_while_others_do():
    assets, spans = [], {}
    for lane in sorted(LANE_LIMITS):  # every lane in one run: 3 steps each, with 2 free steps
        laned, spans[lane] = _recording([f"{lane}{i}" for i in range(3)], lane=lane)
        assets += laned
    free, free_spans = _recording(["f1", "f2"])
    assert _run(assets + free, 4).success
    for lane in LANE_LIMITS:
        assert len(spans[lane]) == 3 and not _overlap(spans[lane]), lane
    assert _overlap(free_spans)
    everything = {k: v for lane_spans in spans.values() for k, v in lane_spans.items()}
    assert _overlap(everything)  # steps of different lanes do run side by side


def test_unknown_lane_is_refused():
    with pytest.raises(ValueError, match="unknown lane 'gpu'"):
        lane_tags("gpu")
    with pytest.raises(ValueError, match="at least 1"):
        threaded_executor(0)


def test_a_failed_step_skips_its_downstream_and_the_rest_still_runs():
    ran = []

    @dg.asset(name="up")
    def up():
        raise RuntimeError("boom")

    @dg.asset(name="down", deps=["up"])
    def down():
        ran.append("down")

    @dg.asset(name="other")
    def other():
        ran.append("other")

    result = _run([up, down, other], 3)
    assert not result.success
    assert ran == ["other"]
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert failed == ["up"] and started == {"up", "other"}  # as Dagster's own executor: down never starts


def test_a_failed_blocking_check_blocks_what_is_downstream():
    ran = []

    @dg.asset(name="table")
    def table():
        ran.append("table")

    @dg.asset_check(asset="table", blocking=True, name="table_invariants", op_tags=lane_tags("checks"))
    def table_invariants():
        return dg.AssetCheckResult(passed=False, description="row count outside its band")

    @dg.asset(name="model", deps=["table"], op_tags=lane_tags("torch"))
    def model():
        ran.append("model")

    result = _run([table, model], 4, checks=[table_invariants])
    assert not result.success and ran == ["table"]
    evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.check_name == "table_invariants"


def test_a_step_knows_whether_it_shares_the_process():
    seen = {}

    @dg.asset(name="probe")
    def probe():
        seen["shared"] = shares_process()

    assert _run([probe], 2).success and seen["shared"] is True
    assert _run([probe], 1).success and seen["shared"] is False
    assert dg.materialize([probe]).success and seen["shared"] is False  # Dagster's own executor
    assert shares_process() is False  # outside any run


def test_concurrent_steps_setting_is_validated_and_defaults_to_one(tmp_path):
    from orchestration.executor import concurrent_steps
    from pipelines.settings import ConfigError, load_settings

    path = tmp_path / "recfeat.yaml"
    path.write_text("run: {concurrent_steps: 0}\n")
    with pytest.raises(ConfigError, match="run.concurrent_steps"):
        load_settings(path)
    path.write_text("run: {concurrent_steps: 3}\n")
    assert concurrent_steps(load_settings(path)) == 3
    path.write_text("")
    assert concurrent_steps(load_settings(path)) == 1


INTERRUPTED = '''
import sys, time
import dagster as dg
from orchestration.executor import threaded_executor
from orchestration.instance import ensure_dagster_home
from orchestration.materialize import execute_run

ensure_dagster_home()

@dg.asset(name="slow", pool="table/slow")
def slow():
    print("started", flush=True)
    time.sleep(60)

job = dg.define_asset_job("j", selection=dg.AssetSelection.all(), executor_def=threaded_executor(int(sys.argv[1])))
defs = dg.Definitions(assets=[slow], jobs=[job])
result = execute_run(defs.resolve_job_def("j"), dg.DagsterInstance.get(), {}, run_config={})
sys.exit(0 if result.success else 1)
'''


@pytest.mark.parametrize("concurrent", [1, 2])
def test_ctrl_c_ends_the_run_at_once_and_frees_its_pool_slot(tmp_path, concurrent):
    """SIGINT while a step runs in its thread: the command ends within seconds (not when the
    step would have), the run is not left running and the table's pool slot is free."""
    import os
    import signal
    import subprocess
    import sys

    from orchestration.instance import DAGSTER_YAML, pool_holders

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    script = tmp_path / "run.py"
    script.write_text(INTERRUPTED)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": os.getcwd()}
    log = (tmp_path / "stderr.txt").open("w")  # Dagster's console log
    proc = subprocess.Popen([sys.executable, str(script), str(concurrent)], env=env, stdout=subprocess.PIPE,
                            stderr=log, text=True)
    assert proc.stdout.readline().strip() == "started", (tmp_path / "stderr.txt").read_text()[-2000:]
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert time.perf_counter() - t0 < 30 and proc.returncode != 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs()[0]
        assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED), run.status
        assert pool_holders(instance, "table/slow") == []
