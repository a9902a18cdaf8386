"""DIN training and evaluation: length-bucketed batches, gAUC / AUC / logloss, the run, the registry spec."""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from trainers import metrics as M
from trainers.data import encoders_record
from trainers.din.config import EVENTS_TABLE, ITEMS_TABLE, LOWER_IS_BETTER, MODEL_NAME, DINConfig
from trainers.din.data import DINData, Impressions, history_arrays, load_din_data
from trainers.din.model import DIN
from trainers.loop import deterministic, fit, measure_loader, per_second
from trainers.runs import RunResult, pinned_while_training, save_run
from trainers.spec import ModelSpec

#: Training batches sorted by history length together (see :func:`train_batches`).
BUCKET_BATCHES = 16


def batch_tensors(data: DINData, split: Impressions, rows: np.ndarray):
    """``(target, history, mask, label)`` tensors of ``rows``, histories padded to their longest."""
    codes, mask, _ = history_arrays(data, split, rows)
    return (torch.from_numpy(split.target[rows]), torch.from_numpy(codes), torch.from_numpy(mask),
            torch.from_numpy(split.label[rows]))


def train_batches(data: DINData, cfg: DINConfig, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled training batches ``(target, history, mask, label)``; the order depends on (seed, epoch) only.

    Length bucketing, as SASRec's: the shuffled rows are cut into groups of ``BUCKET_BATCHES``
    batches, each group is sorted by history length and cut into batches, the batches are
    shuffled, and each batch is padded to its own longest history. Padding changes no output
    (tested), and short histories (KuaiRand: 4.6 clicks per user) then cost little.
    """
    tr = data.splits["train"]
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(tr))
    lengths = tr.hist_len
    group = cfg.batch_size * BUCKET_BATCHES
    batches = []
    for g in range(0, len(order), group):
        chunk = order[g : g + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + cfg.batch_size] for i in range(0, len(chunk), cfg.batch_size)]
    for k in rng.permutation(len(batches)):
        yield batch_tensors(data, tr, np.sort(batches[k]))


def loss_of(model: DIN, batch) -> torch.Tensor:
    target, history, mask, label = batch
    return nn.functional.binary_cross_entropy_with_logits(model(target, history, mask), label)


@torch.no_grad()
def predict(model: DIN, data: DINData, split: Impressions, batch: int = 4_096) -> np.ndarray:
    """Logits of every impression of ``split`` (evaluation mode), in row order."""
    model.eval()
    out = np.zeros(len(split), np.float64)
    by_length = np.argsort(split.hist_len, kind="stable")  # similar lengths together: less padding
    for i in range(0, len(split), batch):
        rows = np.sort(by_length[i : i + batch])
        target, history, mask, _ = batch_tensors(data, split, rows)
        out[rows] = model(target, history, mask).double().numpy()
    return out


def evaluate_logits(split: Impressions, logits: np.ndarray) -> dict[str, float]:
    """gAUC (impression-weighted), AUC and logloss of ``sigmoid(logits)`` against the clicks."""
    y = split.label.astype(bool)
    prob = 1.0 / (1.0 + np.exp(-logits))
    return {
        "gauc": M.gauc_impressions(split.users, y, logits),
        "auc": M.auc(y, logits),
        "logloss": M.logloss(y, prob),
        "rows": float(len(split)),
        "click_rate": float(y.mean()) if len(y) else float("nan"),
    }


def train_on_data(cfg: DINConfig, data: DINData, write_run: bool = True):
    """Train and evaluate ``cfg`` on loaded data (the benchmark loads once per data set)."""
    with deterministic(cfg.seed, cfg.threads) as environment:
        loader_sps = measure_loader(train_batches(data, cfg, 0), lambda b: len(b[0]))
        model = DIN([e.cardinality for e in (data.encoder.encoders[f] for f in data.fields)], cfg)
        t0 = time.perf_counter()
        res = fit(
            model, loss_of, lambda epoch: train_batches(data, cfg, epoch),
            lambda m: evaluate_logits(data.splits["valid"], predict(m, data, data.splits["valid"], cfg.eval_batch)),
            cfg.select_metric, maximize=cfg.select_metric not in LOWER_IS_BETTER, epochs=cfg.epochs,
            patience=cfg.patience, lr=cfg.lr, weight_decay=cfg.weight_decay, progress=cfg.progress, desc=MODEL_NAME,
        )
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        test = evaluate_logits(data.splits["test"], predict(model, data, data.splits["test"], cfg.eval_batch))
        eval_s = time.perf_counter() - t1
    metrics = {
        **res.record(cfg.select_metric),
        "test": test,
        "rows": {k: len(s) for k, s in data.splits.items()},
        "mean_history_len": {k: float(s.hist_len.mean()) for k, s in data.splits.items()},
        "windows": {k: [a.isoformat(), b.isoformat()] for k, (a, b) in data.windows.items()},
        "fields": data.fields,
        "throughput": {
            "read_s": data.read_s,
            "loader_samples_per_s": loader_sps,
            "train_samples_per_s": res.train_samples_per_s,
            "eval_samples_per_s": per_second(len(data.splits["test"]), eval_s),
            "fit_wall_s": fit_s,
        },
    }
    config = cfg.model_dump(mode="json")
    run_dir = None
    if write_run:
        encoders = encoders_record(data.encoder, EVENTS_TABLE, data.windows["train"])
        run_dir = save_run(cfg.runs_root, MODEL_NAME, config, environment, encoders, model.state_dict(),
                            metrics, cfg.warehouse, data.tables)
    return RunResult(MODEL_NAME, run_dir, metrics, data.tables, config)


def train(cfg: DINConfig):
    """Load, then train with the versions read pinned until the run directory pins them."""
    data = load_din_data(cfg)
    with pinned_while_training(cfg.warehouse, data.tables, MODEL_NAME):
        return train_on_data(cfg, data)


def tables(cfg: DINConfig | None = None) -> list[str]:
    return [EVENTS_TABLE, ITEMS_TABLE] if cfg is None or cfg.item_fields else [EVENTS_TABLE]


SPEC = ModelSpec(
    name=MODEL_NAME,
    config_cls=DINConfig,
    train=train,
    tables=tables,
    description="DIN click-through model on events (point-in-time histories), optional CAPE in its target attention",
    select_metric="gauc",
)
