"""Read-only access to committed warehouse tables for trainers (pyarrow + fsspec, no Spark).

Resolves a table's Delta log to one version's files (:mod:`features.snapshots`), checks the
schema against the table's contract, and reports the exact version read so a training run
can record it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import get_contract
from features.layout import Manifest
from features.snapshots import SnapshotError, read_manifest


@dataclass(frozen=True)
class TableSnapshot:
    """One committed version of a table, as a trainer sees it."""

    root: str
    manifest: Manifest

    @property
    def version(self) -> int:
        return self.manifest.version

    def files(self, partitions: list[str] | None = None) -> list[str]:
        return self.manifest.file_paths(self.root, partitions)


def _fs(root: str):
    fs, path = fsspec.core.url_to_fs(root)
    return fs, path.rstrip("/")


def snapshot(root: str, table: str, version: int | None = None) -> TableSnapshot:
    """The committed (or a given) version of ``table`` under warehouse ``root``.

    ``FileNotFoundError`` (one line) when the table or the version is not there.
    """
    fs, path = _fs(root)
    delta_root = root.rstrip("/") if "://" in root and not root.startswith("file://") else path
    try:
        return TableSnapshot(path, read_manifest(delta_root, table, version))
    except SnapshotError as exc:
        raise FileNotFoundError(str(exc)) from None


def iter_batches(
    root: str, table: str, columns: list[str] | None = None, version: int | None = None, batch_rows: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """Stream a committed table in record batches (bounded memory), schema-checked."""
    snap = snapshot(root, table, version)
    fs, _ = _fs(root)
    contract = get_contract(table)
    for f in snap.files():
        pf = pq.ParquetFile(f, filesystem=fs)
        contract.validate_schema(pf.schema_arrow)
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
