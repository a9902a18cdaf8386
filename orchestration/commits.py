"""How table assets commit: one writer per table (a pool), conflicts retried or reported in one
line, and a materialization that says whether it committed anything.

A :class:`pipelines.warehouse.CommitConflict` means another writer committed the table after
this run read it, and that nothing of this run was committed. Every table job re-reads its
inputs from the start, so running the step again is safe: :func:`commit_conflicts` asks Dagster
to retry the step (:data:`CONFLICT_RETRIES` times, waiting :data:`CONFLICT_RETRY_WAIT_S`,
doubled each time), and then fails it with the conflict's one-line message (a ``dg.Failure``,
no traceback in its description).
"""
from __future__ import annotations

import contextlib

import dagster as dg

from orchestration.instance import table_pool

__all__ = ["CONFLICT_RETRIES", "CONFLICT_RETRY_WAIT_S", "commit_conflicts", "commit_outcome", "materialize_result",
           "one_line", "table_data_version", "table_pool"]

#: Retries of a step whose commit lost to another writer.
CONFLICT_RETRIES = 3
#: Seconds before the first retry (doubled for each further one).
CONFLICT_RETRY_WAIT_S = 2.0


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def commit_conflicts(context: dg.AssetExecutionContext, retries: int = CONFLICT_RETRIES):
    """Turn a commit conflict inside the block into a step retry, then into a one-line failure."""
    from pipelines.warehouse import CommitConflict

    try:
        yield
    except CommitConflict as exc:
        attempt = context.retry_number
        meta = {"table": exc.table, "base_version": exc.base_version, "lost_to": exc.lost_to}
        if attempt < retries:
            wait = CONFLICT_RETRY_WAIT_S * 2**attempt
            context.log.warning(f"{one_line(exc)}; retry {attempt + 1} of {retries} in {wait:g} s")
            raise dg.RetryRequested(max_retries=retries, seconds_to_wait=wait) from None
        raise dg.Failure(
            description=f"{one_line(exc)} (after {retries} retries)" if retries else one_line(exc),
            metadata={k: v for k, v in meta.items() if v is not None},
            allow_retries=False,
        ) from None


def table_data_version(manifest) -> dg.DataVersion:
    """The Dagster data version of a committed table: its warehouse version."""
    return dg.DataVersion(f"v{manifest.version}")


def commit_outcome(manifest, before: int | None) -> dict:
    """Metadata that says whether the run committed a new version (``before``: the version it found)."""
    committed = manifest.version != before
    return {
        "committed": committed,
        "commit": f"new version {manifest.version}" if committed
        else f"nothing new: version {manifest.version} unchanged, nothing committed",
    }


def materialize_result(asset_key: str | None, manifest, before: int | None, metadata: dict) -> dg.MaterializeResult:
    """A table asset's result: ``metadata`` plus the commit outcome, with the table's data version."""
    return dg.MaterializeResult(
        asset_key=asset_key,
        metadata={**metadata, **commit_outcome(manifest, before)},
        data_version=table_data_version(manifest),
    )
