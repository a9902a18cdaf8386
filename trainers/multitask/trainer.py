"""The multi-task ranking trainer (``multitask``): config, training loop with Adam or PUB, evaluation.

Tasks on every impression of ``events`` (docs/training.md, "Multi-task ranking"): click, and
long view, like, follow and comment conditioned on the click (ESMM over the exposure space).
Backbones: ``single`` (one network per task), ``shared_bottom``, ``mmoe``, ``ple``; ``ektm`` adds
our EKTM modules on top of MMoE or PLE. Optimisers: ``adam`` (equal task weights: Adam on the
sum of the task losses) or ``pub`` (:class:`trainers.multitask.pub.PUB` on the shared
parameters, Adam on the task-specific ones). Model selection: the epoch with the best mean
validation AUC over the tasks (PUB's protocol), early stopping after ``patience`` epochs.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from trainers import metrics as M
from trainers.config import TrainerConfig
from trainers.data import encoders_record, tensor_batches
from trainers.loop import deterministic, log_epoch
from trainers.multitask.data import CLICK, EVENTS_TABLE, MultiTaskData, load_multitask_data
from trainers.multitask.losses import exposure_probs, task_losses
from trainers.multitask.models import build_model
from trainers.multitask.pub import PUB
from trainers.runs import RunResult, pinned_while_training, save_run
from trainers.spec import ModelSpec

MODEL_NAME = "multitask"
Task = Literal["click", "long_view", "like", "follow", "comment"]
Dims = tuple[Annotated[int, Field(ge=1)], ...]


class MultiTaskConfig(TrainerConfig):
    """Multi-task ranking settings (``training.models.multitask`` in ``recfeat.yaml``)."""

    tasks: tuple[Task, ...] = Field(("click", "long_view", "like", "follow", "comment"),
                                    description="click first; the others are conditioned on the click (ESMM)")
    backbone: Literal["single", "shared_bottom", "mmoe", "ple"] = "mmoe"
    ektm: bool = Field(False, description="our EKTM router/transmitter/enhanced modules on top (mmoe, ple)")
    optimizer: Literal["adam", "pub"] = Field("adam", description="adam: equal task weights; pub: PUB on the shared parameters")
    embed_dim: Annotated[int, Field(ge=1)] = 8
    bottom_dims: Dims = Field((64,), description="shared-bottom MLP (and each single-task network's MLP)")
    expert_dims: Dims = Field((64,), description="each MMoE/PLE expert's MLP")
    experts: Annotated[int, Field(ge=1)] = Field(4, description="MMoE experts")
    shared_experts: Annotated[int, Field(ge=1)] = Field(2, description="PLE shared experts")
    task_experts: Annotated[int, Field(ge=1)] = Field(1, description="PLE experts per task")
    tower_dims: Dims = (32,)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    ektm_dim: Annotated[int, Field(ge=1)] = Field(16, description="EKTM router attention size")
    ektm_gate_bias: float = Field(-2.0, description="initial bias of the EKTM enhanced-module gate")
    pub_update_every: Annotated[int, Field(ge=1)] = Field(10, description="PUB: steps between weight solves (F)")
    epochs: Annotated[int, Field(ge=1)] = 4
    patience: Annotated[int, Field(ge=1)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 1024
    weight_decay: Annotated[float, Field(ge=0)] = 1e-6
    eval_batch: Annotated[int, Field(ge=1)] = 8192

    @model_validator(mode="after")
    def _check(self) -> "MultiTaskConfig":
        if not self.tasks or self.tasks[0] != CLICK or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must start with {CLICK!r} and not repeat, got {list(self.tasks)}")
        if self.ektm and self.backbone not in ("mmoe", "ple"):
            raise ValueError(f"ektm needs a backbone with per-task representations (mmoe, ple), not {self.backbone!r}")
        if self.optimizer == "pub" and self.backbone == "single":
            raise ValueError("pub balances shared parameters; the single-task backbone has none (use adam)")
        return self


def make_model(cfg: MultiTaskConfig, cardinalities: list[int]) -> torch.nn.Module:
    return build_model(
        cfg.backbone, cardinalities, len(cfg.tasks), embed_dim=cfg.embed_dim, bottom_dims=cfg.bottom_dims,
        expert_dims=cfg.expert_dims, experts=cfg.experts, shared_experts=cfg.shared_experts,
        task_experts=cfg.task_experts, tower_dims=cfg.tower_dims, dropout=cfg.dropout, ektm=cfg.ektm,
        ektm_dim=cfg.ektm_dim, ektm_gate_bias=cfg.ektm_gate_bias,
    )


def predict(model: torch.nn.Module, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Exposure-space probabilities [rows, tasks]."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(exposure_probs(model(torch.from_numpy(x[i : i + batch])), model.conditional).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def evaluate(tasks: tuple[str, ...], y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC and logloss per task on the exposure space, and the mean AUC over the tasks."""
    out: dict[str, float] = {}
    for k, t in enumerate(tasks):
        out[f"auc_{t}"] = M.auc(y[:, k], p[:, k])
        out[f"logloss_{t}"] = M.logloss(y[:, k], p[:, k])
    out["auc_mean"] = float(np.mean([out[f"auc_{t}"] for t in tasks]))
    return out


class _EqualAdam:
    def __init__(self, model: torch.nn.Module, cfg: MultiTaskConfig):
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(self, losses: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()


def make_optimizer(model: torch.nn.Module, cfg: MultiTaskConfig):
    if cfg.optimizer == "adam":
        return _EqualAdam(model, cfg)
    return PUB(model.shared_parameters(), model.task_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
               update_every=cfg.pub_update_every)


def train_on_data(cfg: MultiTaskConfig, data: MultiTaskData, write_run: bool = True) -> RunResult:
    """Train and evaluate ``cfg`` on already loaded data (a benchmark loads once)."""
    if tuple(cfg.tasks) != tuple(data.tasks):
        raise ValueError(f"the config's tasks {list(cfg.tasks)} differ from the data's {list(data.tasks)}")
    train, valid, test = (data.splits[s] for s in ("train", "valid", "test"))
    with deterministic(cfg.seed, cfg.threads) as environment:
        model = make_model(cfg, data.encoder.cardinalities)
        opt = make_optimizer(model, cfg)
        best, best_epoch, best_metrics, history = -math.inf, -1, {}, []
        best_state = copy.deepcopy(model.state_dict())
        samples, train_s, stopped, epoch = 0, 0.0, False, -1
        t_fit = time.perf_counter()
        for epoch in range(cfg.epochs):
            model.train()
            total, n = torch.zeros(len(cfg.tasks), dtype=torch.float64), 0
            t0 = time.perf_counter()
            for step, (x, y) in enumerate(tensor_batches(train, ["y"], cfg.batch_size, cfg.seed, epoch)):
                losses = task_losses(model(x), y, model.conditional)
                if not torch.isfinite(losses).all():
                    raise FloatingPointError(f"non-finite loss {losses.tolist()} at epoch {epoch}, step {step}")
                opt.step(losses)
                total += losses.detach().double()
                n += 1
                samples += len(x)
            train_s += time.perf_counter() - t0
            metrics = evaluate(data.tasks, valid.columns["y"], predict(model, valid.x, cfg.eval_batch))
            score = metrics["auc_mean"]
            improved = score > best
            history.append({"epoch": epoch, "train_loss": dict(zip(cfg.tasks, (total / max(n, 1)).tolist())), **metrics})
            log_epoch(MODEL_NAME, epoch, float((total / max(n, 1)).sum()), "auc_mean", score, time.perf_counter() - t0,
                      improved, cfg.progress)
            if improved:
                best, best_epoch, best_metrics = score, epoch, metrics
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= cfg.patience:
                stopped = True
                break
        fit_s = time.perf_counter() - t_fit
        model.load_state_dict(best_state)
        test_metrics = evaluate(data.tasks, test.columns["y"], predict(model, test.x, cfg.eval_batch))
    metrics = {
        "valid": best_metrics,
        "test": test_metrics,
        "best_epoch": best_epoch,
        "epochs_run": epoch + 1,
        "stopped_early": stopped,
        "select_metric": "auc_mean",
        "history": history,
        "rows": {k: len(s) for k, s in data.splits.items()},
        "positives": data.positives(),
        "windows": {k: [a.isoformat(), b.isoformat()] for k, (a, b) in data.windows.items()},
        "parameters": {"shared": sum(p.numel() for p in model.shared_parameters()),
                       "task": sum(p.numel() for p in model.task_parameters())},
        "throughput": {"train_samples_per_s": samples / train_s if train_s > 0 else 0.0, "fit_wall_s": fit_s},
    }
    if isinstance(opt, PUB):
        metrics["pub"] = {"final_weights": dict(zip(cfg.tasks, opt.alpha.tolist())), "solves": dict(opt.solves)}
    config = cfg.model_dump(mode="json")
    run_dir = None
    if write_run:
        encoders = encoders_record(data.encoder, EVENTS_TABLE, data.windows["train"])
        run_dir = save_run(cfg.runs_root, MODEL_NAME, config, environment, encoders, model.state_dict(),
                            metrics, cfg.warehouse, data.tables)
    return RunResult(MODEL_NAME, run_dir, metrics, data.tables, config)


def load_data(cfg: MultiTaskConfig) -> MultiTaskData:
    return load_multitask_data(cfg.warehouse, cfg.split, tuple(cfg.tasks), cfg.table_versions)


def train(cfg: MultiTaskConfig) -> RunResult:
    """Load, then train with the versions read pinned until the run directory pins them."""
    data = load_data(cfg)
    with pinned_while_training(cfg.warehouse, data.tables, MODEL_NAME):
        return train_on_data(cfg, data)


def tables(cfg: MultiTaskConfig | None = None) -> list[str]:
    return [EVENTS_TABLE, "items", "users"]


SPEC = ModelSpec(
    name=MODEL_NAME,
    config_cls=MultiTaskConfig,
    train=train,
    tables=tables,
    description="Multi-task ranking on events (click, long view, like, follow, comment; ESMM): "
                "single-task, shared-bottom, MMoE, PLE, optional EKTM; Adam or PUB (docs/training.md)",
    select_metric="auc_mean",
)
MULTITASK = SPEC
