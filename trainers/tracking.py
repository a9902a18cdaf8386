"""Tracked runs: every complete run directory indexed in MLflow (docs/training.md, "Tracked runs").

The run directory (``trainers/runs.py``) is the record of a run and stays the source of truth;
MLflow is an index of it, for browsing and comparing runs (``mlflow ui``) and for
``recfeat runs``. :func:`log_run` is called by :func:`trainers.runs.save_run` once the run
directory is complete, so every trainer is tracked the same way. It logs, to one MLflow run
per run directory:

- params: the validated config, flattened (``split.train_days``, ``lr``, ...), and the version
  of every table read as ``table_version.<table>``;
- metrics: per epoch (``step`` = the epoch, from 0) ``train_loss`` (multi-task:
  ``train_loss/<task>`` and their sum ``train_loss``) and every validation metric of the history
  as ``valid/<name>``; once, the best epoch's validation metrics ``best_valid/<name>``, the
  test metrics ``test/<name>``, ``best_epoch``, ``epochs_run`` and ``throughput/<name>``.
  MLflow names allow letters, digits and ``_ - . / : space``: ``@`` becomes ``_at_``
  (``ndcg@10`` -> ``ndcg_at_10``), any other character ``_`` (:func:`metric_key`);
- tags: ``recfeat.model``, ``recfeat.run_id`` (the directory's name), ``recfeat.run_dir`` (its
  absolute path), ``recfeat.runs_root``, ``recfeat.config_hash``, ``recfeat.select_metric``,
  ``recfeat.tables`` (JSON ``{table: version}``) and ``mlflow.source.git.commit``;
- artifacts: every file of the run directory (``model.pt``, ``curves.png``, the JSON files).

Where: ``training.tracking`` (:class:`trainers.config.TrackingConfig`). ``uri`` null is the
local store ``sqlite:///<dir>/mlflow.db`` (MLflow 3's default backend is SQLite; the file
store is its legacy format) with the artifacts in ``<dir>/artifacts``, ``dir`` null being
``mlflow`` beside the runs root (``var/runs`` -> ``var/mlflow``); local writers take a
file lock (``<dir>/.lock``) so parallel runs (Dagster's multiprocess executor) do not race
SQLite's schema creation. Any other URI (``http://host:5000``) is used as is.

Best effort: tracking never fails or loses a run. Any error (an unreachable server, a broken
store) is one WARNING on the ``recfeat.train.tracking`` logger (a model asset's run log shows
it too) naming the run directory, with the traceback at DEBUG, and training returns normally;
``recfeat runs`` then lists the run from its directory as ``untracked``. :func:`log_run`
returns the MLflow run id, which :func:`trainers.runs.save_run` hands to the run's
``RunResult`` (``mlflow_run_id``): nothing asks MLflow again for it.

A URI never holds a password (``TrackingConfig`` and the project setting refuse one,
``features/uris.py``), and every log line, message and the ``tracking.uri`` param show it
through :func:`features.uris.redact_uri` (no user info, no query string).

mlflow is imported lazily (about 2 s), only when a run is logged or listed. Before the import,
MLflow's telemetry is turned off (``MLFLOW_DISABLE_TELEMETRY=true``) and HTTP retries are
bounded (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``, ``MLFLOW_HTTP_REQUEST_TIMEOUT=30`` s), each only
where the environment does not set it already.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.uris import check_not_blank, check_tracking_uri, redact_uri, redact_uris_in

#: A child of the trainers' ``recfeat.train`` logger, so a model asset's run log shows its lines too.
_log = logging.getLogger("recfeat.train.tracking")

#: Environment defaults set before mlflow is imported (a value already set wins).
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
#: The tags :func:`log_run` sets (and :func:`tracked_runs` reads).
TAG_MODEL, TAG_RUN_ID, TAG_RUN_DIR = "recfeat.model", "recfeat.run_id", "recfeat.run_dir"
TAG_TABLES, TAG_SELECT, TAG_RUNS_ROOT = "recfeat.tables", "recfeat.select_metric", "recfeat.runs_root"
#: Prefix of the table-version params.
TABLE_PARAM = "table_version."
_MAX_PARAM_VALUE = 6000  # MLflow's limit (characters)
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-./: ]")


@dataclass(frozen=True)
class Target:
    """Where runs are tracked: the URI, the artifact location of a new experiment (local store
    only), the experiment, and the lock file local writers share (``None`` for a server)."""

    uri: str
    experiment: str
    artifact_location: str | None = None
    lock_path: Path | None = None
    local_db: Path | None = None


def local_dir(tracking: dict[str, Any], runs_root: str | Path) -> Path:
    """The local store's folder: ``tracking["dir"]``, else ``mlflow`` beside ``runs_root``."""
    return Path(tracking.get("dir") or Path(runs_root).parent / "mlflow").resolve()


def _checked(t: dict[str, Any]) -> dict[str, Any]:
    """``t`` after the ``TrackingConfig`` field checks (features/uris.py), for a dict that did not
    go through it (an older ``config.json``, a caller's dict): ``ValueError`` naming the field."""
    for name, check in (("uri", check_tracking_uri), ("dir", check_not_blank), ("experiment", check_not_blank)):
        try:
            check(t.get(name))
        except ValueError as exc:
            raise ValueError(f"tracking.{name} {exc}") from None
    return t


def target(tracking: dict[str, Any] | Any, runs_root: str | Path = "var/runs") -> Target:
    """The :class:`Target` of a ``tracking`` config (a dict or a ``TrackingConfig``) for runs under
    ``runs_root`` (the configured one, as given: not resolved, so a symlinked root places the
    local store beside the link). ``ValueError`` for a password in ``uri`` or a blank field."""
    t = _checked(tracking if isinstance(tracking, dict) else tracking.model_dump())
    experiment = t.get("experiment") or "recfeat"
    if t.get("uri"):
        return Target(uri=str(t["uri"]), experiment=experiment)
    root = local_dir(t, runs_root)
    db = root / "mlflow.db"
    return Target(uri=f"sqlite:///{db}", experiment=experiment, artifact_location=(root / "artifacts").as_uri(),
                  lock_path=root / ".lock", local_db=db)


def describe(tracking: dict[str, Any] | Any, runs_root: str | Path = "var/runs") -> str:
    """One line for messages: the URI (:func:`features.uris.redact_uri`: no user info, no query
    string) and the experiment."""
    tg = target(tracking, runs_root)
    return f"{redact_uri(tg.uri)} (experiment {tg.experiment!r})"


def _mlflow():
    wait_for_preload()
    return _import_mlflow()


def _import_mlflow():
    for k, v in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    import mlflow  # noqa: PLC0415 - slow: only where a run is logged or listed

    return mlflow


_PRELOAD_LOCK = threading.Lock()
_PRELOAD: threading.Thread | None = None


def preload(tracking: dict[str, Any] | Any, runs_root: str | Path = "var/runs") -> bool:
    """Import MLflow and open the store of ``tracking`` in a daemon thread, once per process, so
    that the first run this process tracks does not wait for them (about 1.4 s to import, and
    1.8 s to create a new local store's schema). ``True`` if this call started the thread.

    A run that trains models calls it as it starts (``recfeat materialize``, ``recfeat demo``);
    every use of MLflow here waits for the thread first (:func:`wait_for_preload`), so MLflow is
    never imported by two threads at once. A local store is opened under the same lock file as a
    run's logging. Tracking off: nothing is started. A failure is not raised: the run's own
    tracking meets it again and reports it as usual (a warning; the run stands).
    """
    global _PRELOAD
    t = tracking if isinstance(tracking, dict) else tracking.model_dump()
    if not t.get("enabled", False):
        return False

    def run() -> None:
        try:
            mlflow = _import_mlflow()
            tg = target(t, runs_root)
            if tg.local_db is not None:  # a server is not contacted ahead of a run
                with _locked(tg), _quiet_migrations():
                    mlflow.MlflowClient(tracking_uri=tg.uri).get_experiment_by_name(tg.experiment)
        except Exception:  # noqa: BLE001 - the run's tracking reports it
            _log.debug("MLflow preload failed", exc_info=True)

    with _PRELOAD_LOCK:
        if _PRELOAD is not None:
            return False
        _PRELOAD = threading.Thread(target=run, name="recfeat-mlflow-preload", daemon=True)
        _PRELOAD.start()
        return True


def wait_for_preload() -> None:
    """Wait until a started :func:`preload` has finished (at once when none was started)."""
    thread = _PRELOAD
    if thread is not None and thread is not threading.current_thread():
        thread.join()


@contextlib.contextmanager
def _locked(tg: Target):
    if tg.lock_path is None:
        yield
        return
    tg.lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(tg.lock_path, "a+b") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock (Windows): unlocked
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_migrations():
    """Creating the SQLite schema logs INFO lines (alembic, mlflow's db utils); keep them out of the run's output."""
    loggers = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils")]
    previous = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, previous):
            lg.setLevel(level)


def metric_key(name: str) -> str:
    """``name`` as MLflow accepts it: ``@`` -> ``_at_``, other characters outside
    ``[A-Za-z0-9_-./: ]`` -> ``_`` (``ndcg@10`` -> ``ndcg_at_10``)."""
    return _BAD_CHARS.sub("_", name.replace("@", "_at_"))


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def _numbers(prefix: str, value: Any) -> dict[str, float]:
    """``{prefix/name: float}`` of the numbers in ``value`` (nested dicts joined by ``/``)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_numbers(f"{prefix}/{metric_key(str(k))}" if prefix else metric_key(str(k)), v))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def run_metrics(metrics: dict[str, Any]) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of a ``metrics.json``: the per-epoch history and the final numbers."""
    out: list[tuple[str, float, int]] = []
    for row in metrics.get("history") or []:
        step = row.get("epoch")
        if not isinstance(step, int):
            continue
        loss = row.get("train_loss")
        if isinstance(loss, dict):
            parts = _numbers("train_loss", loss)
            out += [(k, v, step) for k, v in parts.items()]
            if parts:
                out.append(("train_loss", sum(parts.values()), step))
        elif isinstance(loss, (int, float)) and not isinstance(loss, bool):
            out.append(("train_loss", float(loss), step))
        rest = {k: v for k, v in row.items() if k not in ("epoch", "train_loss")}
        out += [(k, v, step) for k, v in _numbers("valid", rest).items()]
    best = metrics.get("best_epoch")
    step = best if isinstance(best, int) and best >= 0 else 0
    out += [(k, v, step) for k, v in _numbers("best_valid", metrics.get("valid") or {}).items()]
    out += [(k, v, step) for k, v in _numbers("test", metrics.get("test") or {}).items()]
    out += [(k, v, 0) for k, v in _numbers("throughput", metrics.get("throughput") or {}).items()]
    for k in ("best_epoch", "epochs_run"):
        if isinstance(metrics.get(k), int):
            out.append((k, float(metrics[k]), 0))
    return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else {}


def _run_start_ms(run_dir: Path) -> int | None:
    stamp = run_dir.name.split("-", 1)[0]
    try:
        return int(dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    except ValueError:
        return None


def log_run(run_dir: str | Path, tracking: dict[str, Any] | Any | None = None,
            runs_root: str | Path | None = None) -> str | None:
    """Index the complete run directory ``run_dir`` in MLflow; the MLflow run id, or ``None``
    when tracking is off or failed (one WARNING says why, the traceback at DEBUG: the run
    directory is unaffected).

    ``tracking``: a ``TrackingConfig`` or its dict; default the one in the run's ``config.json``.
    ``runs_root``: the configured runs root (it places the default local store, as for
    ``recfeat runs``); default the folder two levels above ``run_dir`` as given.
    """
    runs_root = Path(runs_root) if runs_root is not None else Path(run_dir).parent.parent
    run_dir = Path(run_dir).resolve()
    t: dict[str, Any] = {}
    try:
        from trainers.runs import require_complete

        require_complete(run_dir)  # only a finished run is indexed
        saved = _read_json(run_dir / "config.json")
        if tracking is None:
            tracking = (saved.get("config") or {}).get("tracking") or {}
        t = tracking if isinstance(tracking, dict) else tracking.model_dump()
        if not t.get("enabled", False):
            return None
        tg = target(t, runs_root)
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
        _log.warning("run %s was not tracked in MLflow: %s: %s", run_dir, type(exc).__name__,
                     redact_uris_in(str(exc), str(t.get("uri") or "")))
        _log.debug("run %s was not tracked in MLflow", run_dir, exc_info=True)
        return None
    try:
        wait_for_preload()  # before the lock: the preload may hold it while it opens the store
        with _locked(tg), _quiet_migrations():
            return _log_run(run_dir, saved, tg, runs_root)
    except Exception as exc:  # noqa: BLE001 - an unreachable or broken store never loses a run
        first = str(exc).splitlines()[0] if str(exc) else ""
        _log.warning(
            "run %s was not tracked in MLflow at %s: %s: %s; the run directory is complete and is the record "
            "(recfeat runs lists it as untracked)", run_dir, redact_uri(tg.uri), type(exc).__name__, redact_uris_in(first, tg.uri),
        )
        _log.debug("run %s was not tracked in MLflow at %s", run_dir, redact_uri(tg.uri), exc_info=True)
        return None


def _experiment_id(client, tg: Target) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(tg.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(tg.experiment, artifact_location=tg.artifact_location)
    except MlflowException:  # created meanwhile by another writer
        exp = client.get_experiment_by_name(tg.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _log_run(run_dir: Path, saved: dict[str, Any], tg: Target, runs_root: Path) -> str:
    from trainers.runs import COMPLETE_MARKER, config_hash

    mlflow = _mlflow()
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient(tracking_uri=tg.uri)
    experiment_id = _experiment_id(client, tg)
    model = str(saved.get("model", run_dir.parent.name))
    config = saved.get("config") or {}
    metrics = _read_json(run_dir / "metrics.json")
    tables = _read_json(run_dir / "tables.json")
    environment = _read_json(run_dir / "environment.json")
    complete = _read_json(run_dir / COMPLETE_MARKER)
    versions = {t: r["version"] for t, r in sorted(tables.items()) if isinstance(r, dict) and "version" in r}
    tags = {
        TAG_MODEL: model,
        TAG_RUN_ID: run_dir.name,
        TAG_RUN_DIR: str(run_dir),
        TAG_RUNS_ROOT: str(runs_root.absolute()),
        "recfeat.config_hash": config_hash(config),
        TAG_SELECT: str(metrics.get("select_metric", "")),
        TAG_TABLES: json.dumps(versions, sort_keys=True),
    }
    commit = (environment.get("code") or {}).get("commit")
    if commit:
        tags["mlflow.source.git.commit"] = str(commit)
    run = client.create_run(experiment_id, start_time=_run_start_ms(run_dir), tags=tags, run_name=f"{model}/{run_dir.name}")
    run_id = run.info.run_id
    try:
        params = {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in _flatten("", config, {}).items()}
        if params.get("tracking.uri") not in (None, "null"):
            params["tracking.uri"] = redact_uri(str(config["tracking"]["uri"]))
        params.update({f"{TABLE_PARAM}{t}": str(v) for t, v in versions.items()})
        param_list = [Param(metric_key(k), v[:_MAX_PARAM_VALUE]) for k, v in sorted(params.items())]
        now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
        metric_list = [Metric(k, v, now, step) for k, v, step in run_metrics(metrics)]
        for chunk in _chunks(param_list, 100):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(metric_list, 1000):
            client.log_batch(run_id, metrics=chunk)
        client.log_artifacts(run_id, str(run_dir))
        end = complete.get("completed_at")
        end_ms = int(dt.datetime.fromisoformat(end).timestamp() * 1000) if end else None
        client.set_terminated(run_id, "FINISHED", end_time=end_ms)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    _log.info("run %s tracked in MLflow at %s as run %s", run_dir, redact_uri(tg.uri), run_id)
    return run_id


def _tag_equals(tag: str, value: str) -> str:
    """The MLflow filter ``tags.`<tag>` = <value>`` with ``value`` quoted so that a ``'`` in it
    cannot end the literal: MLflow's filter strings have no escape, so a value with a ``'`` is
    put in double quotes, and one with both quote characters gets no filter (``""``, all runs:
    the caller compares the tag itself)."""
    if "'" not in value:
        return f"tags.`{tag}` = '{value}'"
    if '"' not in value:
        return f'tags.`{tag}` = "{value}"'
    return ""


@dataclass
class TrackedRun:
    """One run as MLflow has it (:func:`tracked_runs`)."""

    mlflow_run_id: str
    model: str
    run_id: str
    run_dir: Path
    status: str
    start_time: dt.datetime | None
    select_metric: str
    metrics: dict[str, float] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)


def tracked_runs(tracking: dict[str, Any] | Any, runs_root: str | Path, model: str | None = None,
                 limit: int | None = None) -> list[TrackedRun]:
    """The runs logged to ``tracking`` (of ``model``, or all), newest first; ``runs_root``
    places the default local store. Errors (an unreachable store) propagate: the caller decides
    how to fall back. A local store that does not exist yet holds no runs (and is not created)."""
    tg = target(tracking, runs_root)
    if tg.local_db is not None and not tg.local_db.is_file():
        return []
    mlflow = _mlflow()
    with _quiet_migrations():
        client = mlflow.MlflowClient(tracking_uri=tg.uri)
        exp = client.get_experiment_by_name(tg.experiment)
        if exp is None:
            return []
        filt = _tag_equals(TAG_MODEL, model) if model else ""
        runs, token = [], None
        while True:
            page = client.search_runs([exp.experiment_id], filter_string=filt, order_by=["attributes.start_time DESC"],
                                      max_results=min(limit or 1000, 1000), page_token=token)
            runs += [r for r in page if not model or r.data.tags.get(TAG_MODEL) == model]  # _tag_equals: maybe no filter
            token = page.token
            if not token or (limit and len(runs) >= limit):
                break
    out = []
    for r in runs[:limit] if limit else runs:
        tags = r.data.tags
        if TAG_RUN_DIR not in tags:
            continue  # not a recfeat run
        try:
            versions = {k: int(v) for k, v in json.loads(tags.get(TAG_TABLES, "{}")).items()}
        except (ValueError, TypeError):
            versions = {}
        start = r.info.start_time
        out.append(TrackedRun(
            mlflow_run_id=r.info.run_id, model=tags.get(TAG_MODEL, ""), run_id=tags.get(TAG_RUN_ID, ""),
            run_dir=Path(tags[TAG_RUN_DIR]), status=r.info.status,
            start_time=dt.datetime.fromtimestamp(start / 1000, dt.timezone.utc) if start else None,
            select_metric=tags.get(TAG_SELECT, ""), metrics=dict(r.data.metrics), table_versions=versions,
        ))
    return out
