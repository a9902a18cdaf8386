"""Data-file helpers of the warehouse: schemas, partition names, per-task Parquet writers."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import TableContract
from features.layout import UNPARTITIONED, Manifest
from pipelines.warehouse.errors import WarehouseError


@contextmanager
def _missing_files_as_error(manifest: Manifest):
    try:
        yield
    except FileNotFoundError as exc:
        raise WarehouseError(
            f"table {manifest.table!r} v{manifest.version}: a data file is gone ({exc}); "
            "the version is past retention or the table was damaged outside recfeat"
        ) from None


def _relative_files(manifest: Manifest) -> list[str]:
    """A version's data files as recorded in the log (relative to the table directory)."""
    return [f for entry in manifest.partitions.values() for f in entry.files]


def _nullable(schema: pa.Schema) -> pa.Schema:
    """The Delta schema of a table: the files' schema with every field nullable."""
    return pa.schema([f.with_nullable(True) for f in schema])


def _schema_fingerprint(schema: pa.Schema) -> str:
    import hashlib

    text = ";".join(f"{f.name}:{f.type}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _TaskWriter:
    """Per Spark task: one Parquet writer per (table, partition value), files named by task id."""

    def __init__(self, fs, targets: dict[str, tuple[str, TableContract]], task: int):
        self.fs = fs
        self.targets = targets
        self.task = task
        self.writers: dict[tuple[str, str], pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {name: 0 for name in targets}

    def write(self, name: str, table: pa.Table) -> None:
        path, contract = self.targets[name]
        table = contract.conform(table)
        for value, part in _split_partitions(table, contract.partition_column):
            key = (name, value)
            if key not in self.writers:
                sub = f"{path}/{_part_name(contract, value)}"
                self.fs.makedirs(sub, exist_ok=True)
                self.writers[key] = pq.ParquetWriter(f"{sub}/part-{self.task:05d}.parquet", part.schema, filesystem=self.fs)
            self.writers[key].write_table(part)
            self.rows[name] += part.num_rows

    def close(self) -> dict[str, int]:
        for w in self.writers.values():
            w.close()
        self.writers.clear()
        return self.rows


def _part_name(contract: TableContract, value: str) -> str:
    return UNPARTITIONED if contract.partition_column is None else f"{contract.partition_column}={value}"


def _split_partitions(chunk: pa.Table, column: str | None) -> Iterator[tuple[str, pa.Table]]:
    if column is None:
        yield UNPARTITIONED, chunk
        return
    if chunk.num_rows == 0:
        return
    import pyarrow.compute as pc

    keys = pc.cast(chunk.column(column), pa.string())
    for value in sorted(v for v in pc.unique(keys).to_pylist() if v is not None):
        yield value, chunk.filter(pc.equal(keys, value))
    if keys.null_count:
        raise WarehouseError(f"table column {column!r} (the partition column) has nulls")


def _empty_from_manifest(manifest: Manifest, columns: list[str] | None) -> pa.Table:
    from pipelines.catalog import contract

    try:
        schema = contract(manifest.table).schema
    except KeyError:
        schema = pa.schema([])
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
    return schema.empty_table()
