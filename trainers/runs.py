"""Run directories: everything needed to trace and reproduce one training run.

Layout (``<runs_root>/<model>/<run_id>/``)::

    config.json     the full validated config (re-run it with ``recfeat train MODEL --from-run DIR``)
    tables.json     every table read: its committed version, commit time, rows and partitions read
    encoders.json   the categorical encoders fitted on the training split
    metrics.json    validation and test metrics, the training history, throughput
    model.pt        the best checkpoint's ``state_dict`` (load with ``torch.load(..., weights_only=True)``)
    environment.json  python, torch, numpy versions and the host's thread settings

``run_id`` is ``<UTC time>-<config hash>``: two runs of the same config get different
directories, and the hash says which runs share a config.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class RunResult:
    """What a trainer returns: where the run is and its headline numbers."""

    model: str
    run_dir: Path
    metrics: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)


class RunDir:
    """A run directory being written."""

    def __init__(self, runs_root: str | Path, model: str, config: dict[str, Any]):
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self.path = Path(runs_root) / model / f"{stamp}-{config_hash(config)}"
        self.path.mkdir(parents=True, exist_ok=False)
        self.write_json("config.json", {"model": model, "config": config})
        self.write_json(
            "environment.json",
            {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "torch_threads": torch.get_num_threads(),
                "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            },
        )

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=_json_default))
        tmp.replace(path)
        return path

    def save_state(self, state_dict: dict[str, torch.Tensor]) -> Path:
        path = self.path / "model.pt"
        torch.save(state_dict, path)
        return path


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(run_dir: str | Path, name: str) -> Any:
    return json.loads((Path(run_dir) / name).read_text())


def load_state(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The run's checkpoint, loaded safely (tensors only)."""
    return torch.load(Path(run_dir) / "model.pt", weights_only=True)
