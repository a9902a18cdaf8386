"""The one table reader of every trainer (pyarrow + fsspec, no Spark).

A trainer names a table by its contract (``features.labels.WATCH_TIME_LABELS``,
``features.events.EVENTS``, ...), never by a string with its own idea of the column types:

- :func:`open_table` resolves one committed version (the latest, or the one asked for) from the
  table's Delta log (:mod:`features.snapshots`) and checks its schema against the contract
  (:meth:`features.contracts.TableContract.validate_schema`, the one type comparison), so a
  table that breaks its contract fails before any training, in one line naming the table, the
  version and the column;
- :meth:`TableSnapshot.batches` streams record batches of the columns asked for only
  (projection) from the partitions asked for only (pruning), checking each data file's schema
  against the contract as it opens it (a file another writer added may differ);
- :meth:`TableSnapshot.record` is what a run directory's ``tables.json`` records about the
  table: the exact version, its commit time, rows and the partitions read.

:func:`snapshot` with a table *name* only resolves a version (the retrain sensor asks which
version is current); reading always goes through a contract.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from features.timeutil import keys_between
from features.contracts import TableContract
from features.layout import Manifest
from features.snapshots import SnapshotError, read_manifest


def filesystem(root: str):
    """The fsspec filesystem of a warehouse root and the root as that filesystem's path."""
    fs, path = fsspec.core.url_to_fs(root)
    return fs, path.rstrip("/")


@dataclass(frozen=True)
class TableSnapshot:
    """One committed version of a table, as a trainer reads it.

    ``contract`` is ``None`` only for a snapshot resolved by name (:func:`snapshot`), which
    tells the version but cannot be read.
    """

    root: str
    manifest: Manifest
    contract: TableContract | None = None

    @property
    def table(self) -> str:
        return self.manifest.table

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def partitions(self) -> list[str]:
        """The partition keys of this version (ISO dates for a daily table, ``"all"`` otherwise)."""
        return sorted(self.manifest.partitions)

    @property
    def columns(self) -> list[str]:
        """The columns this version's files carry (an open contract's extra columns included)."""
        return [name for name, _ in self.manifest.schema]

    def days(self) -> list[dt.date]:
        """The days of a daily table, ascending."""
        return sorted(dt.date.fromisoformat(k) for k in self.manifest.partitions)

    def partitions_between(self, first: dt.date, end: dt.date) -> list[str]:
        """Partition keys (ISO dates) of a daily table in ``[first, end)``."""
        return keys_between(self.manifest.partitions, first, end)

    def files(self, partitions: Sequence[str] | None = None) -> list[str]:
        return self.manifest.file_paths(self.root, None if partitions is None else list(partitions))

    def _where(self) -> str:
        return f"table {self.table!r} v{self.version}"

    def _contract(self) -> TableContract:
        if self.contract is None:
            raise TypeError(f"{self._where()} was resolved by name: read it through its contract (open_table)")
        return self.contract

    def check_file(self, schema: pa.Schema) -> None:
        """One data file's schema against the contract; ``ValueError`` naming the version and column."""
        contract = self._contract()
        try:
            contract.validate_schema(schema)
        except ValueError as exc:
            detail = str(exc).removeprefix(f"table {contract.name!r}: ")
            raise ValueError(f"{self._where()} breaks its contract: {detail}") from None

    def batches(
        self, columns: Sequence[str], partitions: Sequence[str] | None = None, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of ``columns`` (in that order) from ``partitions`` (all when ``None``).

        A column the contract does not name is refused, unless the contract is open and the
        files carry it; every file's schema is checked against the contract before it is read.
        """
        contract = self._contract()
        columns = list(columns)
        unknown = [c for c in columns if c not in contract.columns and not contract.open_columns]
        if unknown:
            raise ValueError(f"{self._where()}: columns {unknown} are not in its contract")
        fs, _ = filesystem(self.root)
        for path in self.files(partitions):
            pf = pq.ParquetFile(path, filesystem=fs)
            self.check_file(pf.schema_arrow)
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise ValueError(f"{self._where()}: columns {missing} are missing")
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns)

    def record(self, partitions: Sequence[str] | None = None) -> dict[str, Any]:
        """What a run directory records about this table (``tables.json``)."""
        m = self.manifest
        return {
            "version": m.version,
            "committed_at": m.committed_at,
            "rows": m.row_count,
            "partitions_read": sorted(partitions) if partitions is not None else sorted(m.partitions),
        }


def _manifest(root: str, table: str, version: int | None) -> Manifest:
    fs, path = filesystem(root)
    delta_root = root.rstrip("/") if "://" in root and not root.startswith("file://") else path
    try:
        return read_manifest(delta_root, table, version)
    except SnapshotError as exc:
        raise FileNotFoundError(str(exc)) from None


def open_table(root: str, contract: TableContract, version: int | None = None) -> TableSnapshot:
    """The committed (or a given) version of ``contract``'s table under warehouse ``root``,
    its schema checked against the contract.

    ``FileNotFoundError`` (one line) when the table or the version is not there; ``ValueError``
    naming the version and the column when the table breaks its contract.
    """
    if not isinstance(contract, TableContract):
        raise TypeError(f"open_table needs a table contract (features.*), got {contract!r}")
    _, path = filesystem(root)
    snap = TableSnapshot(path, _manifest(root, contract.name, version), contract)
    files = snap.files()
    if files:  # the first file now, so a broken table fails before training; every file as it is read
        fs, _ = filesystem(root)
        snap.check_file(pq.read_schema(files[0], filesystem=fs))
    return snap


def snapshot(root: str, table: str | TableContract, version: int | None = None) -> TableSnapshot:
    """The committed (or a given) version of ``table`` under warehouse ``root``.

    With a contract this is :func:`open_table`; with a table name it only resolves the version
    (the snapshot cannot be read). ``FileNotFoundError`` (one line) when the table or the
    version is not there.
    """
    if isinstance(table, TableContract):
        return open_table(root, table, version)
    _, path = filesystem(root)
    return TableSnapshot(path, _manifest(root, table, version))


def iter_batches(
    root: str,
    contract: TableContract,
    columns: Sequence[str] | None = None,
    version: int | None = None,
    batch_rows: int = 65_536,
    partitions: Sequence[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a committed table in record batches (bounded memory), schema-checked against
    ``contract``; ``columns``: every column of the version when ``None``."""
    snap = open_table(root, contract, version)
    yield from snap.batches(snap.columns if columns is None else columns, partitions, batch_rows)


def partitions_between(snap: TableSnapshot, first: dt.date, end: dt.date) -> list[str]:
    """Partition keys (ISO dates) of a daily table in ``[first, end)`` (:meth:`TableSnapshot.partitions_between`)."""
    return snap.partitions_between(first, end)


def stream_table(
    snap: TableSnapshot, columns: Sequence[str], partitions: Sequence[str] | None = None, batch_rows: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` from the given partitions (:meth:`TableSnapshot.batches`)."""
    return snap.batches(columns, partitions, batch_rows)


def table_record(snap: TableSnapshot, partitions: Sequence[str] | None = None) -> dict[str, Any]:
    """What a run directory records about a table it read (:meth:`TableSnapshot.record`)."""
    return snap.record(partitions)
