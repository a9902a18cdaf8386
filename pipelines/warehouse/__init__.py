"""The warehouse: every table a Delta Lake table, with atomic, conflict-checked commits.

Layout and commit records are defined once in :mod:`features.layout`; a version is read into a
:class:`~features.layout.Manifest` by :mod:`features.snapshots`. Data files are written and
read through fsspec, so the root may be a local path (the default), ``file://``, ``s3://`` or
``gs://``; the transaction log goes through ``deltalake`` (delta-rs), which any Delta reader
(Polars, DuckDB, Spark with the Delta connector) can then read.

Commit protocol (:meth:`Warehouse.commit`): data is written under ``_staging/<txn>`` (with a
record of the owning host and process), the files are moved to their committed names
(``<col>=<value>/part-NNNNN-<txn>.parquet``), and one Delta transaction adds them and removes
the files they replace. The transaction is based on the version the job read
(``base_version``) and is attempted exactly once: if any other writer committed after that
version, it fails with :class:`CommitConflict` and its moved files are removed, so two writers
never both succeed on stale reads. Appends (``append=True``) are retried by delta-rs instead,
since they replace nothing. A writer killed at any step leaves the last version readable and
complete; :meth:`Warehouse.cleanup_staging` removes a dead transaction's leftovers on the
next commit. Retention (:meth:`Warehouse.retain`) runs after every commit and deletes only
files that no kept version refers to.

Modules (one concern each): :mod:`.errors`, :mod:`.storage` (file systems, staged writes),
:mod:`.files` (data-file helpers), :mod:`.pins`, :mod:`.reading`, :mod:`.commit`,
:mod:`.writes`, :mod:`.retention`, :mod:`.migrate`, and :mod:`.core` (the :class:`Warehouse`
class that joins their mixins). Every public name is importable from ``pipelines.warehouse``.
"""
from __future__ import annotations

from pipelines.warehouse.core import Warehouse
from pipelines.warehouse.errors import CommitConflict, WarehouseError
from pipelines.warehouse.storage import (
    HDFS_PROTOCOLS,
    STALE_STAGING_SECONDS,
    STORE_PACKAGES,
    TABLE_CONFIGURATION,
    StagedWrite,
    filesystem,
    pin_is_stale,
)
from pipelines.warehouse.writes import SIDE_OUTPUT

__all__ = [
    "HDFS_PROTOCOLS", "STALE_STAGING_SECONDS", "STORE_PACKAGES", "TABLE_CONFIGURATION", "CommitConflict",
    "SIDE_OUTPUT", "StagedWrite", "Warehouse", "WarehouseError", "filesystem", "pin_is_stale",
]  # fmt: skip
