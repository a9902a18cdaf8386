"""The training loop every trainer shares: seeding, determinism, progress, early stopping.

:func:`fit` runs epochs of ``step`` over the batches ``batches(epoch)`` yields, evaluates on the
validation split after each epoch, keeps the best state (by ``select_metric``) and stops after
``patience`` epochs without a gain. It measures samples per second for the loader alone and for
training (loader + forward + backward + step), so a slow loader shows up.

Progress: every epoch ends with one INFO line on the ``recfeat.train`` logger
(:data:`TRAIN_LOGGER`, :func:`log_epoch`): the model, the epoch, the mean training loss, the
validation metric (or ``not evaluated`` between evaluations) and the epoch's seconds; the
record also carries them as attributes (``model``, ``epoch``, ``train_loss``,
``valid_metric``, ``valid_score``, ``epoch_s``). With ``progress`` the same line goes to stderr
beside the tqdm bar.

Determinism: :func:`deterministic` seeds Python, NumPy and torch, turns on
``torch.use_deterministic_algorithms`` and pins the intra-op thread count, so the same config and
seed reproduce the same metrics on the same machine.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm


#: The logger of the per-epoch progress lines (INFO), whatever runs the trainer.
TRAIN_LOGGER = "recfeat.train"
_train_log = logging.getLogger(TRAIN_LOGGER)


def log_epoch(
    model: str, epoch: int, train_loss: float, metric: str, score: float | None, seconds: float,
    improved: bool = False, progress: bool = False,
) -> str:
    """Log one epoch's line on :data:`TRAIN_LOGGER` (and print it to stderr with ``progress``);
    ``score`` is ``None`` for an epoch that was not evaluated. Returns the line."""
    metric = metric.removeprefix("valid_")  # SASRec selects on "valid_ndcg@10": the line says "valid ndcg@10"
    valid = "not evaluated" if score is None else f"{score:.4f}"
    line = (f"{model} epoch {epoch}: train loss {train_loss:.4f}, valid {metric} {valid}, {seconds:.1f} s"
            + (" (best so far)" if improved else ""))
    _train_log.info(line, extra={"model": model, "epoch": epoch, "train_loss": train_loss, "valid_metric": metric,
                                 "valid_score": score, "epoch_s": seconds})
    if progress:
        print(line, file=sys.stderr)
    return line


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 1):
    """Seed everything and run torch deterministically; restore the previous state afterwards.

    Yields the environment record (``trainers.runs.environment_record``) taken with these
    settings in force, for the run directory's ``environment.json``.
    """
    from trainers.runs import environment_record

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield environment_record()
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    best_metrics: dict[str, float]
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples_per_s: float = 0.0
    loader_samples_per_s: float = 0.0
    stopped_early: bool = False


    def record(self, select_metric: str, valid: dict[str, float] | None = None) -> dict[str, Any]:
        """The part of a run's ``metrics.json`` every trainer writes the same way: the best
        epoch's validation metrics (``valid``: those, renamed, when the trainer strips a prefix),
        the epoch counts, whether it stopped early, the selection metric and the history."""
        return {
            "valid": self.best_metrics if valid is None else valid,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "select_metric": select_metric,
            "history": self.history,
        }


def per_second(samples: int, seconds: float) -> float:
    """``samples / seconds``; NaN when nothing was timed (``seconds <= 0``)."""
    return samples / seconds if seconds > 0 else float("nan")


def measure_loader(batches: Iterator[Any], count: Callable[[Any], int]) -> float:
    """Samples per second of iterating ``batches`` alone (no model)."""
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        n += count(b)
    dt_ = time.perf_counter() - t0
    return n / dt_ if dt_ > 0 else float("inf")


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    batches: Callable[[int], Iterator[Any]],
    evaluate: Callable[[torch.nn.Module], dict[str, float]],
    select_metric: str,
    *,
    maximize: bool = True,
    epochs: int = 50,
    patience: int = 5,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    count: Callable[[Any], int] = lambda b: len(b[0]),
    progress: bool = True,
    desc: str = "train",
    eval_interval: int = 1,
) -> FitResult:
    """Train with Adam; keep and restore the best validation state; early-stop on ``patience``.

    ``lr``, ``weight_decay`` and ``betas`` go to ``torch.optim.Adam`` (``betas`` defaults to
    torch's (0.9, 0.999)).

    Validation runs after every ``eval_interval``-th epoch (epochs ``eval_interval - 1``,
    ``2 * eval_interval - 1``, ...) and after the last epoch; the official SASRec protocol
    evaluates every 20. ``patience`` counts *epochs* without a gain, so with an interval of 20
    and a patience of 40 training stops after two evaluations without a gain. The history holds
    one row per evaluated epoch.

    Each epoch logs one line (:func:`log_epoch`). A non-finite loss raises
    ``FloatingPointError`` naming the epoch and step.
    """
    if eval_interval < 1:
        raise ValueError(f"eval_interval must be >= 1, got {eval_interval}")
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    best = -math.inf if maximize else math.inf
    best_state = copy.deepcopy(model.state_dict())
    best_epoch, best_metrics, since, history = -1, {}, 0, []
    samples = 0
    train_time = 0.0
    stopped = False
    epoch = -1
    for epoch in range(epochs):
        model.train()
        total, n_batches = 0.0, 0
        t0 = time.perf_counter()
        bar = tqdm(batches(epoch), desc=f"{desc} epoch {epoch}", file=sys.stderr, disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch}, step {step}")
            loss.backward()
            opt.step()
            total += float(loss.detach())
            n_batches += 1
            samples += count(batch)
            if progress and step % 50 == 0:
                bar.set_postfix(loss=f"{total / n_batches:.4f}")
        train_time += time.perf_counter() - t0
        train_loss = total / max(n_batches, 1)
        if (epoch + 1) % eval_interval and epoch != epochs - 1:
            log_epoch(desc, epoch, train_loss, select_metric, None, time.perf_counter() - t0, progress=progress)
            continue
        model.eval()
        with torch.no_grad():
            metrics = evaluate(model)
        score = metrics[select_metric]
        improved = (score > best) if maximize else (score < best)
        if math.isnan(score):
            improved = False
        history.append({"epoch": epoch, "train_loss": train_loss, **metrics})
        log_epoch(desc, epoch, train_loss, select_metric, score, time.perf_counter() - t0, improved, progress)
        if improved:
            best, best_epoch, best_metrics, since = score, epoch, metrics, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since = epoch - best_epoch  # epochs since the best one (or since the start)
            if since >= patience:
                stopped = True
                break
    model.load_state_dict(best_state)
    return FitResult(
        best_epoch=best_epoch,
        best_score=float(best),
        best_metrics=best_metrics,
        epochs_run=epoch + 1,
        history=history,
        train_samples_per_s=samples / train_time if train_time > 0 else 0.0,
        stopped_early=stopped,
    )
