"""One line per step of a Dagster run, printed while the run executes.

:func:`progress_logger` is a Dagster logger (``dg.LoggerDefinition``): Dagster hands it every
record of the run, the structured events (step started, materialization, check evaluation,
step succeeded, failed, skipped or up for retry) as well as the messages steps log with
``context.log`` (a model asset forwards its trainer's per-epoch lines there). It turns them
into lines such as::

    start   ingest (events, rejected_events)
    done    ingest (events, rejected_events) in 12.3 s: events 3,000 rows, rejected_events 0 rows
    start   events_checks (events_quality, events_referential_integrity)
    done    events_checks in 6.1 s: events_quality passed, events_referential_integrity passed
    start   sasrec
      sasrec: epoch 1/2: train loss 0.6931, valid gauc 0.5120 (3.2 s)
    done    sasrec in 9.8 s

It also keeps what the caller needs after the run: the failed step and its one-line error,
and every check evaluation (:class:`RunProgress`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import dagster as dg

#: The name of the logger in the job's logger definitions and in run config.
PROGRESS_LOGGER = "recfeat_progress"


@dataclass
class StepState:
    started_at: float | None = None
    rows: dict[str, int] = field(default_factory=dict)  # asset -> row count (first partition's record)
    checks: dict[str, bool] = field(default_factory=dict)  # check name -> passed


@dataclass
class RunProgress:
    """What a run's progress logger saw; ``step_assets`` names the assets or checks of each step."""

    log: Callable[[str], None]
    step_assets: dict[str, list[str]]
    steps: dict[str, StepState] = field(default_factory=dict)
    failed_step: str | None = None
    failure: str | None = None
    check_evaluations: list = field(default_factory=list)
    clock: Callable[[], float] = time.perf_counter

    def label(self, step: str) -> str:
        names = self.step_assets.get(step) or []
        return step if names in ([], [step]) else f"{step} ({', '.join(names)})"

    def state(self, step: str) -> StepState:
        return self.steps.setdefault(step, StepState())

    def handle(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or (event.step_key if event is not None else None)
        if event is None:
            if step and record.levelno >= logging.INFO:  # a step's own context.log line
                text = (meta.get("orig_message") or record.getMessage()).strip()
                if text:
                    self.log(f"  {step}: {text.splitlines()[0]}")
            return
        kind = event.event_type_value
        if step is None:
            return
        st = self.state(step)
        if kind == "STEP_START":
            st.started_at = self.clock()
            self.log(f"start   {self.label(step)}")
        elif kind == "ASSET_MATERIALIZATION":
            mat = event.step_materialization_data.materialization
            name = mat.asset_key.to_user_string()
            value = mat.metadata.get("dagster/row_count")
            if value is not None and name not in st.rows:
                st.rows[name] = int(value.value)
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            self.check_evaluations.append(evaluation)
            st.checks[evaluation.check_name] = evaluation.passed
        elif kind == "STEP_SUCCESS":
            self.log(f"done    {self.label(step)} in {self.elapsed(st):.1f} s{self.summary(st)}")
        elif kind == "STEP_UP_FOR_RETRY":
            self.log(f"retry   {self.label(step)} after {self.elapsed(st):.1f} s")
        elif kind == "STEP_FAILURE":
            message = one_line_error(event)
            if self.failed_step is None:
                self.failed_step, self.failure = step, message
            self.log(f"failed  {self.label(step)} after {self.elapsed(st):.1f} s{self.summary(st)}: {message}")
        elif kind == "STEP_SKIPPED":
            self.log(f"skipped {self.label(step)} (an upstream step or blocking check failed)")

    def elapsed(self, st: StepState) -> float:
        return self.clock() - st.started_at if st.started_at is not None else 0.0

    @staticmethod
    def summary(st: StepState) -> str:
        parts = [f"{name} {rows:,} rows" for name, rows in st.rows.items()]
        parts += [f"{name} {'passed' if ok else 'FAILED'}" for name, ok in st.checks.items()]
        return f": {', '.join(parts)}" if parts else ""


def one_line_error(event) -> str:
    """The one-line reason of a failed step (a ``dg.Failure`` raised on purpose: its description)."""
    data = event.step_failure_data
    err = data.error if data is not None else None
    if err is None:
        return "see the Dagster run log"
    while err.cause is not None and "DagsterExecutionStepExecutionError" in err.cls_name:
        err = err.cause
    message = err.message.strip().splitlines()[0] if err.message.strip() else ""
    if err.cls_name == "Failure":  # raised on purpose with a one-line description (a commit conflict)
        return message.split(": ", 1)[-1]
    return message if message.startswith(f"{err.cls_name}:") else f"{err.cls_name}: {message}"


def progress_logger(progress: RunProgress) -> dg.LoggerDefinition:
    """A Dagster logger that feeds every record of the run to ``progress``."""

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                progress.handle(record)
            except Exception:  # noqa: BLE001 - progress lines must never fail a run
                self.handleError(record)

    def _build(_init_context) -> logging.Logger:
        logger = logging.Logger(PROGRESS_LOGGER, level=logging.DEBUG)
        logger.addHandler(_Handler())
        return logger

    return dg.LoggerDefinition(_build, description="recfeat: one line per step start and end, for the command line.")
