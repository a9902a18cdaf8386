"""Per-epoch progress: every trainer logs one INFO line per epoch on ``recfeat.train``."""
from __future__ import annotations

import logging
import math
import re
import sys
from pathlib import Path

import torch

from trainers.config import build_config
from trainers.loop import TRAIN_LOGGER, fit
from trainers.registry import get_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _watch_time_tables import write_tables  # noqa: E402


def _epoch_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == TRAIN_LOGGER and r.levelno == logging.INFO]


def test_a_real_training_run_logs_one_line_per_epoch(warehouse, tmp_path, caplog):
    write_tables(warehouse, users=20, items=30)
    spec = get_model("watch_time_fm")
    cfg = build_config(spec.config_cls, {"warehouse": warehouse.uri, "runs_root": str(tmp_path / "runs"),
                                         "epochs": 2, "patience": 5, "progress": False})
    with caplog.at_level(logging.INFO, logger=TRAIN_LOGGER):
        result = spec.train(cfg)
    records = _epoch_records(caplog)
    assert [r.epoch for r in records] == [0, 1] == [h["epoch"] for h in result.metrics["history"]]
    for r, h in zip(records, result.metrics["history"]):
        assert r.model == "watch_time_fm" and r.valid_metric == "gauc"
        assert r.train_loss == h["train_loss"] and r.valid_score == h["gauc"]
        assert r.epoch_s >= 0 and math.isfinite(r.train_loss)
        pattern = rf"watch_time_fm epoch {r.epoch}: train loss {h['train_loss']:.4f}, valid gauc {h['gauc']:.4f}, \d+\.\d s"
        assert re.match(pattern, r.getMessage()), r.getMessage()


def test_epochs_between_evaluations_are_logged_too(caplog):
    torch.manual_seed(0)
    x, y = torch.randn(32, 2), torch.randn(32)

    def loss(model, batch):
        return torch.nn.functional.mse_loss(model(batch[0])[:, 0], batch[1])

    with caplog.at_level(logging.INFO, logger=TRAIN_LOGGER):
        fit(torch.nn.Linear(2, 1), loss, lambda epoch: iter([(x, y)]), lambda m: {"mse": 1.0}, "mse", maximize=False,
            epochs=3, patience=5, progress=False, desc="tiny", eval_interval=2)
    lines = [r.getMessage() for r in _epoch_records(caplog)]
    assert len(lines) == 3
    assert lines[0].startswith("tiny epoch 0: train loss ") and "valid mse not evaluated" in lines[0]
    assert "valid mse 1.0000" in lines[1] and "valid mse 1.0000" in lines[2]
