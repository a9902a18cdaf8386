"""The watch-time trainer: config, evaluation protocol, and the two models' specs (``SPECS``).

``watch_time_fm`` and ``watch_time_deepfm`` train a backbone on one label of
``watch_time_labels`` and evaluate it on the validation and test days:

- ranking against the long-view relevance label (``relevance``: D²Co's ``is_long_view_d2co`` by
  default): AUC, GAUC, nDCG@1/3/5, by the raw score;
- watch-time accuracy in seconds (the label's own map back to seconds): MAE, XAUC, XGAUC;
- on synthetic sources also nDCG@k against the planted interest (``ndcg@k_interest``).
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from features.labels.names import RELEVANCE_LABELS, TRAINING_LABELS
from trainers import metrics as M
from trainers.config import TrainerConfig
from trainers.data import tensor_batches
from trainers.loop import deterministic, fit, measure_loader
from trainers.runs import RunResult, pinned_while_training, save_run
from trainers.spec import ModelSpec
from trainers.watch_time.data import LABELS_TABLE, STATS_TABLE, WatchTimeData, load_watch_time_data
from trainers.watch_time.labels import LabelParams, PreparedLabels, prepare_labels, score_to_seconds
from trainers.watch_time.losses import cwm_loss, regression, soft_bce
from trainers.watch_time.models import build_backbone

NDCG_KS = (1, 3, 5)
#: Metrics where lower is better (model selection minimises them).
LOWER_IS_BETTER = {"mae"}


class WatchTimeConfig(TrainerConfig):
    backbone: Literal["fm", "deepfm"] = "fm"
    label: Literal[TRAINING_LABELS] = "d2co"  # type: ignore[valid-type]  # features.labels.names
    embed_dim: int = Field(10, ge=1)
    mlp_dims: tuple[int, ...] = (64, 64, 64)
    dropout: float = Field(0.2, ge=0, lt=1)
    relevance: Literal[RELEVANCE_LABELS] = Field("d2co", description="long-view label ranked against")  # type: ignore[valid-type]
    select_metric: Literal["gauc", "auc", "ndcg@1", "ndcg@3", "ndcg@5", "mae", "xauc", "xgauc"] = "gauc"
    d2co_alpha: float = Field(0.0, description="D²Co α (0: the affine form)")
    d2co_window: int = Field(3, ge=1, description="D²Co smoothing T (window 2T-1 durations)")
    d2co_smoothing: Literal["positional", "seconds"] = "positional"
    d2q_bins: int | None = Field(None, ge=1, description="D2Q bin count; null: the table's bins")
    cwm_c_inv: float = Field(40.0, gt=0, description="CWM cost inverse c_inv (seconds)")
    cwm_sigma: float = Field(2.0, gt=0, description="CWM σ")
    check_label_window: bool = Field(True, description="refuse duration_stats fitted outside the training days")


def label_params(cfg: WatchTimeConfig) -> LabelParams:
    return LabelParams(cfg.label, cfg.d2co_alpha, cfg.d2co_window, cfg.d2co_smoothing, cfg.d2q_bins, cfg.cwm_c_inv)


def predict(model: torch.nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    model.eval()
    out = []
    xt = torch.from_numpy(x)
    with torch.no_grad():
        for i in range(0, len(xt), batch_size):
            out.append(model(xt[i : i + batch_size]).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_split(
    data: WatchTimeData, prep: PreparedLabels, hp: LabelParams, cfg: WatchTimeConfig, split: str, score: np.ndarray
) -> dict[str, float]:
    c = data.splits[split].columns
    users = data.groups[split]
    rel = c["is_long_view_d2co"] if cfg.relevance == "d2co" else c["is_long_view_cwm"]
    w = c["watch_time_s"]
    seconds = score_to_seconds(data, prep, hp, split, score)
    out = {"auc": M.auc(rel, score), "gauc": M.gauc(users, rel, score)}
    for k in NDCG_KS:
        out[f"ndcg@{k}"] = M.ndcg_at_k(users, rel, score, k)
    out.update({"mae": M.mae(w, seconds), "xauc": M.xauc(w, seconds), "xgauc": M.xgauc(users, w, seconds)})
    if split in data.interest and np.isfinite(data.interest[split]).all():
        for k in NDCG_KS:
            out[f"ndcg@{k}_interest"] = M.ndcg_at_k(users, data.interest[split], score, k)
    return out


def _loss_fn(cfg: WatchTimeConfig):
    if cfg.label == "cwm":
        return lambda model, b: cwm_loss(model(b[0]), b[1], b[2], cfg.cwm_sigma)
    if cfg.label == "watch_time":
        return lambda model, b: regression(model(b[0]), b[1])
    return lambda model, b: soft_bce(model(b[0]), b[1])


def train_on_data(cfg: WatchTimeConfig, data: WatchTimeData, name: str, write_run: bool = True) -> RunResult:
    """Train and evaluate ``cfg`` on already loaded data (a grid loads once)."""
    hp = label_params(cfg)
    prep = prepare_labels(data, hp)
    train = data.splits["train"]
    train.columns["_target"] = prep.targets["train"].astype(np.float32)
    train.columns["_censored"] = train.columns["is_censored"]

    def batches(epoch):
        for b in tensor_batches(train, ["_target", "_censored"], cfg.batch_size, cfg.seed, epoch):
            if len(b[0]) > 1:  # BatchNorm needs two rows
                yield b

    with deterministic(cfg.seed, cfg.threads) as environment:
        loader_sps = measure_loader(batches(0), lambda b: len(b[0]))
        model = build_backbone(cfg.backbone, data.encoder.cardinalities, cfg.embed_dim, cfg.mlp_dims, cfg.dropout)

        def evaluate(m):
            return evaluate_split(data, prep, hp, cfg, "valid", predict(m, data.splits["valid"].x))

        t0 = time.perf_counter()
        result = fit(
            model,
            _loss_fn(cfg),
            batches,
            evaluate,
            cfg.select_metric,
            maximize=cfg.select_metric not in LOWER_IS_BETTER,
            epochs=cfg.epochs,
            patience=cfg.patience,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            progress=cfg.progress,
            desc=name,
        )
        wall = time.perf_counter() - t0
        test = evaluate_split(data, prep, hp, cfg, "test", predict(model, data.splits["test"].x))
    metrics = {
        **result.record(cfg.select_metric),
        "test": test,
        "rows": {k: len(s) for k, s in data.splits.items()},
        "windows": {k: [a.isoformat(), b.isoformat()] for k, (a, b) in data.windows.items()},
        "throughput": {
            "read_encode_samples_per_s": data.loader_samples_per_s,
            "loader_samples_per_s": loader_sps,
            "train_samples_per_s": result.train_samples_per_s,
            "fit_wall_s": wall,
        },
    }
    config = cfg.model_dump(mode="json")
    run_dir = None
    if write_run:
        run_dir = save_run(cfg.runs_root, name, config, environment, data.encoder.to_json(), model.state_dict(),
                            metrics, cfg.warehouse, data.tables)
    return RunResult(name, run_dir, metrics, data.tables, config)


def load_data(cfg: WatchTimeConfig) -> WatchTimeData:
    return load_watch_time_data(cfg.warehouse, cfg.split, versions=cfg.table_versions, check_label_window=cfg.check_label_window)


def train(cfg: WatchTimeConfig, name: str) -> RunResult:
    """Load, then train with the versions read pinned until the run directory pins them."""
    data = load_data(cfg)
    with pinned_while_training(cfg.warehouse, data.tables, name):
        return train_on_data(cfg, data, name)


def tables(cfg: WatchTimeConfig | None = None) -> list[str]:
    return [LABELS_TABLE, STATS_TABLE, "items", "users"]


def _spec(name: str, backbone: str) -> ModelSpec:
    cls = type(f"{name.title().replace('_', '')}Config", (WatchTimeConfig,), {"__annotations__": {"backbone": Literal["fm", "deepfm"]}, "backbone": backbone})
    return ModelSpec(
        name=name,
        config_cls=cls,
        train=lambda cfg: train(cfg, name),
        tables=tables,
        description=f"{backbone.upper()} on a debiased watch-time label (docs/training.md)",
        select_metric="gauc",
    )


WATCH_TIME_FM = _spec("watch_time_fm", "fm")
WATCH_TIME_DEEPFM = _spec("watch_time_deepfm", "deepfm")
#: The registry's entries (``trainers.registry.MODELS``).
SPECS = (WATCH_TIME_FM, WATCH_TIME_DEEPFM)
