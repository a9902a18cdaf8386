"""The executor of ``recfeat materialize`` and ``recfeat demo``: the run's steps in one process,
one at a time or several at once in threads.

Dagster's in-process executor runs one step after another. This executor runs the ready steps
of the plan in up to ``concurrent_steps`` threads of the command's process
(``run.concurrent_steps``, default 1), all sharing what one process shares: the run's resources
(one Spark session, one warehouse), the instance and its pools (one writer per table, as
before), the log capture. The dependency rules are Dagster's own (``ActiveExecution``): a step
starts only when every step it depends on succeeded, a blocking check still stops what is
downstream of it, and a failed step's downstream never starts. With a limit of 1 it runs the
steps in the order Dagster's in-process executor does.

Several steps at once pay only where cores are to spare: on 2 cores the demo is slower with 2
or 3 (docs/orchestration.md, "How a run executes its steps", has the figures), because its
Spark steps, checks and trainings each keep a core busy and slow each other down.

Lanes: some work holds state that is global to a process, so a run never runs two steps of
the same *lane* at once (:data:`LANE_TAG` on the step's op, limits in :data:`LANE_LIMITS`):

- ``torch``: the model assets. A model whose step shares the process trains in a child
  process (:mod:`orchestration.training_process`: torch's generator, thread pool and the
  interpreter lock are per process); one training at a time keeps a core for the rest.
- ``beam``: an ingestion step runs a Beam pipeline on the in-process DirectRunner.
- ``checks``: a Great Expectations validation (GX's contexts and template caches are not made
  to be shared between threads).

Everything else (Spark steps submit their jobs to the one session, whose scheduler interleaves
them; Python steps on Arrow and pandas) runs side by side up to the step limit.

Output: events are yielded in the order steps produce them, so the progress lines of steps in
flight interleave; each line names its step. Ctrl-C or SIGTERM (which Dagster captures for the
run) ends the run within the loop's poll (:data:`_POLL_S`): the steps in flight are abandoned
with the process and their pool slots freed, and a commit they had not made is not made
(commits are atomic; the last good version stays current). ``recfeat`` then says so in one line.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack

import dagster as dg

#: Op tag naming a step's lane (:data:`LANE_LIMITS`).
LANE_TAG = "recfeat/lane"
#: Lanes and how many steps of each may run at once in one run.
LANE_LIMITS = {"torch": 1, "beam": 1, "checks": 1}

#: The engine event message that starts the run's end on Ctrl-C or SIGTERM.
INTERRUPTED = "Interrupted"

_STEP_THREAD = threading.local()


def shares_process() -> bool:
    """Whether the calling step runs in a thread of a run that may run other steps at the same
    time in this process (a model asset then trains in a child process:
    :mod:`orchestration.training_process`)."""
    return getattr(_STEP_THREAD, "shared", False)


def lane_tags(lane: str) -> dict[str, str]:
    """The op tags that put a step in ``lane`` (one of :data:`LANE_LIMITS`)."""
    if lane not in LANE_LIMITS:
        raise ValueError(f"unknown lane {lane!r}; known: {sorted(LANE_LIMITS)}")
    return {LANE_TAG: lane}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def concurrent_steps(settings) -> int:
    """The run's step limit (``run.concurrent_steps``)."""
    return settings.run.concurrent_steps


def threaded_executor(max_concurrent: int) -> dg.ExecutorDefinition:
    """An executor definition that runs a plan's steps in up to ``max_concurrent`` threads of
    this process (``1``: one after another, like Dagster's in-process executor)."""
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")

    @dg.executor(name="recfeat_threads")
    def _create(_init_context):
        return ThreadedExecutor(max_concurrent)

    return _create


class ThreadedExecutor(dg.Executor):
    """Runs the ready steps of a plan in threads (see the module docstring)."""

    def __init__(self, max_concurrent: int):
        from dagster._core.execution.retries import RetryMode
        from dagster._core.execution.step_dependency_config import StepDependencyConfig

        self.max_concurrent = max_concurrent
        self._retries = RetryMode.ENABLED
        self._step_dependency_config = StepDependencyConfig.default()

    @property
    def retries(self):
        return self._retries

    @property
    def step_dependency_config(self):
        return self._step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        from dagster._core.events import DagsterEvent, EngineEventData
        from dagster._core.execution.api import ExecuteRunWithPlanIterable
        from dagster._core.execution.context_creation_job import PlanExecutionContextManager

        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()}), up to {self.max_concurrent} at a time in threads",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )
        yield from iter(ExecuteRunWithPlanIterable(
            execution_plan=plan_context.execution_plan,
            iterator=lambda job_context, execution_plan: _threaded_iterator(job_context, execution_plan, self.max_concurrent),
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=plan_context.execution_plan,
                run_config=plan_context.run_config,
                dagster_run=plan_context.dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
                step_dependency_config=self.step_dependency_config,
            ),
        ))
        yield DagsterEvent.engine_event(
            plan_context, f"Finished steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), keys),
        )


_DONE = object()
#: Seconds the loop waits for an event before it looks again for steps that became ready
#: without one (a pool slot another run freed, a retry's wait that ended).
_POLL_S = 0.5


def _run_step(step_context, out: queue.Queue, shared: bool) -> None:
    """Thread body: every event of one step onto ``out``, then ``_DONE`` (or the exception of a
    framework failure; a failure in the step's own code is a step-failure event)."""
    from dagster._core.execution.plan.execute_plan import dagster_event_sequence_for_step

    key = step_context.step.key
    _STEP_THREAD.shared = shared
    try:
        for event in dagster_event_sequence_for_step(step_context):
            out.put((key, event))
    except BaseException:  # noqa: BLE001 - handed to the loop, which raises it in the run's thread
        out.put((key, sys.exc_info()))
        return
    out.put((key, _DONE))


def _threaded_iterator(job_context, execution_plan, max_concurrent: int) -> Iterator[dg.DagsterEvent]:
    """Dagster's in-process plan loop (``inner_plan_execution_iterator``), with up to
    ``max_concurrent`` steps in flight and :data:`LANE_LIMITS` applied through the steps' tags."""
    from dagster._core.errors import DagsterExecutionInterruptedError
    from dagster._core.events import DagsterEvent, EngineEventData
    from dagster._core.execution.compute_logs import create_compute_log_file_key
    from dagster._core.execution.plan.execute_plan import (
        _handle_compute_log_setup_error,
        _handle_compute_log_teardown_error,
        _trigger_hook,
    )
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    limits = [{"key": LANE_TAG, "value": lane, "limit": n} for lane, n in LANE_LIMITS.items()]
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    events: queue.Queue = queue.Queue()
    running: dict[str, tuple] = {}  # step key -> (step context, its events so far)
    with InstanceConcurrencyContext(job_context.instance, job_context.dagster_run) as concurrency, \
            execution_plan.start(
                retry_mode=job_context.retry_mode,
                max_concurrent=max_concurrent,
                tag_concurrency_limits=limits,
                instance_concurrency_context=concurrency,
                step_dependency_config=job_context.step_dependency_config,
            ) as active:
        with ExitStack() as capture:  # closed on the way out, an interrupt included (as Dagster's loop does)
            try:
                log_key = compute_log_manager.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
                log_context = capture.enter_context(compute_log_manager.capture_logs(log_key))
                yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
            except Exception:  # noqa: BLE001 - as Dagster's loop does: the run goes on without capture
                yield from _handle_compute_log_setup_error(job_context, sys.exc_info())

            while not active.is_complete or running:
                if active.check_for_interrupts():  # Ctrl-C / SIGTERM, captured by Dagster for the run
                    active.mark_interrupted()
                    in_flight = sorted(running)
                    yield DagsterEvent.engine_event(
                        job_context, f"{INTERRUPTED}: abandoning the steps in flight ({', '.join(in_flight) or 'none'})",
                        EngineEventData.interrupted(in_flight),
                    )
                    storage = job_context.instance.event_log_storage
                    if storage.supports_global_concurrency_limits:  # their threads go with the process
                        for key in running:
                            storage.free_concurrency_slot_for_step(job_context.run_id, key)
                    raise DagsterExecutionInterruptedError()
                if not active.is_complete:
                    for step in active.get_steps_to_execute(limit=max_concurrent - len(running)):
                        step_context = job_context.for_step(step, active.get_known_state())
                        running[step.key] = (step_context, [])
                        threading.Thread(target=_run_step, args=(step_context, events, max_concurrent > 1), daemon=True,
                                         name=f"recfeat-step-{step.key}").start()
                    yield from active.concurrency_event_iterator(job_context)
                if not running:
                    if not active.is_complete:
                        active.sleep_til_ready()
                    continue
                try:
                    key, item = events.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                step_context, step_events = running[key]
                if isinstance(item, DagsterEvent):
                    step_events.append(item)
                    yield item
                    active.handle_event(item)
                    continue
                del running[key]
                if item is not _DONE:  # the step's thread failed outside the step's own code
                    raise item[1].with_traceback(item[2])
                active.verify_complete(job_context, key)
                for event in active.plan_events_iterator(job_context):  # skips after failures
                    step_events.append(event)
                    yield event
                yield from _trigger_hook(step_context, step_events)

            try:
                capture.close()
            except Exception:  # noqa: BLE001
                yield from _handle_compute_log_teardown_error(job_context, sys.exc_info())
