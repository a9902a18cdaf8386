"""Run directories: everything needed to trace and reproduce one training run.

Layout (``<runs_root>/<model>/<run_id>/``)::

    config.json     the full validated config (re-run it with ``recfeat train MODEL --from-run DIR``)
    tables.json     every table read: its committed version, commit time, rows and partitions read
    encoders.json   the categorical encoders fitted on the training split
    metrics.json    validation and test metrics, the training history, throughput
    curves.png      training loss and the validation metric per epoch (trainers/curves.py)
    model.pt        the best checkpoint's ``state_dict`` (load with ``torch.load(..., weights_only=True)``)
    environment.json  python, torch, numpy versions, the thread and determinism settings in force
                    while the model trained, and the code version (git commit and a dirty flag)
    _COMPLETE       written last: the run finished and every file above is whole

``run_id`` is ``<UTC time>-<config hash>``: two runs of the same config get different
directories, and the hash says which runs share a config.

Crash safety: every file is written to a temporary name in the run directory
(``.<name>.tmp-<random>``), flushed to disk and renamed, so a file is either absent or whole.
:meth:`RunDir.write_tables`, a trainer's last write, ends by writing ``_COMPLETE``; a run
without it crashed or is still training. Readers (:func:`require_complete`,
:func:`recorded_versions`, :func:`read_run_config`, :func:`load_state`, :func:`list_runs`, and
every :class:`RunResult`) refuse or skip incomplete runs. Temporary files left by a crashed
run are removed by the next run of the same model once they are :data:`STALE_TMP_S` old
(:func:`clean_stale_tmp`).

Tracking: once complete, :func:`save_run` indexes the run in MLflow (``trainers/tracking.py``,
``training.tracking``); best effort, so an unreachable store never fails or loses a run. The
run directory stays the record; MLflow holds a copy of its files and its numbers for browsing.

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
import os
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from features.layout import TRAINING_PIN_S, delta_log_dir, pin_path, pin_record, pins_dir

if TYPE_CHECKING:  # torch is imported where a model is saved or loaded: listing runs needs none
    import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
_log = logging.getLogger("recfeat.trainers")

#: The file that marks a run directory complete (written last).
COMPLETE_MARKER = "_COMPLETE"
#: Temporary files are named ``.<name>.tmp-<random>``; ``<name>.tmp`` is what earlier versions left.
TMP_INFIX = ".tmp-"
#: Age in seconds after which a temporary file in a run directory is a crashed run's leftover.
STALE_TMP_S = 3600.0


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class RunResult:
    """What a trainer returns: where the run is and its headline numbers.

    ``run_dir`` (when not ``None``) must be a complete run directory: a trainer returns its
    result after :meth:`RunDir.write_tables`, and a result naming an incomplete run raises
    :class:`RunRecordError` (so neither ``recfeat train`` nor a model asset reports one).
    """

    model: str
    run_dir: Path
    metrics: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    #: The MLflow run that indexes ``run_dir``; default the id :func:`save_run` (or
    #: :func:`track_run`) got for it in this process, ``None`` when not tracked.
    mlflow_run_id: str | None = None

    def __post_init__(self) -> None:
        if self.run_dir is not None:
            require_complete(self.run_dir)
            if self.mlflow_run_id is None:
                self.mlflow_run_id = tracked_id(self.run_dir)


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
    import torch

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
    without it the current state is recorded. Every file is written atomically (a temporary
    name, then a rename); :meth:`write_tables` is the last write and marks the run complete,
    after which the directory refuses further writes.
    """

    def __init__(self, runs_root: str | Path, model: str, config: dict[str, Any],
                 environment: dict[str, Any] | None = None):
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self.model = model
        self.path = Path(runs_root) / model / f"{stamp}-{config_hash(config)}"
        clean_stale_tmp(Path(runs_root) / model)
        self.path.mkdir(parents=True, exist_ok=False)
        self.write_json("config.json", {"model": model, "config": config})
        self.write_json("environment.json", environment if environment is not None else environment_record())

    @property
    def is_complete(self) -> bool:
        return is_complete(self.path)

    def write_tables(self, warehouse: str, tables: dict[str, dict[str, Any]]) -> Path:
        """Write ``tables.json``, pin every version read in the warehouse (kept while this run
        directory exists) and mark the run complete: call it last, once the checkpoint, the
        encoders and the metrics are saved."""
        path = self.write_json("tables.json", tables)
        pin_tables(warehouse, tables, f"{self.model}--{self.path.name}", str(self.path.resolve()))
        self.complete()
        return path

    def complete(self) -> Path:
        """Write the ``_COMPLETE`` marker (the files and their sizes, the time): the last write."""
        self._check_open(COMPLETE_MARKER)
        files = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file() and not _is_tmp(p.name)}
        record = {"completed_at": dt.datetime.now(dt.timezone.utc).isoformat(), "files": files}
        path = _atomic_write(self.path / COMPLETE_MARKER, lambda f: f.write(json.dumps(record, indent=1, sort_keys=True).encode()))
        _fsync_dir(self.path)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        self._check_open(name)
        text = json.dumps(data, indent=1, sort_keys=True, default=_json_default)
        return _atomic_write(self.path / name, lambda f: f.write(text.encode()))

    def save_curves(self, history: list[dict[str, Any]], select_metric: str | None = None,
                    best_epoch: int | None = None) -> Path | None:
        """Write ``curves.png`` (trainers/curves.py: training loss and the validation metric per
        epoch). Best effort: a figure that cannot be drawn is a warning, never a failed run."""
        from trainers.curves import CURVES_FILE, plot_curves

        self._check_open(CURVES_FILE)
        try:
            return _atomic_write(self.path / CURVES_FILE, lambda f: plot_curves(
                history, f, title=f"{self.model} {self.path.name}", select_metric=select_metric, best_epoch=best_epoch))
        except Exception as exc:  # noqa: BLE001 - a plot must never fail a training run
            _log.warning("cannot draw the training curves of %s: %s: %s", self.path, type(exc).__name__, exc)
            return None

    def save_state(self, state_dict: dict[str, torch.Tensor]) -> Path:
        self._check_open("model.pt")
        import torch

        return _atomic_write(self.path / "model.pt", lambda f: torch.save(state_dict, f))

    def _check_open(self, name: str) -> None:
        if is_complete(self.path):
            raise RuntimeError(f"{self.path} is complete: {name} must be written before write_tables, the last write")


def save_run(runs_root: str | Path, model: str, config: dict[str, Any], environment: dict[str, Any] | None,
              encoders: Any, state_dict: dict[str, torch.Tensor], metrics: dict[str, Any], warehouse: str,
              tables: dict[str, dict[str, Any]]) -> Path:
    """A complete run directory in the one order every trainer uses: config and environment,
    encoders, the checkpoint, the metrics, then ``tables.json`` (which pins the versions read and
    marks the run complete). Returns its path."""
    run = RunDir(runs_root, model, config, environment=environment)
    run.write_json("encoders.json", encoders)
    run.save_state(state_dict)
    run.write_json("metrics.json", metrics)
    run.save_curves(metrics.get("history") or [], metrics.get("select_metric") or config.get("select_metric"),
                    metrics.get("best_epoch"))
    run.write_tables(warehouse, tables)  # last: pins the versions while the run exists
    track_run(run.path, config.get("tracking"), runs_root)
    return run.path


#: resolved run directory -> the MLflow run id :func:`track_run` got for it in this process.
_TRACKED_IDS: dict[Path, str] = {}


def track_run(run_dir: str | Path, tracking: dict[str, Any] | None, runs_root: str | Path | None = None) -> str | None:
    """Index the complete ``run_dir`` in MLflow (``trainers/tracking.py``) when ``tracking``
    (the config's ``tracking`` dict) is enabled; ``runs_root`` is the configured runs root
    (it places the default local store; default the folder two levels above ``run_dir``).
    Best effort: a failure is a warning and the run stands. Returns the MLflow run id, or
    ``None``; the id is also kept for :func:`tracked_id` (so the :class:`RunResult` of the run
    carries it without asking MLflow again)."""
    if not (tracking or {}).get("enabled", False):
        return None
    from trainers.tracking import log_run  # mlflow is imported only here, once a run is complete

    mlflow_id = log_run(run_dir, tracking, runs_root)
    if mlflow_id is not None:
        _TRACKED_IDS[Path(run_dir).resolve()] = mlflow_id
    return mlflow_id


def tracked_id(run_dir: str | Path) -> str | None:
    """The MLflow run id :func:`track_run` got for ``run_dir`` in this process, or ``None``
    (not tracked, tracking failed, or tracked by another process)."""
    return _TRACKED_IDS.get(Path(run_dir).resolve())


def _is_tmp(name: str) -> bool:
    return TMP_INFIX in name or name.endswith(".tmp")


def _atomic_write(path: Path, write) -> Path:
    """``write(file)`` into a temporary file beside ``path``, flush it to disk, rename it to ``path``."""
    tmp = path.with_name(f".{path.name}{TMP_INFIX}{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def is_complete(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run (its ``_COMPLETE`` marker exists)."""
    return (Path(run_dir) / COMPLETE_MARKER).is_file()


def require_complete(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path; :class:`RunRecordError` (one line) if it is missing or incomplete."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunRecordError(f"{run_dir}: no such run directory")
    if not is_complete(path):
        raise RunRecordError(
            f"{run_dir}: incomplete run (no {COMPLETE_MARKER} marker): it crashed or is still training, so its files "
            f"may be partial; use a complete run (one written before recfeat marked completion can be marked by hand "
            f"after checking it: touch {path / COMPLETE_MARKER})"
        )
    return path


def list_runs(runs_root: str | Path, model: str | None = None, include_incomplete: bool = False) -> list[Path]:
    """The run directories under ``runs_root`` (of ``model``, or of every model), oldest first;
    incomplete runs are left out unless ``include_incomplete``."""
    root = Path(runs_root)
    models = [root / model] if model else sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    runs = [r for m in models if m.is_dir() for r in sorted(m.iterdir()) if r.is_dir()]
    return runs if include_incomplete else [r for r in runs if is_complete(r)]


def clean_stale_tmp(model_root: str | Path, older_than_s: float = STALE_TMP_S, now: float | None = None) -> list[Path]:
    """Remove the temporary files that crashed runs left in the run directories under
    ``model_root`` (``<runs_root>/<model>``) once they are ``older_than_s`` old; a younger one
    may belong to a run still writing. Best effort; returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    root = Path(model_root)
    if not root.is_dir():
        return removed
    for run in root.iterdir():
        if not run.is_dir():
            continue
        for p in run.iterdir():
            try:
                if _is_tmp(p.name) and p.is_file() and now - p.stat().st_mtime >= older_than_s:
                    p.unlink()
                    removed.append(p)
            except OSError as exc:
                _log.warning("cannot remove the stale temporary file %s: %s", p, exc)
    return removed


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


def load_state(run_dir: str | Path, allow_incomplete: bool = False) -> dict[str, torch.Tensor]:
    """The run's checkpoint, loaded safely (tensors only); an incomplete run is refused
    (:class:`RunRecordError`) unless ``allow_incomplete``."""
    if not allow_incomplete:
        require_complete(run_dir)
    import torch

    return torch.load(Path(run_dir) / "model.pt", weights_only=True)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a complete run: ``{"model": ..., "config": {...}}``."""
    path = require_complete(run_dir) / "config.json"
    if not path.is_file():
        raise RunRecordError(f"{run_dir}: no config.json, so the run cannot be reproduced")
    return json.loads(path.read_text())


def pin_tables(warehouse: str, tables: dict[str, dict[str, Any]], name: str, run_dir: str | None = None,
               expires_in_s: float | None = None) -> list[str]:
    """Pin each ``tables[t]["version"]`` of ``warehouse`` under ``name`` (features/layout.py),
    and each other version in ``tables[t]["versions_used"]`` (a run that read several builds of
    one table, such as RAR's look-alike builds) under ``<name>.v<version>``.

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
        for pin_name, version in _pins_of(name, record):
            path = pin_path(root, table, pin_name)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                if not fs.exists(delta_log_dir(root, table)):
                    break
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                fs.pipe_file(tmp, pin_record(version, run_dir, expires_in_s).encode())
                fs.mv(tmp, path)
            except OSError as exc:
                _log.warning("cannot pin %s version %s in %s (retention may remove it): %s",
                             table, version, warehouse, exc)
                if table not in failed:
                    failed.append(table)
    return failed


def _pins_of(name: str, record: dict[str, Any]) -> list[tuple[str, int]]:
    """(pin name, version) of a table record: its ``version`` under ``name``, every other
    version of ``versions_used`` under ``<name>.v<version>``."""
    if "version" not in record:
        return []
    main = int(record["version"])
    extra = sorted({int(v) for v in record.get("versions_used") or []} - {main})
    return [(name, main), *((f"{name}.v{v}", v) for v in extra)]


def unpin_tables(warehouse: str, tables: list[str], name: str) -> None:
    """Remove the pins ``name`` (and ``<name>.v<version>``, :func:`pin_tables`) of ``tables`` (best effort)."""
    try:
        fs, root = fsspec.core.url_to_fs(warehouse)
        for table in tables:
            path = pin_path(root.rstrip("/"), table, name)
            extra = fs.glob(f"{pins_dir(root.rstrip('/'), table)}/{name}.v*.json")
            for p in [path, *extra]:
                if fs.exists(p):
                    fs.rm(p)
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
    """Table -> the version the run read, from the ``tables.json`` of a complete run."""
    path = require_complete(run_dir) / "tables.json"
    if not path.exists():
        raise RunRecordError(f"{run_dir}: no tables.json, so the table versions the run read are unknown")
    return {t: int(r["version"]) for t, r in json.loads(path.read_text()).items() if "version" in r}
