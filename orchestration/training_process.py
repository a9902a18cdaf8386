"""Train a model in a child process of the run, so that it runs beside the run's other steps.

A model's training holds state that is global to a process: it seeds torch's generator, sets
torch's thread pool and runs a Python loop that holds the interpreter lock between tensor
operations. In a run that executes several steps at once in threads of one process
(:mod:`orchestration.executor`), that loop slows the other steps' Spark calls and checks, and
theirs slow it. A model asset therefore trains in a child process when its step shares the
process with other steps (:func:`orchestration.executor.shares_process`); run alone (Dagster's
in-process or multiprocess executor, ``recfeat train``) it trains in its own process as before.

The child is forked from a *forkserver* that has imported torch and the trainers once
(:data:`PRELOAD`), so a training starts in milliseconds, not the seconds of a fresh
interpreter. What crosses the pipe: the model name and its validated config's fields going in (the child
validates them again with the same config class); the
trainer's ``recfeat.train`` INFO lines (forwarded to the step's log as they come) and the
trainer's result (or its exception, with the child's traceback as a note) coming back. The
child's model, run directory and MLflow run are the same as in process: the same seed, the
same thread count, the same code. If the run's process dies, the child stops within a second
(it watches its parent), leaving any commit it had not made unmade.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from typing import Any, Callable

#: Modules the forkserver imports once, before it forks any training.
PRELOAD = ["torch", "trainers.registry"]

_CONTEXT = None
_LOCK = threading.Lock()


class TrainingProcessDied(RuntimeError):
    """The child ended without a result or an error (killed, out of memory)."""


def _context():
    global _CONTEXT
    with _LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _CONTEXT = ctx
        return _CONTEXT


class _PipeHandler(logging.Handler):
    def __init__(self, conn):
        super().__init__(level=logging.INFO)
        self._conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._conn.send(("log", record.getMessage()))
        except Exception:  # noqa: BLE001 - a log line must never fail a training
            self.handleError(record)


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(3)  # the run is gone: stop training, write nothing more
        except PermissionError:  # a pid that was reused by another user's process
            os._exit(3)


def _child(name: str, fields: dict, conn, parent_pid: int) -> None:
    from trainers.loop import TRAIN_LOGGER
    from trainers.registry import get_model

    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    logger = logging.getLogger(TRAIN_LOGGER)
    logger.setLevel(logging.INFO)
    logger.addHandler(_PipeHandler(conn))
    try:
        spec = get_model(name)
        result = spec.train(spec.config_cls.model_validate(fields))
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        text = traceback.format_exc()
        try:
            conn.send(("error", exc, text))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and message
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), text))
    else:
        conn.send(("result", result))
    finally:
        conn.close()


def train_in_child(name: str, cfg: Any, log: Callable[[str], None]) -> Any:
    """``trainers.registry.get_model(name).train(cfg)`` in a child process; ``log`` gets the
    trainer's ``recfeat.train`` INFO lines as they come. Returns the trainer's result; raises
    the trainer's exception (its child traceback attached as a note), or
    :class:`TrainingProcessDied` when the child ends without either."""
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    # The config classes are built at import (not picklable): the child validates the fields again.
    proc = ctx.Process(target=_child, args=(name, cfg.model_dump(), send, os.getpid()), name=f"recfeat-train-{name}")
    proc.start()
    send.close()
    outcome = None
    try:
        while True:
            try:
                message = receive.recv()
            except EOFError:
                break
            if message[0] == "log":
                log(message[1])
            else:
                outcome = message
        proc.join()
    finally:
        receive.close()
        if proc.is_alive():  # the step was interrupted: the training goes with it
            proc.terminate()
            proc.join(5)
    if outcome is None:
        raise TrainingProcessDied(f"training {name} ended without a result (exit code {proc.exitcode})")
    if outcome[0] == "error":
        exc = outcome[1]
        exc.add_note(f"in the training process of {name}:\n{outcome[2]}")
        raise exc
    return outcome[1]
