"""``recfeat runs [MODEL]``: the training runs, with their key metrics and table versions.

Read from MLflow (``training.tracking``, trainers/tracking.py) and cross-checked against the
run directories under ``training.runs_root``, which are the record. One line per run, newest
first within each model; ``STATUS`` says how the two agree:

- ``tracked``: in MLflow, and its run directory is here and complete;
- ``untracked``: a complete run directory MLflow does not have (tracking was off or failed
  when it trained); its numbers come from ``metrics.json`` and ``tables.json``;
- ``no-dir``: in MLflow, but its run directory is not here (deleted, or written on another
  machine that logs to the same server).

When the store cannot be read the command warns on stderr and lists the run directories only
(status ``unchecked``), so the runs are never hidden by a tracking outage. ``--track-untracked``
first logs every ``untracked`` run directory to MLflow (after an outage).
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.cli_common import CliError, settings_for

#: Runs shown per model unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 10
#: The traceback of a store that cannot be read goes here at DEBUG (the warning is one line).
_log = logging.getLogger("recfeat.cli.runs")


@dataclass
class RunRow:
    model: str
    run_id: str
    status: str
    select_metric: str
    best_epoch: int | None
    valid: float | None
    test: float | None
    tables: dict[str, int] = field(default_factory=dict)
    run_dir: str = ""


def _from_directory(run_dir: Path, status: str) -> RunRow:
    def read(name: str) -> dict:
        p = run_dir / name
        return json.loads(p.read_text()) if p.is_file() else {}

    metrics, tables = read("metrics.json"), read("tables.json")
    select = str(metrics.get("select_metric", ""))
    valid, test = metrics.get("valid") or {}, metrics.get("test") or {}
    best = metrics.get("best_epoch")
    return RunRow(
        model=run_dir.parent.name, run_id=run_dir.name, status=status, select_metric=select,
        best_epoch=best if isinstance(best, int) else None, valid=_num(valid.get(select)), test=_num(test.get(select)),
        tables={t: int(r["version"]) for t, r in tables.items() if isinstance(r, dict) and "version" in r},
        run_dir=str(run_dir),
    )


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _from_tracked(run, status: str) -> RunRow:
    from trainers.tracking import metric_key

    key = metric_key(run.select_metric) if run.select_metric else ""
    best = run.metrics.get("best_epoch")
    return RunRow(
        model=run.model, run_id=run.run_id, status=status, select_metric=run.select_metric,
        best_epoch=int(best) if best is not None else None,
        valid=run.metrics.get(f"best_valid/{key}"), test=run.metrics.get(f"test/{key}"),
        tables=dict(run.table_versions), run_dir=str(run.run_dir),
    )


def collect(runs_root: str, tracking: dict, model: str | None, limit: int | None) -> tuple[list[RunRow], str | None]:
    """The rows to print, and a warning when MLflow could not be read (then: directories only)."""
    from trainers.runs import list_runs
    from trainers.tracking import describe, tracked_runs

    directories = {p.resolve(): p for p in list_runs(runs_root, model)}
    rows: list[RunRow] = []
    warning = None
    seen: set[Path] = set()
    if tracking.get("enabled", False):
        try:
            tracked = tracked_runs(tracking, runs_root, model)
        except Exception as exc:  # noqa: BLE001 - an unreachable store must not hide the runs
            from features.uris import redact_uris_in

            first = redact_uris_in(str(exc).splitlines()[0], str(tracking.get("uri") or "")) if str(exc) else ""
            warning = (f"cannot read MLflow at {describe(tracking, runs_root)}: {type(exc).__name__}: {first}; "
                       f"listing the run directories under {runs_root} only")
            _log.debug("cannot read MLflow at %s", describe(tracking, runs_root), exc_info=True)
            tracked = None
        for run in tracked or []:
            if run.status != "FINISHED":
                continue  # a logging attempt that failed half way: its directory shows as untracked
            here = run.run_dir.resolve() in directories
            seen.add(run.run_dir.resolve())
            rows.append(_from_tracked(run, "tracked" if here else "no-dir"))
        status = "untracked" if tracked is not None else "unchecked"
    else:
        status = "untracked"
    rows += [_from_directory(p, status) for r, p in directories.items() if r not in seen]
    by_model: dict[str, list[RunRow]] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row)
    out = []
    for name in sorted(by_model):
        ordered = sorted(by_model[name], key=lambda r: r.run_id, reverse=True)  # run ids start with the UTC time
        out += ordered[:limit] if limit else ordered
    return out, warning


def _fmt(metric: str, v: float | None) -> str:
    return f"{metric} {v:.4f}" if v is not None else "-"


def cmd_runs(args) -> int:
    """List the training runs (MLflow, cross-checked with the run directories)."""
    settings = settings_for(args)
    t = settings.training
    if args.model:
        from trainers.registry import model_names

        if args.model not in model_names():
            raise CliError(f"unknown model {args.model!r}; known: {model_names()}")
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}")
    tracking = t.tracking.model_dump()
    if args.track_untracked:
        if not tracking.get("enabled"):
            raise CliError("--track-untracked: tracking is off (training.tracking.enabled: false)")
        _track_untracked(t.runs_root, tracking, args.model)
    rows, warning = collect(t.runs_root, tracking, args.model, args.limit or DEFAULT_LIMIT)
    if warning:
        print(f"recfeat: warning: {warning}", file=sys.stderr)
    from trainers.tracking import describe

    where = describe(tracking, t.runs_root) if tracking.get("enabled") else "off (training.tracking.enabled: false)"
    print(f"tracking: {where}")
    print(f"run directories: {t.runs_root}")
    if not rows:
        print(f"no complete runs{' of ' + args.model if args.model else ''}")
        return 0
    table = [("MODEL", "RUN", "STATUS", "BEST", "VALID", "TEST", "TABLES")]
    for r in rows:
        table.append((
            r.model, r.run_id, r.status, "-" if r.best_epoch is None else str(r.best_epoch),
            _fmt(r.select_metric, r.valid), _fmt(r.select_metric, r.test),
            ", ".join(f"{name} v{v}" for name, v in sorted(r.tables.items())) or "-",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _track_untracked(runs_root: str, tracking: dict, model: str | None) -> None:
    """Log every complete run directory MLflow does not have (after an outage, or runs trained
    with tracking off) to ``tracking``; one line per run. A store that cannot be read is an error."""
    from trainers.tracking import describe, log_run

    rows, warning = collect(runs_root, tracking, model, None)
    if warning:
        raise CliError(warning.split("; listing", 1)[0])
    for row in rows:
        if row.status == "untracked":
            mlflow_id = log_run(row.run_dir, tracking, runs_root)
            if mlflow_id is None:
                raise CliError(f"{row.run_dir}: could not be tracked at {describe(tracking, runs_root)} (see the warning above)")
            print(f"tracked {row.run_dir} as MLflow run {mlflow_id}")


def add_parser(sub) -> None:
    sp = sub.add_parser("runs", help="list training runs with key metrics and table versions (MLflow and run directories)")
    sp.add_argument("model", metavar="MODEL", nargs="?", help="only this model's runs")
    sp.add_argument("--limit", type=int, metavar="N", help=f"newest runs per model (default {DEFAULT_LIMIT})")
    sp.add_argument("--track-untracked", action="store_true",
                    help="first log every complete run directory MLflow does not have (after an outage)")
    sp.set_defaults(func=cmd_runs)
