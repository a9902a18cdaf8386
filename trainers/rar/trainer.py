"""RAR training and evaluation: batches, the joint loss, gAUC / AUC / logloss, the run, the registry spec."""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from trainers.data import encoders_record
from trainers.din.data import history_arrays
from trainers.din.trainer import evaluate_logits
from trainers.loop import deterministic, fit, measure_loader, per_second
from trainers.rar.config import (
    EVENTS_TABLE,
    ITEMS_TABLE,
    LOOKALIKE_TABLE,
    LOWER_IS_BETTER,
    MODEL_NAME,
    RECALL_TABLE,
    RARConfig,
)
from trainers.rar.data import RARData, load_rar_data
from trainers.rar.model import RAR
from trainers.runs import RunResult, pinned_while_training, save_run
from trainers.spec import ModelSpec


def batch_tensors(data: RARData, cfg: RARConfig, split: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The model's inputs for ``rows`` of ``split`` (histories only for DIN, sets only for the sources used)."""
    imp, sets = data.splits[split], data.sets[split]
    out = {"target": torch.from_numpy(imp.target[rows]), "user": torch.from_numpy(sets.user[rows]),
           "label": torch.from_numpy(imp.label[rows])}
    if cfg.backbone == "din":
        codes, mask, _ = history_arrays(data.din, imp, rows)
        out["history"], out["mask"] = torch.from_numpy(codes), torch.from_numpy(mask)
    # the data may hold wider sets than cfg asks for (loaded once for several variants): the first ranks
    if cfg.uses_u2u:
        out["lookalikes"] = torch.from_numpy(np.ascontiguousarray(sets.lookalikes[rows, : cfg.k_users]))
    if cfg.uses_i2i:
        out["pool"] = torch.from_numpy(data.item_codes[sets.pool[rows, : cfg.pool_size]])
    return out


def train_batches(data: RARData, cfg: RARConfig, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled training batches; the order depends on (seed, epoch) only."""
    n = len(data.splits["train"])
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    for i in range(0, n, cfg.batch_size):
        yield batch_tensors(data, cfg, "train", np.sort(order[i : i + cfg.batch_size]))


def joint_loss(model: RAR, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``BCE(click) + recall_loss_weight * BCE(recall-branch logit, click)`` (the second term with i2i only)."""
    logit, aux = model(batch)
    loss = nn.functional.binary_cross_entropy_with_logits(logit, batch["label"])
    if aux is not None and model.cfg.recall_loss_weight > 0:
        loss = loss + model.cfg.recall_loss_weight * nn.functional.binary_cross_entropy_with_logits(aux, batch["label"])
    return loss


@torch.no_grad()
def predict(model: RAR, data: RARData, cfg: RARConfig, split: str) -> np.ndarray:
    """Logits of every impression of ``split`` (evaluation mode), in row order."""
    model.eval()
    n = len(data.splits[split])
    out = np.zeros(n, np.float64)
    for i in range(0, n, cfg.eval_batch):
        rows = np.arange(i, min(i + cfg.eval_batch, n))
        out[rows] = model(batch_tensors(data, cfg, split, rows))[0].double().numpy()
    return out


def build_model(cfg: RARConfig, data: RARData) -> RAR:
    return RAR([data.din.encoder.encoders[f].cardinality for f in data.fields], data.n_users, cfg)


def train_on_data(cfg: RARConfig, data: RARData, write_run: bool = True) -> RunResult:
    """Train and evaluate ``cfg`` on loaded data (the benchmark loads once per backbone).

    ``data`` must hold every source ``cfg`` uses (it may hold more: a variant uses what it names).
    """
    missing = [s for s, t in (("u2u", LOOKALIKE_TABLE), ("i2i", RECALL_TABLE)) if s in cfg.sources and t not in data.builds]
    if missing:
        raise ValueError(f"sources {missing} were not loaded: load the data with them in sources")
    split = data.sets["train"]
    if cfg.uses_u2u and split.lookalikes.shape[1] < cfg.k_users or cfg.uses_i2i and split.pool.shape[1] < cfg.pool_size:
        raise ValueError(f"k_users {cfg.k_users} / pool_size {cfg.pool_size} exceed the loaded sets "
                         f"({split.lookalikes.shape[1]}, {split.pool.shape[1]}): load the data with them")
    with deterministic(cfg.seed, cfg.threads) as environment:
        loader_sps = measure_loader(train_batches(data, cfg, 0), lambda b: len(b["label"]))
        model = build_model(cfg, data)
        t0 = time.perf_counter()
        res = fit(
            model, joint_loss, lambda epoch: train_batches(data, cfg, epoch),
            lambda m: evaluate_logits(data.splits["valid"], predict(m, data, cfg, "valid")),
            cfg.select_metric, maximize=cfg.select_metric not in LOWER_IS_BETTER, epochs=cfg.epochs,
            patience=cfg.patience, lr=cfg.lr, weight_decay=cfg.weight_decay, count=lambda b: len(b["label"]),
            progress=cfg.progress, desc=MODEL_NAME,
        )
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        test = evaluate_logits(data.splits["test"], predict(model, data, cfg, "test"))
        eval_s = time.perf_counter() - t1
    metrics = {
        **res.record(cfg.select_metric),
        "test": test,
        "rows": {k: len(s) for k, s in data.splits.items()},
        "selection": data.selection_stats,
        "windows": {k: [a.isoformat(), b.isoformat()] for k, (a, b) in data.din.windows.items()},
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
        encoders = encoders_record(data.din.encoder, EVENTS_TABLE, data.din.windows["train"])
        encoders["rar_users"] = {"fitted_on": "users with a training impression", "users": len(data.user_ids)}
        run_dir = save_run(cfg.runs_root, MODEL_NAME, config, environment, encoders, model.state_dict(),
                           metrics, cfg.warehouse, data.tables)
    return RunResult(MODEL_NAME, run_dir, metrics, data.tables, config)


def train(cfg: RARConfig) -> RunResult:
    """Load, then train with the versions read pinned until the run directory pins them."""
    data = load_rar_data(cfg)
    with pinned_while_training(cfg.warehouse, data.tables, MODEL_NAME):
        return train_on_data(cfg, data)


def tables(cfg: RARConfig | None = None) -> list[str]:
    cfg = cfg or RARConfig()
    out = [EVENTS_TABLE] + ([ITEMS_TABLE] if cfg.item_fields else [])
    return out + ([LOOKALIKE_TABLE] if cfg.uses_u2u else []) + ([RECALL_TABLE] if cfg.uses_i2i else [])


SPEC = ModelSpec(
    name=MODEL_NAME,
    config_cls=RARConfig,
    train=train,
    tables=tables,
    description="RAR: a DeepFM or DIN click-through model with look-alike users and recall items (builds valid at each example's time)",
    select_metric="gauc",
)
