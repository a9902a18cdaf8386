"""Run directories: everything needed to trace and reproduce one training run.

Layout (``<runs_root>/<model>/<run_id>/``)::

    config.json     the full validated config (re-run it with ``recfeat train MODEL --from-run DIR``)
    tables.json     every table read: its committed version, commit time, rows and partitions read
    encoders.json   the categorical encoders fitted on the training split
    metrics.json    validation and test metrics, the training history, throughput
    model.pt        the best checkpoint's ``state_dict`` (load with ``torch.load(..., weights_only=True)``)
    environment.json  python, torch, numpy versions, the thread and determinism settings in force
                    while the model trained, and the code version (git commit and a dirty flag)

``run_id`` is ``<UTC time>-<config hash>``: two runs of the same config get different
directories, and the hash says which runs share a config.

Reproducing a run: ``recfeat train MODEL --from-run DIR`` reloads ``config.json`` and pins every
table to the version in ``tables.json`` (:func:`recorded_versions`). The versions a run read are
pinned in the warehouse (:func:`pin_tables`, ``features/layout.py``), so retention keeps them as
long as the run directory exists.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import platform
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch

from features.layout import TRAINING_PIN_S, pin_path, pin_record, pointer_path

REPO_ROOT = Path(__file__).resolve().parents[1]
_log = logging.getLogger("recfeat.trainers")


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


def code_version(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The code a run used: the git commit of the checkout and whether it had local changes.

    ``commit`` is ``None`` outside a git checkout (an installed package); ``dirty`` (changed
    tracked files or untracked files git does not ignore) is ``None`` when it cannot be told. ``package_version`` is the installed recfeat version.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("recfeat")
    except PackageNotFoundError:
        pkg = None
    out: dict[str, Any] = {"commit": None, "dirty": None, "package_version": pkg}
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return out
        out["commit"] = head.stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"],
            capture_output=True, text=True, timeout=30,
        )
        if status.returncode == 0:
            out["dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def environment_record() -> dict[str, Any]:
    """Versions and the torch settings in force now: call it inside ``trainers.loop.deterministic``."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "code": code_version(),
    }


class RunDir:
    """A run directory being written.

    ``environment``: the record taken while the model trained (``deterministic`` yields it);
    without it the current state is recorded.
    """

    def __init__(self, runs_root: str | Path, model: str, config: dict[str, Any],
                 environment: dict[str, Any] | None = None):
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self.model = model
        self.path = Path(runs_root) / model / f"{stamp}-{config_hash(config)}"
        self.path.mkdir(parents=True, exist_ok=False)
        self.write_json("config.json", {"model": model, "config": config})
        self.write_json("environment.json", environment if environment is not None else environment_record())

    def write_tables(self, warehouse: str, tables: dict[str, dict[str, Any]]) -> Path:
        """Write ``tables.json`` and pin every version read in the warehouse, kept while this run
        directory exists (write it last, once the checkpoint and metrics are saved)."""
        path = self.write_json("tables.json", tables)
        pin_tables(warehouse, tables, f"{self.model}--{self.path.name}", str(self.path.resolve()))
        return path

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


def pin_tables(warehouse: str, tables: dict[str, dict[str, Any]], name: str, run_dir: str | None = None,
               expires_in_s: float | None = None) -> list[str]:
    """Pin each ``tables[t]["version"]`` of ``warehouse`` under ``name`` (features/layout.py).

    Best effort: a warehouse the trainer may not write to (read-only credentials or mount) gets
    a logged warning instead of an error, and the run goes on; the tables that could not be
    pinned are returned. Each pin file is written to a temporary name and renamed.
    """
    failed = []
    try:
        fs, root = fsspec.core.url_to_fs(warehouse)
    except Exception as exc:  # noqa: BLE001 - an unusable warehouse URI fails elsewhere, loudly
        _log.warning("cannot pin table versions in %s: %s", warehouse, exc)
        return sorted(tables)
    root = root.rstrip("/")
    for table, record in sorted(tables.items()):
        if "version" not in record:
            continue
        path = pin_path(root, table, name)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            if not fs.exists(pointer_path(root, table)):
                continue
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(tmp, pin_record(int(record["version"]), run_dir, expires_in_s).encode())
            fs.mv(tmp, path)
        except OSError as exc:
            _log.warning("cannot pin %s version %s in %s (retention may remove it): %s",
                         table, record["version"], warehouse, exc)
            failed.append(table)
    return failed


def unpin_tables(warehouse: str, tables: list[str], name: str) -> None:
    """Remove the pins ``name`` of ``tables`` (best effort)."""
    try:
        fs, root = fsspec.core.url_to_fs(warehouse)
        for table in tables:
            path = pin_path(root.rstrip("/"), table, name)
            if fs.exists(path):
                fs.rm(path)
    except Exception as exc:  # noqa: BLE001 - an expired training pin is released anyway
        _log.warning("cannot remove pins %s in %s: %s", name, warehouse, exc)


@contextlib.contextmanager
def pinned_while_training(warehouse: str, tables: dict[str, dict[str, Any]], model: str):
    """Pin the versions a run has read until it ends (then the run directory's own pins hold).

    Retention cannot remove a version between the read and the end of a long run. The pin
    expires after ``TRAINING_PIN_S`` if the process is killed before it can remove it.
    """
    name = f"{model}--training-{uuid.uuid4().hex[:12]}"
    pin_tables(warehouse, tables, name, expires_in_s=TRAINING_PIN_S)
    try:
        yield name
    finally:
        unpin_tables(warehouse, sorted(tables), name)


class RunRecordError(ValueError):
    """A run directory cannot be reproduced (missing file, or a table version that is gone)."""


def recorded_versions(run_dir: str | Path) -> dict[str, int]:
    """Table -> the version the run read, from its ``tables.json``."""
    path = Path(run_dir) / "tables.json"
    if not path.exists():
        raise RunRecordError(f"{run_dir}: no tables.json, so the table versions the run read are unknown")
    return {t: int(r["version"]) for t, r in json.loads(path.read_text()).items() if "version" in r}
