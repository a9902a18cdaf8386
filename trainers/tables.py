"""Read-only access to committed warehouse tables for trainers (pyarrow + fsspec, no Spark).

Resolves ``_current`` -> manifest -> files with the layout rules of :mod:`features.layout`,
checks the schema against the table's contract, and reports the exact version read so a
training run can record it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import get_contract
from features.layout import Manifest, manifest_path, parse_version, pointer_path


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
    """The committed (or a given kept) version of ``table`` under warehouse ``root``."""
    fs, path = _fs(root)
    if version is None:
        pointer = pointer_path(path, table)
        if not fs.exists(pointer):
            raise FileNotFoundError(f"table {table!r} has no committed version under {root}")
        with fs.open(pointer, "r") as fh:
            version = parse_version(fh.read())
    with fs.open(manifest_path(path, table, version), "r") as fh:
        return TableSnapshot(path, Manifest.from_json(fh.read()))


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
