"""Time-sliced streaming evaluation: predict a slice, then learn from its labels.

The impressions after the base model's training window are cut into slices of ``hours`` UTC
hours (:func:`slice_ids`) and visited in time order. In each slice every impression is scored
*before* any label of that slice is used (no peeking); then the slice's labels are written into
the error memory (:func:`stream_memory`) or used for one pass of fine-tuning
(:func:`stream_fine_tune`, the incremental-training baseline). The base model is fixed during a
memory stream, so its logits and keys are computed once and the memory pass is pure
NumPy/torch.

Memory policy in a stream: the memory starts empty (the base model is new: a retrain resets
it), optionally is emptied every ``reset_every`` slices, and optionally decays with a
half-life of ``half_life`` slices (sketch only; docs/training.md, "ReLoop2").
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainers import metrics as M
from trainers.din import Impressions
from trainers.loop import fit
from trainers.reloop.memory import KNNMemory, Readout, SketchMemory
from trainers.reloop.models import ClickBase

HOUR_US = 3_600 * 1_000_000


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def slice_ids(ts_us: np.ndarray, hours: float = 1.0) -> np.ndarray:
    """The slice of each timestamp (µs since the epoch, UTC): ``floor(ts / hours)``, whole UTC hours."""
    width = int(round(hours * HOUR_US))
    if width <= 0:
        raise ValueError(f"slice width must be positive, got {hours} hours")
    return np.floor_divide(np.asarray(ts_us, np.int64), width)


def segments(slices: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of equal slice ids; the ids must not decrease (rows in time order)."""
    slices = np.asarray(slices)
    if len(slices) == 0:
        return []
    if np.any(np.diff(slices) < 0):
        raise ValueError("rows must be in time order (slice ids non-decreasing)")
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(slices)) + 1, [len(slices)]])
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))


def stream_memory(memory: SketchMemory | KNNMemory, keys: np.ndarray, base_prob: np.ndarray, labels: np.ndarray,
                  slices: np.ndarray, reset_every: int | None = None, half_life: float | None = None) -> Readout:
    """Per row, what ``memory`` answered when the row was scored: slice by slice, read every row
    of the slice, then write the slice's (key, label, base prediction). Starts from an empty memory."""
    memory.reset()
    parts = []
    factor = 0.5 ** (1.0 / half_life) if half_life else 1.0
    for j, (a, b) in enumerate(segments(slices)):
        if reset_every and j and j % reset_every == 0:
            memory.reset()
        parts.append(memory.read(keys[a:b]))  # the whole slice is scored before any of its labels is known
        memory.write(keys[a:b], labels[a:b], base_prob[a:b])
        if factor < 1.0:
            memory.decay(factor)
    return Readout.concat(parts)


def stream_fine_tune(base: ClickBase, model: nn.Module, split: Impressions, slices: np.ndarray, lr: float,
                     batch_size: int = 256, epochs: int = 1, seed: int = 0, weight_decay: float = 0.0) -> np.ndarray:
    """Logits of every row of ``split`` (time order) by a model fine-tuned after each slice: score
    the slice (evaluation mode), then ``epochs`` passes of Adam over its rows. One optimiser for
    the whole stream. A batch of one row is skipped (batch statistics need two). Batch order and
    dropout depend on ``(seed, slice)`` only."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    logits = np.zeros(len(split), np.float64)
    for j, (a, b) in enumerate(segments(slices)):
        rows = np.arange(a, b)
        logits[a:b], _ = base.score(model, split, rows)
        model.train()
        with torch.random.fork_rng(devices=[]):  # dropout draws from (seed, slice) only: reruns are identical
            torch.manual_seed(int(np.random.default_rng([seed, j]).integers(2**62)))
            for e in range(epochs):
                order = np.random.default_rng([seed, j, e]).permutation(rows)
                for i in range(0, len(order), batch_size):
                    idx = np.sort(order[i : i + batch_size])
                    if len(idx) < 2:
                        continue
                    opt.zero_grad(set_to_none=True)
                    base.loss(model, base.batch(split, idx)).backward()
                    opt.step()
    model.eval()
    return logits


def click_metrics(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC and gAUC (impression-weighted, :func:`trainers.metrics.gauc_impressions`) of ``scores``."""
    y = np.asarray(labels).astype(bool)
    return {"auc": M.auc(y, scores), "gauc": M.gauc_impressions(users, y, scores), "rows": int(len(y))}


def train_base(base: ClickBase, progress: bool = False):
    """Train ``base`` on its training days (early stopping on validation gAUC); returns (model, FitResult)."""
    cfg = base.cfg
    model = base.build()
    valid = base.data.splits["valid"]

    def evaluate(m):
        logits, _ = base.score(m, valid)
        return click_metrics(valid.users, valid.label, logits)

    res = fit(model, base.loss, base.train_batches, evaluate, "gauc", maximize=True, epochs=cfg.epochs,
              patience=cfg.patience, lr=cfg.lr, weight_decay=cfg.weight_decay, progress=progress, desc=base.name)
    return model, res
