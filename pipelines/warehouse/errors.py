"""The warehouse's errors: a failed operation and a lost commit race."""
from __future__ import annotations


class WarehouseError(RuntimeError):
    """A table is missing, corrupt, or a commit could not be made."""


class CommitConflict(WarehouseError):
    """Another writer committed to the table first, and this commit would overwrite what it did.

    Nothing of this commit is visible; the winner's commit is intact. ``table`` is the table,
    ``base_version`` the version this writer read, ``lost_to`` the version it lost to (when known).
    Retrying is safe for appends (``rejected_events``, ``ingest_runs``); a job that read the table
    (partition replacement) must re-run from its read, which is what a job retry does.
    """

    def __init__(self, table: str, base_version: int | None, lost_to: int | None, detail: str = ""):
        self.table, self.base_version, self.lost_to = table, base_version, lost_to
        won = f"version {lost_to}" if lost_to is not None else "a newer version"
        super().__init__(
            f"table {table!r}: commit conflict: another writer committed {won} after this run read "
            f"version {base_version}; nothing of this run was committed (retry the run){': ' + detail if detail else ''}"
        )
