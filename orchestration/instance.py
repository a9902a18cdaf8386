"""The project's Dagster instance (``$DAGSTER_HOME``): its ``dagster.yaml`` and the run hygiene
the command line needs.

One writer per table: every asset that commits warehouse tables runs in a Dagster *pool* named
after the table it writes (:data:`TABLE_POOL_PREFIX`, ``table/events`` for the ingestion run,
which also writes ``rejected_events`` and ``ingest_runs``). The instance gives every pool one
slot (``concurrency.pools.default_limit: 1``), so a scheduled run, a sensor's run, a run
launched from the UI and ``recfeat materialize`` (which runs in process against the same
instance) never write one table at the same time: the second waits for the slot.
``make dev``, ``make demo`` and every ``recfeat`` command that runs Dagster write this file
(:func:`ensure_dagster_home`).

A ``recfeat materialize`` killed mid-run (SIGKILL, a lost machine) cannot release its slot;
:func:`release_dead_cli_runs` marks such runs failed and frees their slots before the next
command starts (runs record the host and process id that ran them).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

#: Pool of the asset that writes table ``t``: ``table/<t>``.
TABLE_POOL_PREFIX = "table/"

#: The instance configuration ``recfeat`` writes (telemetry off, one slot per pool; run
#: monitoring frees the slots of runs that ended without releasing them, e.g. a killed step
#: process of ``dagster dev``'s multiprocess executor).
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1   # one slot per pool: one writer per warehouse table (docs/orchestration.md)
    granularity: op    # enforced by every run's executor, in-process runs (recfeat materialize) included
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 300
"""
#: What earlier versions wrote; such a file is upgraded in place.
_LEGACY_YAML = "telemetry:\n  enabled: false\n"

#: Run tags that say which process ran an in-process (``recfeat``) run.
LAUNCHER_TAG = "recfeat/launcher"
HOST_TAG = "recfeat/host"
PID_TAG = "recfeat/pid"


def table_pool(table: str) -> str:
    return f"{TABLE_POOL_PREFIX}{table}"


def ensure_dagster_home(home: str | os.PathLike | None = None) -> Path:
    """Create ``$DAGSTER_HOME`` (default ``var/dagster``) with the project's ``dagster.yaml``.

    A ``dagster.yaml`` that is already there is kept as it is, unless it is the telemetry-only
    file earlier versions wrote, which is replaced. Sets ``DAGSTER_HOME`` for this process.
    """
    path = Path(home or os.environ.get("DAGSTER_HOME") or Path("var/dagster").resolve())
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() == _LEGACY_YAML:
        tmp = cfg.with_name(f".dagster.yaml.tmp-{os.getpid()}")
        tmp.write_text(DAGSTER_YAML)
        tmp.replace(cfg)
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def cli_run_tags() -> dict[str, str]:
    """Tags of a run this process executes in process."""
    return {LAUNCHER_TAG: "recfeat", HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def release_dead_cli_runs(instance) -> list[str]:
    """Mark failed the in-progress runs of ``recfeat`` processes on this host that no longer
    exist, and free the pool slots they hold. Returns their run ids.

    A run of another host, or of a process that is alive (or whose id was reused), is left alone.
    """
    import dagster as dg

    in_progress = [
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
    ]
    host = socket.gethostname()
    freed = []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHER_TAG: "recfeat", HOST_TAG: host}, statuses=in_progress))
    for run in runs:
        try:
            pid = int(run.tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        instance.report_run_failed(run, f"the recfeat process (pid {pid} on {host}) that ran it is gone")
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        freed.append(run.run_id)
    return freed


def pool_holders(instance, pool: str) -> list[str]:
    """Run ids holding a slot of ``pool`` now ([] when the instance has no pool support)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    try:
        info = storage.get_concurrency_info(pool)
    except Exception:  # noqa: BLE001 - informational only
        return []
    return sorted({s.run_id for s in info.claimed_slots})


if __name__ == "__main__":  # `make dev` / `make demo`: python -m orchestration.instance
    print(ensure_dagster_home())
